# Each target sets up what it needs: a fresh machine only needs python3 (3.11+).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The local data mirror, when present beside the checkout; otherwise nnstudy downloads.
NNSTUDY_DATA_DIR ?= $(wildcard ../shared/datasets)
DATA_ARG := $(if $(NNSTUDY_DATA_DIR),--data-dir $(NNSTUDY_DATA_DIR),)
PYTEST_ARGS ?=

.PHONY: install quick sample full test test-fast clean-cache service-up service-down

$(BIN)/nnstudy: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/nnstudy  ## create .venv and install nnstudy with its test tools

quick: install  ## the whole study on small subsets (~1 minute): reports/quick/report.md
	$(BIN)/nnstudy run --profile quick $(DATA_ARG)

sample: install  ## the full published grid on all local data
	$(BIN)/nnstudy run --profile sample $(DATA_ARG)

full: install  ## the published study on full MNIST (downloads it if needed)
	$(BIN)/nnstudy run --profile full $(DATA_ARG)

test: install  ## the whole test suite
	NNSTUDY_DATA_DIR=$(NNSTUDY_DATA_DIR) $(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: install  ## tests that train no model and run no flow
	NNSTUDY_DATA_DIR=$(NNSTUDY_DATA_DIR) $(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

service-up: install  ## local Prefect server (127.0.0.1:4200), work pool, deployments and a worker
	$(BIN)/python scripts/service.py up

service-down:  ## stop the worker and the server that service-up started (by their PIDs)
	$(BIN)/python scripts/service.py down

clean-cache:  ## delete downloads, preprocessed caches and Prefect state (./data)
	rm -rf data
