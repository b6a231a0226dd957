#!/usr/bin/env python3
"""Build the agent-only wheel, `asg-bluegreen-agent`: the `agent` package and nothing else (audit F2).

The project's own wheel (`asg-bluegreen`) also carries deployer/ and localcloud/, which have no business on an
instance. This one holds only agent/, with the `bluegreen-agent` entry point, the project's version and its
install_requires from setup.cfg, less boto3: the agent imports botocore alone (agent/cli.py), so boto3 and
s3transfer stay off the AMI.

    ami/build-agent-wheel.py OUTDIR          # writes OUTDIR/asg_bluegreen_agent-<version>-py3-none-any.whl
    ami/build-agent-wheel.py --print-requires  # the requirements, one a line (ami/lock.sh compiles them)
"""

import configparser
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME = "asg-bluegreen-agent"  # agent/contract.py AGENT_DIST_NAME: `bluegreen-agent --version` reads it
NOT_FOR_THE_AGENT = {"boto3"}


def _name(requirement):
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].strip().lower()


def project():
    parser = configparser.ConfigParser()
    parser.read(os.path.join(ROOT, "setup.cfg"))
    requires = [line.strip() for line in parser.get("options", "install_requires").splitlines() if line.strip()]
    return parser.get("metadata", "version"), [r for r in requires if _name(r) not in NOT_FOR_THE_AGENT]


PYPROJECT = """[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "{name}"
version = "{version}"
description = "bluegreen-agent: the on-instance agent of asg-bluegreen, alone"
requires-python = ">=3.9"
dependencies = [{dependencies}]

[project.scripts]
bluegreen-agent = "agent.cli:main"

[tool.setuptools]
packages = ["agent"]
"""


def build(outdir):
    version, requires = project()
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(os.path.join(ROOT, "agent"), os.path.join(tmp, "agent"),
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        with open(os.path.join(tmp, "pyproject.toml"), "w") as f:
            f.write(PYPROJECT.format(name=NAME, version=version,
                                     dependencies=", ".join(f'"{r}"' for r in requires)))
        # A fixed timestamp: the same sources give the same wheel, so its hash says what is in it.
        env = dict(os.environ, SOURCE_DATE_EPOCH=os.environ.get("SOURCE_DATE_EPOCH", "315532800"))
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", outdir, tmp],
                       check=True, env=env)
    wheel = f"{NAME.replace('-', '_')}-{version}-py3-none-any.whl"
    if not os.path.isfile(os.path.join(outdir, wheel)):
        sys.exit(f"build-agent-wheel: {wheel} was not built")
    print(os.path.join(outdir, wheel))


def main(argv):
    if argv == ["--print-requires"]:
        print("\n".join(project()[1]))
    elif len(argv) == 1 and not argv[0].startswith("-"):
        os.makedirs(argv[0], exist_ok=True)
        build(os.path.abspath(argv[0]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
