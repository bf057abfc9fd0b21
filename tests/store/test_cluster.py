"""Redis Cluster mode (issue 22) against a real cluster of three primaries and three replicas
(tests/redis_server.py): walks that visit every primary, a failover of the primary holding a
person's slot under load, and a slot resharded under load. The rest of the suite runs
against a cluster with GATEWAY_TEST_REDIS_CLUSTER=1 (`make test-cluster`)."""

from __future__ import annotations

import secrets
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx2 as httpx
import pytest
from click.testing import CliRunner

from gateway.store import Store
from gateway.store.connection import cluster_client
from gateway.store.slots import person_slot
from tests.conftest import TEST_MASTER_KEY, ShopHandle
from tests.live import free_port
from tests.oidc.races import LiveGateway, start_gateway
from tests.redis_server import REDIS_CLI, ClusterGroup

pytestmark = [pytest.mark.slow, pytest.mark.own_redis]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ClusterGroup]:
    group = ClusterGroup(tmp_path / "cluster").start()
    yield group
    group.stop()


@pytest.fixture
def cluster_store(cluster: ClusterGroup) -> Iterator[Store]:
    store = Store(cluster_client(cluster.seed_url), f"cgtest:{secrets.token_hex(6)}:")
    yield store
    store.close()


def test_a_walk_visits_every_primary_and_resumes_from_its_cursor(cluster_store: Store) -> None:
    keys = cluster_store.keys
    people = [secrets.token_hex(8) for _ in range(300)]
    for person in people:
        cluster_store.redis.set(keys.vault_data_key(person), b"wrapped")
    slots_by_node = {cluster_store.redis.get_node_from_key(keys.vault_data_key(p)).name  # type: ignore[attr-defined]
                     for p in people}
    assert len(slots_by_node) == 3  # the people are spread over all three primaries

    def walk(cursor: int, steps: int | None = None) -> tuple[int, set[str]]:
        found: set[str] = set()
        while True:
            cursor, names = cluster_store.scan_step(cursor, keys.vault_data_key_pattern(), 7)
            found |= {n.decode() for n in names}
            if steps is not None:
                steps -= 1
            if cursor == 0 or steps == 0:
                return cursor, found

    assert walk(0)[1] == {keys.vault_data_key(p) for p in people}
    halfway, first_part = walk(0, steps=2)  # one step covers one primary at most: not done yet
    assert halfway != 0
    _, rest = walk(halfway)
    assert first_part | rest == {keys.vault_data_key(p) for p in people}


@dataclass
class ClusterGateway:
    gateway: LiveGateway
    prefix: str
    env: dict[str, str]  # the settings it runs with (for the CLI)


@pytest.fixture
def cluster_gateway(cluster: ClusterGroup, make_shop: Callable[..., ShopHandle], keys_dir: Path,
                    policies_dir: Path, tmp_path: Path) -> Iterator[ClusterGateway]:
    """``gateway serve --workers 2`` in cluster mode, acknowledging consent changes and audit
    appends only once a replica has them (WAIT 1)."""
    port, prefix = free_port(), f"cgtest:{secrets.token_hex(6)}:"
    env = {"GATEWAY_REDIS_CLUSTER": "true", "GATEWAY_REDIS_WAIT_REPLICAS": "1",
           "GATEWAY_REDIS_WAIT_TIMEOUT_MS": "2000", "GATEWAY_REFRESH_REPEAT_SECONDS": "30"}
    gateway = start_gateway(
        port=port, shop=make_shop(), redis_url=cluster.seed_url, key_prefix=prefix, keys_dir=keys_dir,
        policies_dir=policies_dir, data_dir=tmp_path / "data", master_key=TEST_MASTER_KEY,
        log_path=tmp_path / "gateway.log", extra_env=env)
    env |= {"GATEWAY_ISSUER": gateway.origin, "GATEWAY_REDIS_URL": cluster.seed_url,
            "GATEWAY_REDIS_KEY_PREFIX": prefix, "GATEWAY_KEYS_DIR": str(keys_dir),
            "GATEWAY_POLICIES_DIR": str(policies_dir), "GATEWAY_DATA_DIR": str(tmp_path / "data"),
            "GATEWAY_MASTER_KEY": TEST_MASTER_KEY, "GATEWAY_DEMO": "true"}
    yield ClusterGateway(gateway, prefix, env)
    gateway.stop()


def only_person(store: Store, prefix: str) -> str:
    """The id of the one person signed in so far (their wrapped data key names it)."""
    names = [n.decode() for n in store.redis.scan_iter(match=f"{prefix}{{p:*}}:dek", count=1000)]
    assert len(names) == 1, names
    return names[0].split("{p:")[1].split("}")[0]


