"""The performance benchmark: the gateway side by side with node's oidc-provider.

``python -m bench`` starts both servers against the machine's Redis, drives the shop-facing
flows at several concurrency levels, counts Redis commands and round trips per request, and
writes ``bench/results/latest.md`` and ``latest.json``. ``python -m bench --profile FLOW``
records a py-spy flame graph of the gateway while one flow runs. See docs/performance.md.

The older single-purpose scripts (``vault_bench.py``, ``audit_bench.py``) stay runnable as
plain scripts; this package does not import them.
"""
