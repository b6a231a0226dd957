# `make test` and `make demo` do every setup step on a fresh Debian machine as root; `make unit` and
# `make lint` need only the virtualenv (python3 with venv).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
# What needs more than the virtualenv: the Docker engine, registry and compose (docker), the whole local
# fleet (e2e), a real HAProxy (haproxy), cloud-init or systemd-analyze (system_tools), a debootstrapped root
# baked by ami/bake.sh (bake). Markers: setup.cfg.
UNIT_MARKERS := not docker and not e2e and not haproxy and not system_tools and not bake

.PHONY: venv setup test test-py39 unit lint template demo bench clean

venv:
	scripts/venv-setup.sh

setup:
	scripts/host-setup.sh

test: setup
	scripts/run-tests.sh $(PYTEST_ARGS)
	scripts/test-agent-py39.sh -q

# The agent's test group again, against the agent installed under Python 3.9 where one exists.
test-py39: setup
	scripts/test-agent-py39.sh $(PYTEST_ARGS)

# The fast part alone: pure logic and the emulated AWS, on a machine with no Docker, HAProxy, cloud-init or
# systemd.
unit: venv
	$(PY) -m pytest -m "$(UNIT_MARKERS)" $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check agent deployer localcloud tests bench scripts
	# The agent runs on Amazon Linux 2023's Python 3.9.
	$(VENV)/bin/vermin --no-tips --violations -t=3.9- agent
	# The service's CloudFormation template: current with its sources, and cfn-lint clean.
	$(PY) scripts/render-template.py --check
	$(VENV)/bin/cfn-lint infra/cloudformation/service.yaml

# infra/cloudformation/service.yaml from service.src.yaml, iam/*.json and cloud-init/user-data.yaml.tmpl.
template: venv
	$(PY) scripts/render-template.py

demo: setup
	scripts/demo.sh

# Benchmarks print ratios measured in one run; figures are recorded in docs/benchmarks.md.
bench: setup
	scripts/with-infra.sh python bench/agent_overhead.py
	scripts/with-infra.sh python bench/flip.py
	scripts/with-infra.sh python bench/bake_rollback.py
	# At AWS's own timings: the local fleet in real time (about 20 minutes), then the emulator at 0.1.
	scripts/with-infra.sh python bench/rollback_time.py

clean:
	rm -rf $(VENV) .venv39 .infra .localcloud
