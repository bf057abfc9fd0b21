"""Logs are JSON lines and never contain tokens, codes, secrets or profile values."""

from __future__ import annotations

import json
import logging

import pytest
from starlette.testclient import TestClient

from gateway.telemetry import JsonFormatter
from tests.conftest import Browser, ShopHandle, exchange_code, query_of, sign_in


def test_a_full_flow_logs_no_secret_or_profile_value(
    client: TestClient, shop: ShopHandle, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    final, params, verifier = sign_in(Browser(client), shop)
    code = query_of(final.headers["location"])["code"]
    token = exchange_code(client, shop, code, verifier).json()
    exchange_code(client, shop, code, verifier)  # a replay, which is logged
    client.get("/userinfo", headers={"Authorization": f"Bearer {token['access_token']}"})
    formatter = JsonFormatter()
    # httpx2 records belong to the test's own client (its URLs carry state and codes).
    lines = [formatter.format(r) for r in caplog.records if not r.name.startswith("httpx")]
    for line in lines:
        json.loads(line)
    text = "\n".join(lines)
    assert lines
    for secret in (code, verifier, token["access_token"], token["refresh_token"], token["id_token"],
                   shop.secret or "", params["state"], params["nonce"], "lilei@example.com",
                   "13812345678", "李雷"):
        assert secret not in text
