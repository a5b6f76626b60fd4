# Two set-up commands on a fresh machine: `make demo` and `make test`. Every target creates
# .venv and installs the project on first use (and again when pyproject.toml changes).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo
DEMO_PEOPLE ?= 10000
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DO_NOT_TRACK ?= 1

.PHONY: demo test lint bench fmt clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/enrich synth --people $(DEMO_PEOPLE) --out $(DEMO_DIR) --seed 7
	$(BIN)/enrich keys init --config $(DEMO_DIR)/enrich.yaml
	$(BIN)/enrich run --config $(DEMO_DIR)/enrich.yaml

test: $(STAMP)
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python bench/identifiers.py
	$(BIN)/python bench/identity_quality.py
	$(BIN)/python bench/store.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) .mypy_cache .pytest_cache .ruff_cache
