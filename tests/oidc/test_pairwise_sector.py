"""Pairwise subjects per shop by default; a verified sector_identifier_uri shares one (issue 12).

On main at 079fbc4 two shops whose redirect URIs share a host got the same ``sub``, and
``sector_identifier_uri`` was never fetched.
"""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import ConfigError
from gateway.oidc import sectors
from gateway.oidc.clients import ShopRegistry
from gateway.oidc.pairwise import pairwise_subject
from gateway.oidc.sectors import SectorFetchError, verified_sector
from tests.conftest import DEFAULT_POLICY, Browser, exchange_code, query_of, sign_in
from tests.oidc.test_authorization_code_flow import decode_id_token

SECTOR = "https://platform.example/sectors/group-1.json"


def subject_at(client: Any, shop: Any) -> str:
    final, _, verifier = sign_in(Browser(client), shop)
    token = exchange_code(client, shop, query_of(final.headers["location"])["code"], verifier).json()
    return str(decode_id_token(client, token["id_token"])["sub"])


def test_two_shops_on_one_host_get_different_subjects(make_shop: Any, make_client: Any) -> None:
    shop_a = make_shop("shop-a", redirect_uris=["https://platform.example/a/cb"])
    shop_b = make_shop("shop-b", redirect_uris=["https://platform.example/b/cb"])
    client = make_client()
    assert subject_at(client, shop_a) != subject_at(client, shop_b)


@respx.mock
def test_shops_naming_one_verified_sector_share_a_subject(make_shop: Any, make_client: Any) -> None:
    respx.get(SECTOR).mock(return_value=httpx.Response(200, json=[
        "https://platform.example/a/cb", "https://platform.example/b/cb"]))
    shop_a = make_shop("shop-a", redirect_uris=["https://platform.example/a/cb"],
                       sector_identifier_uri=SECTOR)
    shop_b = make_shop("shop-b", redirect_uris=["https://platform.example/b/cb"],
                       sector_identifier_uri=SECTOR)
    make_shop("shop-c", redirect_uris=["https://platform.example/c/cb"])
    client = make_client()
    assert subject_at(client, shop_a) == subject_at(client, shop_b)


@pytest.mark.parametrize("answer, message", [
    (httpx.Response(200, json=["https://platform.example/a/cb"]), "does not list the redirect URIs"),
    (httpx.Response(200, text="<html>"), "is not JSON"),
    (httpx.Response(200, json={"redirect_uris": []}), "not a JSON array"),
    (httpx.Response(404), "cannot be fetched (HTTP 404)"),
    (httpx.Response(302, headers={"location": "https://evil.example/"}), "cannot be fetched (HTTP 302)"),
    (httpx.Response(200, content=b"[" + b'"x",' * 20_000 + b'"x"]'), "larger than"),
    (httpx.Response(200, content=iter([b"[", b'"x",' * 20_000, b'"x"]'])), "larger than"),  # chunked
    (httpx.Response(200, content=gzip.compress(b'["https://platform.example/b/cb"]'),
                    headers={"content-encoding": "gzip"}), "compressed"),
])
def test_an_unverifiable_sector_document_refuses_the_shop(tmp_path: Path, answer: httpx.Response,
                                                          message: str) -> None:
    with respx.mock:
        respx.get(SECTOR).mock(return_value=answer)
        with pytest.raises(ConfigError, match="shop shop-b") as error:
            verified_sector("shop-b", SECTOR, ["https://platform.example/b/cb"], tmp_path)
    assert message in str(error.value)


def test_a_plain_http_sector_uri_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must use https"):
        verified_sector("shop-b", "http://platform.example/s.json", ["https://platform.example/b/cb"],
                        tmp_path)