def audit_verifies(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> str:
    from gateway.cli import main

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(main, ["audit", "verify"])
    assert result.exit_code == 0, result.output
    return result.output


def no_500s(gateway: LiveGateway) -> list[str]:
    return [e for e in gateway.server_errors() if " 500 " in e or "Traceback" in e]


def test_a_failover_of_the_persons_primary_under_load_loses_nothing_acknowledged(
        cluster: ClusterGroup, cluster_gateway: ClusterGateway, monkeypatch: pytest.MonkeyPatch) -> None:
    """The primary serving a person's slot is killed right after their withdrawal was
    acknowledged, while other people refresh: the replica is promoted, the same gateway
    processes carry on, the withdrawal holds, no chain breaks and the audit log verifies."""
    gateway, prefix = cluster_gateway.gateway, cluster_gateway.prefix
    observer = Store(cluster_client(cluster.seed_url), prefix)
    try:
        browser = gateway.browser()
        withdrawn = gateway.tokens(browser)
        person = only_person(observer, prefix)
        others = [gateway.tokens(gateway.browser(), person=name)
                  for name in ("han-meimei", "alex-morgan", "han-meimei")]
        victim = cluster.node_for_slot(person_slot(person))
        with Load(gateway, others) as load:
            time.sleep(1)
            assert gateway.withdraw_shop(browser).status_code == 303  # acknowledged after WAIT 1
            victim.kill()
            assert cluster.wait_promoted(person_slot(person)) is not victim
            # The promoted replica has no replica of its own, so WAIT 1 fails (503) until the
            # old primary is back as its replica (docs/operations.md: N+1 replicas keep
            # writes going through the loss of one).
            cluster.rejoin(victim)
            load.keeps_going()
        load.check_nothing_broke()
        assert cluster.node_for_slot(person_slot(person)) is not victim  # the replica took over
        refused = gateway.refresh(withdrawn["refresh_token"])
        assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
        assert gateway.userinfo(withdrawn["access_token"]).status_code == 401
        assert no_500s(gateway) == []
        assert "ok" in audit_verifies(cluster_gateway.env, monkeypatch).lower()
    finally:
        observer.close()


def test_resharding_a_persons_slot_under_load_answers_nothing_but_retries(
        cluster: ClusterGroup, cluster_gateway: ClusterGateway, monkeypatch: pytest.MonkeyPatch) -> None:
    """``redis-cli --cluster reshard`` moves the slots up to a person's slot to another primary
    while everyone refreshes and reads userinfo: requests may be answered 503 (and then
    retried), never 500, no chain breaks, and the person's grant moves with its slot."""
    gateway, prefix = cluster_gateway.gateway, cluster_gateway.prefix
    observer = Store(cluster_client(cluster.seed_url), prefix)
    try:
        moving = gateway.tokens(gateway.browser())
        person = only_person(observer, prefix)
        slot = person_slot(person)
        source = cluster.node_for_slot(slot)
        target = next(node for node in cluster.primaries() if node is not source)
        first = min(start for start, end in cluster.slot_ranges(source))
        chains = [moving, *(gateway.tokens(gateway.browser(), person=name)
                            for name in ("han-meimei", "alex-morgan"))]
        with Load(gateway, chains) as load:
            time.sleep(1)
            subprocess.run([REDIS_CLI, "--cluster", "reshard", f"127.0.0.1:{source.port}",
                            "--cluster-from", cluster.node_id(source),
                            "--cluster-to", cluster.node_id(target),
                            "--cluster-slots", str(slot - first + 1), "--cluster-yes"],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
            load.keeps_going()
        load.check_nothing_broke()
        assert cluster.node_for_slot(slot).port == target.port
        assert no_500s(gateway) == []
        assert "ok" in audit_verifies(cluster_gateway.env, monkeypatch).lower()
    finally:
        observer.close()


class Load:
    """Threads that keep refresh-token chains and userinfo going, retrying a 503 with the same
    token: a 503 must mean nothing was used up, or the chain breaks (invalid_grant)."""

    def __init__(self, gateway: LiveGateway, chains: list[dict[str, str]]) -> None:
        self.gateway = gateway
        self.chains = chains
        self.stop = threading.Event()
        self.statuses: list[int] = []
        self.broken: list[str] = []
        self.rounds = [0] * len(chains)
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                        for i in range(len(chains))]

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)

    def keeps_going(self, rounds: int = 3, seconds: float = 30) -> None:
        """Every chain does ``rounds`` more rounds from now (after the fault, all work again)."""
        start, deadline = list(self.rounds), time.monotonic() + seconds
        def fewest() -> int:
            return min(now - then for now, then in zip(self.rounds, start, strict=True))

        while not self.broken and fewest() < rounds:
            assert time.monotonic() < deadline, (self.rounds, self.statuses[-20:])
            time.sleep(0.2)

    def check_nothing_broke(self) -> None:
        """No chain broke, and nothing was answered but 200 and (retried) 503."""
        assert not self.broken, self.broken
        assert set(self.statuses) <= {200, 503}, sorted(set(self.statuses))

    def _run(self, index: int) -> None:
        client = self.gateway.new_client()
        try:
            while not self.stop.is_set():
                refresh_token = self.chains[index]["refresh_token"]
                reply = self._until_answered(partial(self.gateway.refresh, refresh_token, client))
                if reply is None:
                    return
                if reply.status_code != 200:
                    self.broken.append(f"chain {index}: {reply.status_code} {reply.text[:200]}")
                    return
                self.chains[index] = reply.json()
                bearer = {"Authorization": f"Bearer {self.chains[index]['access_token']}"}
                info = self._until_answered(partial(client.get, "/userinfo", headers=bearer))
                if info is not None and info.status_code != 200:
                    self.broken.append(f"userinfo {index}: {info.status_code}")
                    return
                self.rounds[index] += 1
        finally:
            client.close()

    def _until_answered(self, call: Callable[[], httpx.Response]) -> httpx.Response | None:
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline:
            try:
                reply = call()
            except httpx.TransportError:  # the gateway stays up; a dropped connection is retried
                time.sleep(0.1)
                continue
            self.statuses.append(reply.status_code)
            if reply.status_code != 503:
                return reply
            time.sleep(0.1)
        self.broken.append("no answer but 503 for 45 s")
        return None
