# Two entry points: `make demo` (pretrain the embedded demo) and `make test` (the test suite).
# Each creates .venv on first use, installs the pinned lock files (requirements*.txt) and the package itself
# (`pip install -e .`, which also gives the `albert-jax` command); nothing else is needed on a fresh machine.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
# The tests need torch only as a PyTorch reference (run in a separate process). The CPU build is ~10x smaller
# than PyPI's default CUDA build: take it from PyTorch's index when that answers quickly, else PyPI's default.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_PIN := $(shell grep -E '^torch==' requirements-test.txt)

.PHONY: demo test describe clean-venv

$(VENV)/.runtime: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q --no-deps -e .
	touch $@

$(VENV)/.test: requirements-test.txt $(VENV)/.runtime
	$(PIP) install -q --timeout 15 --retries 0 --index-url $(TORCH_CPU_INDEX) "$(TORCH_PIN)" \
	  || echo "make: no CPU torch wheel from PyTorch's index here (unreachable, or it has no $(TORCH_PIN)); installing the default torch wheel from PyPI (the CUDA build, ~3.7 GB more)"
	$(PIP) install -q -r requirements-test.txt
	touch $@

demo: $(VENV)/.runtime
	$(PY) launch.py $(ARGS)

test: $(VENV)/.test
	$(PY) -m pytest -q tests $(ARGS)

describe: $(VENV)/.runtime
	$(VENV)/bin/albert-jax describe --gin_file=models/albert_base.gin

clean-venv:
	rm -rf $(VENV)
