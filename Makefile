# Two commands on a fresh machine with Python 3.11 and pip: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: demo test lint typecheck check bench clean

$(BIN)/gateway: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(BIN)/gateway

demo: $(BIN)/gateway
	$(BIN)/gateway demo

test: $(BIN)/gateway
	scripts/ensure-system-packages
	$(BIN)/python -m pytest

# The benchmark against node oidc-provider (docs/performance.md); BENCH_ARGS=--quick for a short run.
bench: $(BIN)/gateway
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m bench $(BENCH_ARGS)

lint: $(BIN)/gateway
	$(BIN)/ruff check gateway tests

typecheck: $(BIN)/gateway
	$(BIN)/mypy --strict gateway

check: lint typecheck test

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
