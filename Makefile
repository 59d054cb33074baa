# The two commands that matter: `make demo` and `make test`. Both set up a
# fresh machine first (a virtualenv in .venv; Debian's chromium and
# firefox-esr for the browser tests).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup demo test lint typecheck unit chromium firefox bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]' -e ./testkit
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/playcast demo

# Browser tests drive Debian's chromium (Playwright's own browser download
# does not work offline).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# Firefox ESR is driven over WebDriver BiDi, built into Firefox: no driver
# binary to install (tests/test_firefox.py, -m firefox).
firefox:
	@command -v firefox-esr >/dev/null 2>&1 || { \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq firefox-esr >/dev/null; }

lint: setup
	$(BIN)/ruff check src tests bench testkit
	$(BIN)/ruff format --check src tests bench testkit

typecheck: setup
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest -q tests/test_hub_rules.py tests/test_hub_timeouts.py tests/test_hub_properties.py

test: setup chromium firefox lint typecheck
	$(BIN)/pytest

# The full benchmarks and the long soak, on demand (minutes; judge them on a
# quiet machine). CI runs their short versions through tests/test_bench_quick.py.
bench: setup chromium firefox
	$(BIN)/python bench/signaling_load.py --rate 500
	$(BIN)/python bench/signaling_load.py --mode hold --connections 10000
	$(BIN)/python bench/worker_latency.py
	$(BIN)/python bench/browser_latency.py
	$(BIN)/python bench/android_latency.py
	$(BIN)/python bench/soak.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis test-artifacts
