# resnet-repro: every set-up step is a target here. `make help` lists them.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# Extra pip arguments, e.g. PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu".
PIP_ARGS ?=
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install demo lint test test-slow test-all test-cpu-kinds models clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(PIP_ARGS) -e '.[test]'
	touch $@

install: $(VENV)/.installed ## create .venv and install the package (editable) with test extras

demo: install ## train a short ResNet-20 on generated data on the CPU; prints the run dir and test error
	$(PY) -m resnet_repro train +exp=demo

models: install ## table of every named model: params and mult-adds beside the paper's
	$(PY) -m resnet_repro models

# The suite must pass on any 2-core machine: `test` stays under 10 minutes on the slowest one
# (experiments/results/cpu/test_suite.md: 156-263 s of tests so far), `test-all` under 20.
# Each prints its 10 slowest tests.
# Two pytest-xdist workers, one test file each at a time (a file's fixtures are built once).
XDIST ?= -n 2 --dist loadfile
lint: install ## the import contracts of pyproject.toml (layers only point down, no circles), then pyflakes (undefined or unused names)
	$(VENV)/bin/lint-imports
	$(VENV)/bin/python -m pyflakes resnet_repro tests experiments

test: lint ## the import contracts, then the test suite (every test not marked slow); prints the 10 slowest tests
	$(PY) -m pytest $(XDIST) -m "not slow" --durations=10 $(PYTEST_ARGS)

test-slow: install ## only the slow tests: real CIFAR-10 (JPEG copy), SIGKILL/SIGTERM resume, torchrun, concurrent bench
	$(PY) -m pytest $(XDIST) -m slow --durations=10 $(PYTEST_ARGS)

# The tests whose runs use trainer.amp=auto (the report, sweeps, pause/resume), once as on a CPU
# with native bf16 and once as on one without, whatever this CPU has (tests/conftest.py
# --cpu-bf16): an outcome that depends on the host's bf16 capability fails here on any machine.
CPU_KIND_TESTS ?= tests/test_report.py tests/test_sweeps.py tests/test_pause.py
test-cpu-kinds: install ## the auto-precision tests as on a CPU with and without native bf16
	$(PY) -m pytest $(XDIST) -m "not slow" $(PYTEST_ARGS) --cpu-bf16=native $(CPU_KIND_TESTS)
	$(PY) -m pytest $(XDIST) -m "not slow" $(PYTEST_ARGS) --cpu-bf16=none $(CPU_KIND_TESTS)

test-all: install ## every test, slow ones included
	$(PY) -m pytest $(XDIST) --durations=10 $(PYTEST_ARGS)

clean: ## remove the venv, caches and local runs
	rm -rf $(VENV) .pytest_cache runs outputs multirun *.egg-info
