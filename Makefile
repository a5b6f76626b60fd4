# Two set-up commands on a fresh machine: `make demo` and `make test`. Every target creates
# .venv and installs the project on first use (and again when pyproject.toml changes).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo
DEMO_PEOPLE ?= 10000
DEMO_PROVIDER_PORT ?= 8765
DEMO_SERVER_ARGS ?=
# Behaviour scores as of the date the synthetic export is from (enrich synth's default).
DEMO_AS_OF ?= 2026-11-01
# The provider soak of `make bench` (bench/soak.py): minutes against the local server.
SOAK_MINUTES ?= 10
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DO_NOT_TRACK ?= 1

.PHONY: demo test lint audit bench fmt clean browser

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# The demo enriches through the local provider server (enrichers/testing), started in the
# background for the run and stopped after it; what it received is in provider_received.jsonl.
demo: $(STAMP)
	$(BIN)/enrich synth --people $(DEMO_PEOPLE) --out $(DEMO_DIR) --seed 7 \
	  --provider-url http://127.0.0.1:$(DEMO_PROVIDER_PORT)
	$(BIN)/enrich keys init --config $(DEMO_DIR)/enrich.yaml
	@rm -f $(DEMO_DIR)/provider_server.url $(DEMO_DIR)/provider_received.jsonl
	@$(BIN)/python -m enrichers.testing.server --port $(DEMO_PROVIDER_PORT) --latency-ms 20 $(DEMO_SERVER_ARGS) \
	  --world $(DEMO_DIR)/data/world.jsonl --received $(DEMO_DIR)/provider_received.jsonl \
	  --url-file $(DEMO_DIR)/provider_server.url > $(DEMO_DIR)/provider_server.log 2>&1 & \
	server=$$!; trap 'kill $$server 2>/dev/null; wait $$server 2>/dev/null' EXIT; \
	for i in $$(seq 150); do \
	  test -s $(DEMO_DIR)/provider_server.url && break; \
	  kill -0 $$server 2>/dev/null || { cat $(DEMO_DIR)/provider_server.log >&2; exit 1; }; \
	  sleep 0.1; \
	done; \
	test -s $(DEMO_DIR)/provider_server.url || { echo "provider server did not start" >&2; exit 1; }; \
	echo "local provider server: $$(cat $(DEMO_DIR)/provider_server.url)" >&2; \
	$(BIN)/enrich run --config $(DEMO_DIR)/enrich.yaml --as-of $(DEMO_AS_OF)
	@# the compliance officer's view (to stderr: the run's folder stays the last line printed)
	@$(BIN)/enrich audit verify $(DEMO_DIR)/state/decisions --config $(DEMO_DIR)/enrich.yaml >&2
	@$(BIN)/enrich audit report $(DEMO_DIR)/state/decisions --config $(DEMO_DIR)/enrich.yaml \
	  --out $(DEMO_DIR)/audit-report.html >&2

# The report tests render HTML in headless Chromium (Debian's package); install it if missing.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	  || echo "chromium is not installed: browser tests are skipped (and fail under CI=true)" >&2

# Test files run on TEST_WORKERS processes (pytest-xdist), each file whole on one of them: its
# module fixtures (a synthetic shop, a provider server, a PostgreSQL cluster) are made once.
TEST_WORKERS ?= 2
test: $(STAMP) browser
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

AUDIT_VENV := $(VENV)/audit
# Known vulnerabilities in the installed packages. pip-audit gets a venv of its own (its own
# dependencies are not ours); .ci/audit.py fails on any known vulnerability, and says NOT
# AUDITED, naming the packages, when the advisory service cannot tell (set AUDIT_REQUIRED=1
# where it must be reachable: then that fails too).
audit: $(STAMP)
	@test -x $(AUDIT_VENV)/bin/pip-audit || { $(PYTHON) -m venv $(AUDIT_VENV) && \
	  $(AUDIT_VENV)/bin/python -m pip install --quiet 'pip-audit>=2.10,<3'; }
	PIPAPI_PYTHON_LOCATION=$(BIN)/python $(AUDIT_VENV)/bin/python .ci/audit.py

bench: $(STAMP)
	$(BIN)/python bench/identifiers.py
	$(BIN)/python bench/identity_quality.py
	$(BIN)/python bench/store.py
	$(BIN)/python bench/providers.py
	$(BIN)/python bench/behaviour.py
	$(BIN)/python bench/fusion_quality.py
	$(BIN)/python bench/fusion.py
	$(BIN)/python bench/audit.py
	$(BIN)/python bench/exports.py
	$(BIN)/python bench/nightly.py
	$(BIN)/python bench/soak.py --minutes $(SOAK_MINUTES)

clean:
	rm -rf $(VENV) $(DEMO_DIR) .mypy_cache .pytest_cache .ruff_cache
