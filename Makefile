# The two commands that matter: `make demo` and `make test`. Both set up a
# fresh machine first (a virtualenv in .venv installed from requirements.lock;
# Debian's chromium, firefox-esr and redis-server for the tests).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Exact versions and hashes of every package, build backend and pip included,
# for CPython 3.11 on linux x86_64. `make lock` refreshes it; pyproject.toml
# keeps the ranges a plain `pip install` honours.
LOCK := requirements.lock
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
SRC := src tests bench testkit tools

.PHONY: setup demo test lint typecheck unit properties system-deps chromium firefox bench lock \
	test-latest mutate clean

# From scratch whenever the lock or a pyproject changes, so the venv holds the
# lock and nothing else. Hash-checked, then the two local projects without
# their dependencies (already locked) and without build isolation (the locked
# setuptools builds them: no unpinned download at install time).
$(STAMP): $(LOCK) pyproject.toml testkit/pyproject.toml
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e . -e ./testkit
	$(BIN)/pip check
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/playcast demo

# Debian's browsers (Playwright's own browser download does not work offline),
# redis-server and nginx (the shipped proxy configs are tested with it), each
# installed only when its command is missing (nginx lives in /usr/sbin, which
# a user's PATH may leave out).
SYSTEM_DEPS := chromium firefox-esr redis-server nginx
system-deps:
	@missing=""; for cmd in $(SYSTEM_DEPS); do \
		command -v $$cmd >/dev/null 2>&1 || [ -x /usr/sbin/$$cmd ] || missing="$$missing $$cmd"; done; \
	if [ -n "$$missing" ]; then \
		echo "apt-get install$$missing"; \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

chromium: system-deps

# Firefox ESR is driven over WebDriver BiDi, built into Firefox: no driver
# binary to install (tests/test_firefox.py, -m firefox).
firefox: system-deps

lint: setup
	$(BIN)/ruff check $(SRC)
	$(BIN)/ruff format --check $(SRC)
	$(BIN)/lint-imports

typecheck: setup
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest -q tests/test_hub_rules.py tests/test_hub_timeouts.py tests/test_hub_properties.py

# The property tests' random search, 100 times deeper than in make test
# (about 8 minutes, and 4-6 more for the shared state's differential test on
# a real redis-server): how the cluster model's rare interleavings are found,
# and any rule the two shared-state implementations keep differently.
properties: setup
	PLAYCAST_EXAMPLES_SCALE=100 $(BIN)/pytest -q --timeout 1800 tests/test_hub_properties.py \
		tests/test_cluster_properties.py tests/test_shared_differential.py

# pytest's exit 5 means it collected no test: for this project that is a
# broken selection or collection, so it fails loudly like any other.
test: setup system-deps lint typecheck
	@$(BIN)/pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; \
	exit $$rc

# The full benchmarks and the long soak, on demand (minutes; judge them on a
# quiet machine). CI runs their short versions through tests/test_bench_quick.py.
bench: setup system-deps
	$(BIN)/python bench/signaling_load.py --rate 500
	$(BIN)/python bench/signaling_load.py --closed 64
	$(BIN)/python bench/signaling_load.py --mode hold --connections 19980 --procs 2
	$(BIN)/python bench/cluster_load.py --rounds 5
	$(BIN)/python bench/timer_jitter.py
	$(BIN)/python bench/worker_latency.py
	$(BIN)/python bench/browser_latency.py
	$(BIN)/python bench/android_latency.py
	$(BIN)/python bench/resume_latency.py
	$(BIN)/python bench/soak.py
	$(BIN)/python bench/soak.py --cluster 3

# Refresh the lock on purpose: new or changed requirements in pyproject.toml
# (and its build-system.requires) resolved with the fewest changes to existing
# pins; `make lock UPGRADE=1` moves every package to its newest allowed version.
# uv only resolves here (in its own venv); installing stays plain pip.
UV_VERSION := 0.13.9
TOOLS := .venv-tools
$(TOOLS)/bin/uv:
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet uv==$(UV_VERSION)

lock: $(TOOLS)/bin/uv
	{ $(PYTHON) -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], sep="\n")'; \
	  echo pip; } | \
	$(TOOLS)/bin/uv pip compile pyproject.toml - --extra dev --generate-hashes --no-strip-markers \
		--python-version 3.11 --python-platform x86_64-manylinux_2_28 \
		--custom-compile-command 'make lock' $(if $(UPGRADE),--upgrade) --quiet -o $(LOCK)

# Drift check, not in CI: a throwaway venv with the newest versions that
# pyproject.toml allows, then lint, types and the fast tests (ALL=1: every
# test). Red here while `make test` is green means a new release breaks us.
LATEST := .venv-latest
FAST_TESTS := -m "not browser" --ignore=tests/test_soak_ci.py --ignore=tests/test_bench_quick.py
test-latest: system-deps
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/pip install --quiet --no-cache-dir --upgrade pip setuptools
	$(LATEST)/bin/pip install --quiet --no-cache-dir --upgrade --upgrade-strategy eager \
		-e '.[dev]' -e ./testkit
	@$(LATEST)/bin/python tools/lockdiff.py $(LOCK)
	$(LATEST)/bin/ruff check --no-cache $(SRC)
	$(LATEST)/bin/ruff format --no-cache --check $(SRC)
	$(LATEST)/bin/mypy --cache-dir $(LATEST)/.mypy_cache
	$(LATEST)/bin/pytest -p no:cacheprovider $(if $(ALL),,$(FAST_TESTS))

# Mutation testing of the signaling core with the hub unit tests (configured
# in pyproject.toml, [tool.mutmut]); minutes, not in CI. Prints the score and
# every surviving mutant; `.venv/bin/mutmut show NAME` shows one's diff.
mutate: setup
	rm -rf mutants
	$(BIN)/mutmut run --max-children $(shell nproc)
	$(BIN)/python tools/mutation_summary.py

clean:
	rm -rf $(VENV) $(TOOLS) $(LATEST) mutants .mypy_cache .ruff_cache .pytest_cache \
		.hypothesis test-artifacts
