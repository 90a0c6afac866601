# The two commands of the quick start: `make run` and `make test`. Both build .venv from nothing.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run test install install-test lint format bench clean compose-tool chromium timescaledb haproxy

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamps reinstall when the project metadata changes; installs are editable, so code edits
# need no reinstall.
# The demo page's chart library comes from the npm registry, pinned and hash-checked
# (api/chart_library.py), and is served by kisray itself.
$(VENV)/.installed-run: pyproject.toml api/chart_library.py | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	$(BIN)/python -m api.chart_library
	touch $@

$(VENV)/.installed-test: pyproject.toml api/chart_library.py | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m api.chart_library
	touch $@ $(VENV)/.installed-run

install: $(VENV)/.installed-run
install-test: $(VENV)/.installed-test

run: install
	$(BIN)/kisray up

lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install-test
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# tests/deploy validates the compose files with a real compose implementation (no Docker engine
# needed). Installed from Debian only when root with apt; otherwise those tests skip and say why.
compose-tool:
	@command -v docker-compose >/dev/null 2>&1 || docker compose version >/dev/null 2>&1 || \
	{ [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { apt-get install -y -qq docker-compose >/dev/null 2>&1 || \
	    { apt-get update -qq && apt-get install -y -qq docker-compose >/dev/null; }; }; } || \
	echo "note: no docker-compose; tests/deploy/test_compose.py will be skipped"

# tests/api/test_browser.py drives Debian's headless Chromium with playwright-python (never
# `playwright install`). Installed only when root with apt; otherwise that test skips and says why.
chromium:
	@command -v chromium >/dev/null 2>&1 || \
	{ [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { apt-get install -y -qq chromium >/dev/null 2>&1 || \
	    { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }; }; } || \
	echo "note: no chromium; tests/api/test_browser.py will be skipped"

# KISRAY_REPLICAS > 1 puts Debian's haproxy in front of the replicas (api/cli/balancer.py);
# tests/api/cli/test_replicas.py runs two. Installed only when root with apt; otherwise that
# test skips and says why.
haproxy:
	@command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || \
	{ [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { apt-get install -y -qq haproxy >/dev/null 2>&1 || \
	    { apt-get update -qq && apt-get install -y -qq haproxy >/dev/null; }; }; } || \
	echo "note: no haproxy; tests/api/cli/test_replicas.py will be skipped"

# The TimescaleDB tests start their own throwaway PostgreSQL 15 + TimescaleDB cluster
# (tests/timescale_server.py). Installed from the TimescaleDB 2.28.3 build in ../shared when root
# on x86_64 (install.sh adds Debian's postgresql-15 if it is missing; a second run changes
# nothing); otherwise those tests skip and say why.
TIMESCALEDB_DIR ?= ../shared/timescaledb
timescaledb:
	@if [ "$$(id -u)" = 0 ] && [ "$$(uname -m)" = x86_64 ] && [ -f $(TIMESCALEDB_DIR)/install.sh ]; then \
	  DEBIAN_FRONTEND=noninteractive bash $(TIMESCALEDB_DIR)/install.sh; \
	else echo "note: cannot install TimescaleDB here (needs root, x86_64 and $(TIMESCALEDB_DIR));" \
	  "the TimescaleDB tests will be skipped unless it is installed"; fi

test: lint compose-tool chromium timescaledb haproxy
	$(BIN)/python -m pytest -ra --durations=15

bench: install-test
	for script in bench/bench_*.py; do $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .hypothesis
