# `make test` and `make demo` do every setup step on a fresh Debian machine as root.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup test test-py39 unit lint demo bench clean

setup:
	scripts/host-setup.sh

test: setup
	scripts/run-tests.sh $(PYTEST_ARGS)
	scripts/test-agent-py39.sh -q

# The agent's test group again, against the agent installed under Python 3.9 where one exists.
test-py39: setup
	scripts/test-agent-py39.sh $(PYTEST_ARGS)

# The fast part alone: pure logic and the emulated AWS, no Docker.
unit: setup
	$(PY) -m pytest -m "not docker and not e2e" $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check agent deployer localcloud tests bench
	# The agent runs on Amazon Linux 2023's Python 3.9.
	$(VENV)/bin/vermin --no-tips --violations -t=3.9- agent

demo: setup
	scripts/demo.sh

# Benchmarks print ratios measured in one run; figures are recorded in docs/benchmarks.md.
bench: setup
	scripts/with-infra.sh python bench/agent_overhead.py
	scripts/with-infra.sh python bench/flip.py

clean:
	rm -rf $(VENV) .venv39 .infra .localcloud
