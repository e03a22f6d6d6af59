# Two commands on a fresh machine: `make demo` (main job on synthetic data) and `make test` (the test suite).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast test-wheel lint clean

# The stamp depends on the dependency list: a second `make test` installs nothing.
$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, so nothing that depends on it pulls a CUDA build
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/bmtl demo --output demo_output

test: $(STAMP)
	$(PY) -m pytest -q tests

# a regular (non-editable) install finds its presets and bundles: the wheel, installed apart, runs the demo
test-wheel: $(STAMP)
	.ci/wheel_check.sh

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" tests

lint: $(STAMP)
	$(PY) -m flake8 pipeline tests benchmarks

clean:
	rm -rf $(VENV) demo_output .pytest_cache
