"""`python -m tests.deployer.crashing STEP[:N] ARGS...`: the real `bluegreen ARGS` that SIGKILLs itself just before
the N-th (default first) step named STEP, as `kill -9` of a pipeline would at a step boundary.

The hook is injected here, from the tests, through `deployer.cli.Seams`: an installed `bluegreen` has no switch,
environment variable or flag that could kill a deploy.
"""

import logging
import os
import signal
import sys

from deployer import cli


def main():
    point, *argv = sys.argv[1:]
    name, _, nth = point.partition(":")
    seen = []

    def before_step(step):
        if step.name == name:
            seen.append(step)
            if len(seen) == int(nth or 1):
                logging.getLogger(__name__).warning("test hook: killing this process before step %s", name)
                os.kill(os.getpid(), signal.SIGKILL)

    return cli.main(argv, seams=cli.Seams(before_step=before_step))


if __name__ == "__main__":
    sys.exit(main())
