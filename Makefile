# Distillery: `make pipeline` and `make test` are the two quick-start commands.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)
export PATH := $(abspath $(BIN)):$(PATH)
PYTEST_ARGS ?=
# test files spread over the cores (a file's tests stay together: they share module fixtures)
PYTEST_WORKERS ?= auto
BENCH_ARGS ?=

.PHONY: setup browser pipeline flow test test-fast bench lint dev-up dev-down clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

pipeline: setup
	$(BIN)/distillery check
	$(BIN)/distillery repro

# Headless Chromium (Debian's package) for the offline Data Docs test; where it cannot be
# installed (not root, no apt) that test is skipped and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { apt-get install -y -qq chromium >/dev/null 2>&1 || \
	    { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null 2>&1; }; }; } || \
	  echo "note: chromium is not installed; the Data Docs browser test will be skipped"

test: setup browser
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) --dist loadfile -m "not slow" $(PYTEST_ARGS)

flow: setup
	$(BIN)/distillery run

bench: setup
	$(BIN)/python -m bench.run $(BENCH_ARGS)
	$(BIN)/python -m bench.widths
	$(BIN)/python -m bench.workload

lint: setup
	$(BIN)/ruff check components flows tests bench

dev-up: setup
	infra/dev-servers.sh start

dev-down:
	infra/dev-servers.sh stop

clean:
	rm -rf $(VENV) .pytest_cache
