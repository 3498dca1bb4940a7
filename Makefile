# Two entry points: `make demo` (pretrain the embedded demo) and `make test` (the test suite).
# Each creates .venv on first use and installs the pinned requirements into it.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test describe clean-venv

$(VENV)/.runtime: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

$(VENV)/.test: requirements-test.txt $(VENV)/.runtime
	$(PY) -m pip install -q -r requirements-test.txt
	touch $@

demo: $(VENV)/.runtime
	$(PY) launch.py $(ARGS)

test: $(VENV)/.test
	$(PY) -m pytest -q tests $(ARGS)

describe: $(VENV)/.runtime
	$(PY) launch.py --gin_file=experiments/models/albert_base.gin --describe

clean-venv:
	rm -rf $(VENV)
