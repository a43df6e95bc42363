# nasjax: every target sets itself up (make install creates .venv/ and installs into it).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SEARCH_DEFAULTS := --space nb201 --strategy rea --dataset mnist1d --out runs/mnist1d_rea
ARGS ?=
PYTEST_ARGS ?=

.PHONY: install search test test-fast lint format bench clean

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

search: install  ## the main job: REA on NB201 over MNIST-1D (ARGS="..." adds CLI flags)
	$(PY) -m nasjax search $(SEARCH_DEFAULTS) $(ARGS)

test: install  ## the whole test suite, slow end-to-end tests included
	$(PY) -m pytest -q -n 2 --dist loadgroup $(PYTEST_ARGS)

test-fast: install  ## skip the slow end-to-end tests
	$(PY) -m pytest -q -n 2 --dist loadgroup -m "not slow" $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
