"""Fixtures for the OIDC tests: a real ``gateway serve --workers 2`` for the race tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.store import Store
from tests.conftest import TEST_MASTER_KEY, ShopHandle
from tests.live import free_port
from tests.oidc.races import LiveGateway, start_gateway


@pytest.fixture
def racing_gateway(make_shop: Callable[..., ShopHandle], store: Store, redis_url: str, keys_dir: Path,
                   policies_dir: Path, tmp_path: Path) -> Iterator[LiveGateway]:
    """``gateway serve --workers 2`` in demo mode on a free loopback port, with one shop
    (``shop-a``, client_secret_basic, the default test policy), the test's Redis key prefix
    (removed afterwards by the ``store`` fixture, after the processes are gone) and the
    session's sealed key ring."""
    shop = make_shop()
    gateway = start_gateway(
        port=free_port(), shop=shop, redis_url=redis_url, key_prefix=store.keys.prefix,
        keys_dir=keys_dir, policies_dir=policies_dir, data_dir=tmp_path / "data",
        master_key=TEST_MASTER_KEY, log_path=tmp_path / "gateway.log", workers=2)
    try:
        yield gateway
    finally:
        gateway.stop()
