# Two commands on a fresh machine with Python 3.11 and pip: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: demo test test-cluster lint typecheck check bench clean lock audit

# The versions in requirements.lock, the ones CI tests and audits (docs/operations.md).
$(BIN)/gateway: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]' -c requirements.lock
	touch $(BIN)/gateway

demo: $(BIN)/gateway
	$(BIN)/gateway demo

# The whole suite, then its fast tests again against a Redis Cluster the run starts itself
# (3 primaries + 3 replicas, tests/conftest.py): a script or transaction across two slots
# fails there loudly (CROSSSLOT).
test: $(BIN)/gateway
	scripts/ensure-system-packages
	$(BIN)/python -m pytest
	$(MAKE) test-cluster

test-cluster: $(BIN)/gateway
	GATEWAY_TEST_REDIS_CLUSTER=1 $(BIN)/python -m pytest -m 'not slow' -q

# The benchmark against node oidc-provider (docs/performance.md); BENCH_ARGS=--quick for a short run.
bench: $(BIN)/gateway
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m bench $(BENCH_ARGS)

lint: $(BIN)/gateway
	$(BIN)/ruff check gateway tests

typecheck: $(BIN)/gateway
	$(BIN)/mypy --strict gateway

check: lint typecheck test

# Refresh requirements.lock: the newest versions pyproject.toml allows, resolved in a fresh
# virtualenv (then `make .venv/bin/gateway` installs them here).
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet --upgrade pip
	.lock-venv/bin/pip install --quiet -e '.[dev]'
	{ echo "# Every package that \`pip install -e '.[dev]'\` installs, pinned: what CI installs (-c) and audits"; \
	  echo "# (scripts/audit-dependencies). Written by \`make lock\`; do not edit by hand (docs/operations.md)."; \
	  .lock-venv/bin/pip freeze --exclude-editable; } > requirements.lock.new
	mv requirements.lock.new requirements.lock
	rm -rf .lock-venv

# Known vulnerabilities in requirements.lock (pip-audit, PyPI's data); CI runs this.
audit: $(BIN)/gateway
	$(BIN)/python scripts/audit-dependencies

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
