# Front door: `make run` and `make test` work on a fresh clone.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint clean browser venv bench

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[postgres,dev]'
	touch $(STAMP)

venv: $(STAMP)

## Ingest seeds/ into the SQLite store named in config.yaml, then serve at the configured baseURL.
run: $(STAMP)
	$(BIN)/oaiserver ingest seeds
	$(BIN)/oaiserver serve

## Browser tests drive Debian's Chromium; install it where it is missing (needs root and apt).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { echo "installing chromium and chromium-driver for the browser tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }

## Run the whole test suite (PostgreSQL tests run when CI is set or OAI_TEST_PG_URL is given).
test: $(STAMP) browser
	$(BIN)/pytest

## Benchmarks (scripts that print figures and write JSON; N=100000 by default): the server, the harvester, slow clients.
N ?= 100000
bench: $(STAMP)
	$(BIN)/python bench/bench.py --records $(N)
	$(BIN)/python bench/slowclients.py

lint: $(STAMP)
	$(BIN)/ruff check oaiserver harvester tests
	$(BIN)/ruff format --check oaiserver harvester tests
	$(BIN)/mypy oaiserver harvester

clean:
	rm -rf $(VENV) data .pytest_cache .hypothesis
