"""The staff API: roles, bearer tokens, queries with cursors, streamed exports, proofs,
verification — and every query and export is itself audited."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient

from gateway.audit import AuditFilter, NoteVerifier, verify_proof
from gateway.audit.combined import COMBINED_FORMAT, verify_in_combined
from gateway.audit.shards import shard_origin
from gateway.audit.staff import new_staff_token
from tests.conftest import Browser, ShopHandle, exchange_code, query_of, sign_in


@pytest.fixture
def staff_client(shop: ShopHandle, make_client: Callable[..., TestClient]) -> tuple[TestClient, str, str]:
    auditor, auditor_digest = new_staff_token()
    admin, admin_digest = new_staff_token()
    client = make_client(staff=[{"id": "alice", "role": "auditor", "token_sha256": auditor_digest},
                                {"id": "bob", "role": "admin", "token_sha256": admin_digest}])
    for _ in range(2):
        final, _, verifier = sign_in(Browser(client), shop, scope="openid profile email phone")
        token = exchange_code(client, shop, query_of(final.headers["location"])["code"], verifier).json()
        client.get("/userinfo", headers={"Authorization": f"Bearer {token['access_token']}"})
    return client, auditor, admin


def persons(audit: Any) -> set[str]:
    return {item.event.person for item in audit.query.events(AuditFilter()) if item.event.person}


def get(client: TestClient, path: str, token: str | None, **params: Any) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.get(path, params=params, headers=headers)


def test_requests_without_a_valid_token_are_refused(staff_client: Any) -> None:
    client, _, _ = staff_client
    assert get(client, "/audit/api/events", None).status_code == 401
    assert get(client, "/audit/api/events", "cgs_wrong").status_code == 401
    assert client.get("/audit/api/events", headers={"Authorization": "Basic abc"}).status_code == 401


def test_query_by_action_and_field_with_cursor_pagination(staff_client: Any) -> None:
    client, auditor, _ = staff_client
    first = get(client, "/audit/api/events", auditor, action="userinfo_read", field="phone", limit=1)
    assert first.status_code == 200
    body = first.json()
    assert len(body["items"]) == 1 and body["next_cursor"] is not None
    second = get(client, "/audit/api/events", auditor, action="userinfo_read", field="phone", limit=1,
                 cursor=body["next_cursor"]).json()
    assert len(second["items"]) == 1 and second["items"][0]["index"] > body["items"][0]["index"]
    assert all("phone" in item["event"]["fields"] for item in body["items"] + second["items"])


def test_bad_filters_get_a_clear_error(staff_client: Any) -> None:
    client, auditor, _ = staff_client
    for params in ({"action": "nonsense"}, {"since": "yesterday"}, {"cursor": "-1"}, {"limit": "x"},
                   {"person": "*"}, {"shop": "Shop A"}, {"field": "Phone!"}):  # issue 14: were 500s
        reply = get(client, "/audit/api/events", auditor, **params)
        assert reply.status_code == 400 and reply.json()["error"] == "invalid_request"


def test_every_query_and_export_is_audited(staff_client: Any) -> None:
    client, auditor, _ = staff_client
    get(client, "/audit/api/events", auditor, action="sign_in")
    get(client, "/audit/api/export", auditor, format="csv", shop="shop-a")
    seen = get(client, "/audit/api/events", auditor, action="staff_query").json()["items"]
    exported = get(client, "/audit/api/events", auditor, action="staff_export").json()["items"]
    assert seen[0]["event"]["actor_type"] == "staff" and seen[0]["event"]["actor_id"] == "alice"
    assert exported[0]["event"]["shop"] == "shop-a"


def test_exports_stream_jsonl_and_csv(staff_client: Any) -> None:
    client, auditor, _ = staff_client
    jsonl = get(client, "/audit/api/export", auditor, format="jsonl", action="userinfo_read")
    assert jsonl.headers["content-type"].startswith("application/x-ndjson")
    rows = [json.loads(line) for line in jsonl.text.splitlines()]
    assert len(rows) == 2 and all(r["action"] == "userinfo_read" for r in rows)
    table = get(client, "/audit/api/export", auditor, format="csv", action="userinfo_read")
    records = list(csv.DictReader(io.StringIO(table.text)))
    assert len(records) == 2 and records[0]["shop"] == "shop-a"
    assert "lilei@example.com" not in jsonl.text + table.text


def test_only_admins_verify(staff_client: Any) -> None:
    client, auditor, admin = staff_client
    assert client.post("/audit/api/verify", headers={"Authorization": f"Bearer {auditor}"}).status_code == 403
    report = client.post("/audit/api/verify", headers={"Authorization": f"Bearer {admin}"}).json()
    assert report["ok"] is True and report["problem"] is None and report["by"] == "bob"
    latest = get(client, "/audit/api/checkpoint", auditor).json()
    assert latest["last_verification"]["ok"] is True


def test_a_proof_verifies_offline_with_the_published_key(staff_client: Any) -> None:
    client, auditor, _ = staff_client
    item = get(client, "/audit/api/events", auditor, action="userinfo_read").json()["items"][0]
    text = get(client, f"/audit/api/proof/{item['index']}", auditor).text
    key = get(client, "/audit/api/checkpoint", auditor).json()["verifier_key"]
    origin = key.split("+")[0]
    _, event = verify_proof(text, [NoteVerifier.from_string(key)], origin)
    assert event.model_dump(mode="json") == item["event"]
    assert get(client, "/audit/api/proof/999999", auditor).status_code == 404


def test_with_shards_queries_page_across_them_and_proofs_check_against_the_combined_note(
        shop: ShopHandle, make_client: Callable[..., TestClient]) -> None:
    auditor, digest = new_staff_token()
    client = make_client(audit_shards=3, staff=[{"id": "alice", "role": "auditor", "token_sha256": digest}])
    for person in ("li-lei", "han-meimei", "alex-morgan"):  # their events go to their shards
        final, _, verifier = sign_in(Browser(client), shop, person=person, scope="openid profile email phone")
        exchange_code(client, shop, query_of(final.headers["location"])["code"], verifier)
    audit = client.app.state.gateway.provider.audit  # type: ignore[attr-defined]
    before = {(s.log.shard, i) for s in audit.shards for i in range(s.log.size())}
    seen: list[tuple[int, int]] = []
    cursor: Any = "0"
    while cursor is not None:
        body = get(client, "/audit/api/events", auditor, limit=2, cursor=cursor).json()
        seen += [(item["shard"], item["index"]) for item in body["items"]]
        cursor = body["next_cursor"]
    assert len(seen) == len(set(seen)) and before <= set(seen)  # and the staff queries since
    assert {shard for shard, _ in before} == {0, *(audit.shard_of_person(p) for p in persons(audit))}
    assert get(client, "/audit/api/events", auditor, cursor="1.2").status_code == 400
    shard, index = max(seen)
    text = get(client, f"/audit/api/proof/{index}", auditor, shard=shard).text
    key = get(client, "/audit/api/checkpoint", auditor).json()["verifier_key"]
    verifiers = [NoteVerifier.from_string(key)]
    origin = key.split("+")[0]
    checkpoint, _ = verify_proof(text, verifiers, shard_origin(origin, shard))
    combined = get(client, "/audit/api/checkpoint", auditor).json()
    assert combined["checkpoint"].startswith(COMBINED_FORMAT)
    listed = verify_in_combined(checkpoint, combined["checkpoint"], verifiers, origin)
    assert listed.total_size == combined["size"]
