# dinfer — two commands on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ANVIL := node_modules/.bin/anvil
PYTEST_ARGS ?=
# llama-cpp-python builds llama.cpp from source. Build it for a portable x86-64 baseline (AVX2/FMA/F16C) instead of
# -march=native: on CPUs with AVX-512/AMX (seen here: a Xeon with AMX_INT8) the native build of 0.3.36 segfaults
# while decoding SmolLM2's Q4_1 weights. Ignored on other architectures; override CMAKE_ARGS to tune for a box.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON

.PHONY: run test test-full install install-test lint bench clean devnet-down

## Runtime install: venv + package + pinned anvil from npm.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(ANVIL): package.json
	npm install --no-audit --no-fund --loglevel=error
	touch $@

install: $(VENV)/.installed $(ANVIL)

## Test install: runtime + test extras + system tools the e2e tests drive (nginx).
$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install-test: install $(VENV)/.installed-test
	@bash scripts/ensure-system-deps.sh
	@# Headless browser for the dashboard test (Debian `chromium`); without root/apt the test skips and says why.
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1 \
		&& echo "installing chromium (dashboard browser test)" \
		&& { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 \
		|| { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1; }; }; } \
		|| echo "chromium not installed: tests/e2e/test_dashboard_e2e.py's browser test will skip" >&2

run: install
	$(BIN)/dinfer devnet up

devnet-down: install
	$(BIN)/dinfer devnet down

test: install-test
	$(BIN)/ruff check src tests bench
	bash scripts/run-tests.sh $(PYTEST_ARGS)

test-full: install-test
	DINFER_TEST_FULL=1 bash scripts/run-tests.sh $(PYTEST_ARGS)

lint: install-test
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

bench: install-test
	$(BIN)/python -m bench.run_all

clean:
	rm -rf $(VENV) node_modules .pytest_cache .ruff_cache .devnet .cache