def test_a_slow_sector_document_is_cut_at_the_total_deadline(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    def trickle(_: httpx.Request) -> httpx.Response:
        def body() -> Any:
            for _ in range(50):
                import time

                time.sleep(0.05)
                yield b" "
        return httpx.Response(200, content=body())

    monkeypatch.setattr(sectors, "DEADLINE_SECONDS", 0.3)
    with respx.mock:
        respx.get(SECTOR).mock(side_effect=trickle)
        with pytest.raises(ConfigError, match=r"within 0\.3 s"):
            verified_sector("shop-b", SECTOR, ["https://platform.example/b/cb"], tmp_path)


def test_a_stalled_sector_server_is_cut_at_the_total_deadline(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """No byte at all (a stalled connect or headers that never come): the caller still
    stops waiting at the deadline, not after httpx's per-operation timeout."""
    def stall(_: httpx.Request) -> httpx.Response:
        time.sleep(2.0)
        return httpx.Response(200, json=["https://platform.example/b/cb"])

    monkeypatch.setattr(sectors, "DEADLINE_SECONDS", 0.3)
    with respx.mock:
        respx.get(SECTOR).mock(side_effect=stall)
        started = time.monotonic()
        with pytest.raises(ConfigError, match=r"within 0\.3 s"):
            verified_sector("shop-b", SECTOR, ["https://platform.example/b/cb"], tmp_path)
        assert time.monotonic() - started < 1.0


def test_a_verified_sector_survives_the_shops_host_being_down_at_restart(tmp_path: Path) -> None:
    uris = ["https://platform.example/b/cb"]
    with respx.mock:
        respx.get(SECTOR).mock(return_value=httpx.Response(200, text=json.dumps(uris)))
        assert verified_sector("shop-b", SECTOR, uris, tmp_path) == SECTOR

    def down(_: str) -> bytes:
        raise SectorFetchError("ConnectError")

    assert verified_sector("shop-b", SECTOR, uris, tmp_path, fetch=down) == SECTOR
    with pytest.raises(ConfigError, match="cannot be fetched"):  # a new redirect URI: verify again
        verified_sector("shop-b", SECTOR, [*uris, "https://platform.example/b/other"], tmp_path, fetch=down)


@given(st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=40))
def test_subjects_differ_between_sectors_and_repeat_within_one(one: str, other: str, person: str) -> None:
    secret = b"k" * 32
    assert pairwise_subject(secret, one, person) == pairwise_subject(secret, one, person)
    if one != other:
        assert pairwise_subject(secret, one, person) != pairwise_subject(secret, other, person)


def shop_file(policies_dir: Path, client_id: str, **fields: Any) -> None:
    config = {"client_id": client_id, "name": client_id, "policy": DEFAULT_POLICY, **fields}
    (policies_dir / "shops" / f"{client_id}.yaml").write_text(json.dumps(config))


def test_loading_refuses_a_shop_whose_sector_cannot_be_verified(policies_dir: Path,
                                                                tmp_path: Path) -> None:
    """Fail closed: no fallback to a shared sector, one line naming the file, shop and reason."""
    shop_file(policies_dir, "shop-b", redirect_uris=["https://platform.example/b/cb"],
              sector_identifier_uri=SECTOR)
    with respx.mock:
        respx.get(SECTOR).mock(return_value=httpx.Response(200, json=["https://platform.example/a/cb"]))
        with pytest.raises(ConfigError) as error:
            ShopRegistry.load(policies_dir, tmp_path / "keys", "ES256")
    message = str(error.value)
    assert "\n" not in message
    assert "shop-b.yaml" in message and "shop shop-b" in message
    assert "does not list the redirect URIs ['https://platform.example/b/cb']" in message


def test_policy_check_reports_an_unverifiable_sector_document(
        policies_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from gateway.cli import main

    shop_file(policies_dir, "shop-b", redirect_uris=["https://platform.example/b/cb"],
              sector_identifier_uri=SECTOR)
    monkeypatch.setenv("GATEWAY_POLICIES_DIR", str(policies_dir))
    monkeypatch.setenv("GATEWAY_KEYS_DIR", str(tmp_path / "keys"))
    with respx.mock:
        respx.get(SECTOR).mock(return_value=httpx.Response(404))
        result = CliRunner().invoke(main, ["policy", "check"])
    assert result.exit_code == 1, result.output
    assert "shop-b.yaml" in result.output and "cannot be fetched (HTTP 404)" in result.output


def test_redirect_uris_on_several_hosts_need_no_sector_document(policies_dir: Path,
                                                                tmp_path: Path) -> None:
    """The sector is the shop, not a host, so §8.1's reason for requiring one is gone."""
    shop_file(policies_dir, "shop-m", redirect_uris=["https://one.example/cb", "https://two.example/cb"])
    shop = ShopRegistry.load(policies_dir, tmp_path / "keys", "ES256").get("shop-m")
    assert shop is not None and shop.sector == "shop:shop-m"


def test_a_verified_sector_is_remembered_once_and_never_fails_the_load(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    uris = ["https://platform.example/b/cb"]
    writes: list[Path] = []

    def refuse(path: Path, _: bytes) -> None:
        writes.append(path)
        raise PermissionError("read-only keys")

    with respx.mock:
        respx.get(SECTOR).mock(return_value=httpx.Response(200, json=uris))
        assert verified_sector("shop-b", SECTOR, uris, tmp_path) == SECTOR
        remembered = tmp_path / "shops" / "shop-b.sector"
        before = remembered.read_bytes()
        monkeypatch.setattr(sectors, "write_private_file", refuse)
        assert verified_sector("shop-b", SECTOR, uris, tmp_path) == SECTOR  # unchanged: not rewritten
        assert writes == [] and remembered.read_bytes() == before
        remembered.unlink()
        assert verified_sector("shop-b", SECTOR, uris, tmp_path) == SECTOR  # cannot write: still loads
        assert writes == [remembered]
