# Front door: `make run` and `make test` work on a fresh clone.
# `make run` installs what running needs (the runtime dependencies and the PostgreSQL driver);
# `make test`, `make lint` and `make bench` add the test and lint tools. Each has its own stamp, so
# `make run` then `make test` installs only what is missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# -qq: pip's errors only (its warnings about this machine's package indexes, and the build's
# notices, are noise on a first run). Modules are compiled as they are installed: compiled later, on first
# import, a dependency's SyntaxWarnings (Sickle has some) would be errors under the tests' -W error.
PIP := $(BIN)/pip install -qq
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: run demo test lint clean browser venv bench screenshots

$(RUN_STAMP): pyproject.toml
	@test -d $(VENV) || $(PY) -m venv $(VENV)
	@echo "installing oaiserver and its runtime dependencies into $(VENV)"
	@$(PIP) -e '.[postgres]'
	@touch $@

$(DEV_STAMP): $(RUN_STAMP)
	@echo "installing the test and lint tools into $(VENV)"
	@$(PIP) -e '.[postgres,dev]'
	@touch $@

## Everything: what running, testing, linting and benchmarking need.
venv: $(DEV_STAMP)

## Ingest the seeds folder of config.yaml (seeds/) into its SQLite store, then serve at the configured baseURL.
run: $(RUN_STAMP)
	$(BIN)/oaiserver ingest
	$(BIN)/oaiserver serve

## The seeds plus DEMO_RECORDS synthetic records ("[synthetic]" titles, set synthetic, 2% deleted), in the
## store of demo.yaml (data/demo.sqlite3, whatever OAI_STORAGE_URL says), served at http://127.0.0.1:5001/.
DEMO_RECORDS ?= 3000
demo: $(RUN_STAMP)
	OAI_STORAGE_URL= $(BIN)/oaiserver --config demo.yaml ingest
	OAI_STORAGE_URL= $(BIN)/oaiserver --config demo.yaml synthetic $(DEMO_RECORDS)
	OAI_STORAGE_URL= $(BIN)/oaiserver --config demo.yaml serve

## Browser tests drive Debian's Chromium and load axe-core (the accessibility checker, from the npm registry,
## pinned by tests/browser/package-lock.json) into its pages. Where Chromium or npm is missing, it is installed if
## we are root and apt-get works; otherwise the browser tests skip, saying why. With CI set, what cannot be had fails.
AXE := tests/browser/node_modules/axe-core/axe.min.js
browser: $(AXE)
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null && exit 0; \
	why="installing them needs root and apt-get"; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing chromium and chromium-driver for the browser tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null \
	    && exit 0; \
	  why="apt-get failed"; \
	fi; \
	if [ -n "$$CI" ]; then echo "chromium and chromedriver are missing ($$why); CI is set: failing" >&2; exit 1; fi; \
	echo "chromium and chromedriver are missing ($$why): the browser tests will be skipped"

$(AXE): $(wildcard tests/browser/package.json tests/browser/package-lock.json)
	@if ! command -v npm >/dev/null && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing npm for the browser tests' axe-core"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null; \
	fi; \
	if command -v npm >/dev/null && npm ci --prefix tests/browser --ignore-scripts --no-audit --no-fund --loglevel=error; then \
	  touch $@; exit 0; \
	fi; \
	if [ -n "$$CI" ]; then echo "axe-core could not be installed with npm; CI is set: failing" >&2; exit 1; fi; \
	echo "axe-core could not be installed with npm: the accessibility checks will be skipped"

## Run the whole test suite (PostgreSQL tests run when CI is set or OAI_TEST_PG_URL is given), on every
## core with pytest-xdist. loadgroup: tests are dealt out one at a time, except those marked
## xdist_group (modules whose module-scoped server, browser or export is costly to build), which share a
## process. `make test PYTEST_ARGS=-n0` runs the suite in one process; other pytest options go there too.
PYTEST_ARGS ?= -n auto --dist loadgroup
test: $(DEV_STAMP) browser
	$(BIN)/pytest $(PYTEST_ARGS)

## Benchmarks (scripts that print figures and write JSON; N=100000 by default): the server, the harvester, slow clients,
## and `harvester run` over a fleet of 200 partners on six hosts (and issue 17's 60) against its ideal and a Sickle loop.
N ?= 100000
bench: $(DEV_STAMP)
	$(BIN)/python bench/bench.py --records $(N)
	$(BIN)/python bench/slowclients.py
	$(BIN)/python bench/fleet_bench.py

## The README's screenshots (docs/*.png): the demo, with a partner harvested for real, served in a temporary
## folder and opened in headless Chromium (docs/screenshots.py says what each shows). DEMO_RECORDS as for demo.
## The demo's titles have Chinese words (北京): without a CJK font Chromium draws them as empty boxes.
screenshots: $(DEV_STAMP) browser
	@fc-list 2>/dev/null | grep -qi cjk && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing fonts-noto-cjk for the screenshots"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-noto-cjk >/dev/null && exit 0; \
	fi; \
	echo "no CJK font (fonts-noto-cjk): the screenshots will show Chinese words as boxes" >&2
	DEMO_RECORDS=$(DEMO_RECORDS) $(BIN)/python docs/screenshots.py

## The lint gate (CI runs it after the tests): ruff and mypy over all our Python, tests, benchmarks and docs scripts too.
LINTED := oaiserver harvester tests bench docs
lint: $(DEV_STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy $(LINTED)

clean:
	rm -rf $(VENV) data .pytest_cache .hypothesis tests/browser/node_modules
