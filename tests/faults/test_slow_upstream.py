"""Slow upstream providers are contained (issue 13): real gateway process, real sockets.

A local threading ``http.server`` plays three broken OpenID providers: one whose discovery
document never comes (the connection is accepted and then nothing), one that trickles its
discovery document one byte every two seconds (so a per-read timeout never fires), and one
whose discovery is fine but whose token endpoint hangs (so the fifty callbacks are not one
shared fetch: the call limit and the circuit breaker take them). A real ``gateway serve``
process has all three configured, plus the demo provider. Fifty people sign in at each
broken provider at once, while the test measures, side by side:

- ``/healthz``;
- complete sign-ins through the demo provider (authorize → chooser → demo sign-in →
  consent → code → token) for another shop;
- ``/token`` (refresh grants) of that other shop;

and afterwards counts what the broken provider received: no call may still be open, and
none may be made, once the people have their answers.
"""

from __future__ import annotations

import json
import re
import secrets
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx2 as httpx
import pytest
import yaml

from gateway.oidc.clients import issue_client_secret
from tests.conftest import (
    DEFAULT_POLICY,
    REPO_POLICIES,
    Browser,
    ShopHandle,
    authorize_params,
    exchange_code,
    pkce_pair,
    query_of,
    sign_in,
)
from tests.live import ROOMY_RATE_LIMIT, free_port, gateway_free_environment, redis_for

pytestmark = pytest.mark.slow

GATEWAY = str(Path(sys.executable).with_name("gateway"))
DEADLINE = 3.0  # GATEWAY_UPSTREAM_DEADLINE for this gateway (and the old per-read timeout)
PEOPLE = 50
SLACK = 1.5  # what "the deadline and a little" allows beyond the deadline
CALL_LIMIT = 32  # GATEWAY_UPSTREAM_CONCURRENCY's default: calls in progress per provider
SHOP_REDIRECT = "https://shop.example/callback"


# -- the broken provider ------------------------------------------------------------------


@dataclass
class Calls:
    """What the broken provider saw: every request (path, when) and the connections open."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    seen: list[tuple[str, float]] = field(default_factory=list)
    open: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def count(self, prefix: str) -> int:
        with self.lock:
            return sum(1 for path, _ in self.seen if path.startswith(prefix))


def _peer_closed(sock: socket.socket, wait: float) -> bool:
    readable, _, _ = select.select([sock], [], [], wait)
    if not readable:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def _document(issuer: str) -> dict[str, str]:
    return {"issuer": issuer, "authorization_endpoint": f"{issuer}/authorize",
            "token_endpoint": f"{issuer}/token", "jwks_uri": f"{issuer}/jwks"}


class BrokenServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # fifty connections at once must all reach the handler

    def __init__(self, calls: Calls) -> None:
        self.calls = calls
        super().__init__(("127.0.0.1", 0), BrokenProvider)
        self.port = int(self.server_address[1])
        self.issuer = f"http://127.0.0.1:{self.port}"


class BrokenProvider(BaseHTTPRequestHandler):
    """/hang/…: nothing ever; /trickle/…: a byte every 2 s; /slowtoken/: discovery at once,
    a token endpoint that never answers."""

    server: BrokenServer

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        with self.server.calls.lock:
            self.server.calls.seen.append((self.path, time.monotonic()))
            self.server.calls.open += 1
        try:
            if self.path.startswith("/hang/"):
                self._hang()
            elif self.path.startswith("/trickle/"):
                self._trickle(f"{self.server.issuer}/trickle")
            elif self.path == "/slowtoken/.well-known/openid-configuration":
                body = json.dumps(_document(f"{self.server.issuer}/slowtoken")).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            else:
                self.send_error(404)
        finally:
            with self.server.calls.lock:
                self.server.calls.open -= 1
            self.close_connection = True

    def do_POST(self) -> None:
        with self.server.calls.lock:
            self.server.calls.seen.append((self.path, time.monotonic()))
            self.server.calls.open += 1
        try:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self._hang()  # the token endpoint: the code exchange never answers
        finally:
            with self.server.calls.lock:
                self.server.calls.open -= 1
            self.close_connection = True

    def _hang(self) -> None:
        # Accept, read the request, answer nothing until the gateway gives up.
        while not self.server.calls.stop.is_set() and not _peer_closed(self.connection, 0.1):
            pass

    def _trickle(self, trickle_issuer: str) -> None:
        body = json.dumps(_document(trickle_issuer)).encode()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.flush()
            for byte in body:  # one byte every 2 s: each read is quick, the whole is not
                if self.server.calls.stop.wait(2.0) or _peer_closed(self.connection, 0):
                    return
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
        except OSError:
            return  # the gateway hung up: that is what it should do


def broken_provider(calls: Calls) -> tuple[ThreadingHTTPServer, int]:
    server = BrokenServer(calls)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.port


# -- the gateway process -------------------------------------------------------------------


def write_shop(root: Path, client_id: str) -> ShopHandle:
    config = {"client_id": client_id, "name": f"Shop {client_id}", "redirect_uris": [SHOP_REDIRECT],
              "token_endpoint_auth_method": "client_secret_basic",
              "scopes": ["openid", "profile", "email", "phone"], "policy": DEFAULT_POLICY}
    (root / "policies" / "shops" / f"{client_id}.yaml").write_text(
        yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return ShopHandle(client_id, issue_client_secret(root / "keys", client_id), SHOP_REDIRECT)


@dataclass
class Gateway:
    url: str
    process: subprocess.Popen[bytes]
    log: Path


@pytest.fixture
def gateway(tmp_path: Path, redis_url: str) -> Iterator[Callable[[dict[str, str]], Gateway]]:
    started: list[Gateway] = []
    prefix = f"cgslow:{secrets.token_hex(4)}:"

    def start(extra_env: dict[str, str]) -> Gateway:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = gateway_free_environment()
        env |= {"GATEWAY_ISSUER": url, "GATEWAY_REDIS_URL": redis_url,
                "GATEWAY_REDIS_KEY_PREFIX": prefix, "GATEWAY_DEMO": "true",
                "GATEWAY_KEYS_DIR": str(tmp_path / "keys"), "GATEWAY_DATA_DIR": str(tmp_path / "data"),
                "GATEWAY_POLICIES_DIR": str(tmp_path / "policies"), "GATEWAY_LOG_LEVEL": "WARNING",
                # hundreds of sign-in starts from loopback: the limit stays on, with room
                "GATEWAY_RATE_LIMIT_AUTHORIZE_PER_IP": ROOMY_RATE_LIMIT,
                **extra_env}
        log = tmp_path / "gateway.log"
        with open(log, "ab") as out:
            process = subprocess.Popen([GATEWAY, "serve", "--port", str(port)], env=env, stdout=out,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        running = Gateway(url, process, log)
        started.append(running)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"gateway exited: {log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    return running
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the gateway did not start")

    yield start
    for running in started:
        if running.process.poll() is None:
            running.process.terminate()  # our own child, by its handle
            try:
                running.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                running.process.kill()
                running.process.wait(timeout=5)
    client = redis_for(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


# -- measuring ---------------------------------------------------------------------------


@dataclass
class Timings:
    """Samples as (when it started, seconds it took); failures by name."""

    samples: list[tuple[float, float]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def add(self, started: float) -> None:
        self.samples.append((started, time.monotonic() - started))

    def within(self, begin: float, end: float) -> Timings:
        """The samples started while the people were waiting on the broken provider."""
        return Timings([(at, s) for at, s in self.samples if begin <= at <= end], self.failures)

    @property
    def values(self) -> list[float]:
        return [seconds for _, seconds in self.samples]

    def worst(self) -> float:
        return max(self.values, default=0.0)

    def summary(self) -> str:
        if not self.values:
            return f"none measured, failures={self.failures[:3]}"
        ordered = sorted(self.values)
        return (f"n={len(ordered)} median={ordered[len(ordered) // 2]:.3f}s "
                f"max={ordered[-1]:.3f}s failures={len(self.failures)}")


def watch_healthz(url: str, stop: threading.Event, out: Timings) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        while not stop.is_set():
            started = time.monotonic()
            try:
                reply = client.get("/healthz")
                if reply.status_code != 200:
                    out.failures.append(f"HTTP {reply.status_code}")
            except httpx.HTTPError as error:
                out.failures.append(type(error).__name__)
            out.add(started)
            stop.wait(0.1)


def demo_sign_in(url: str, shop: ShopHandle) -> dict[str, Any]:
    """One complete sign-in through the demo provider, and its code exchange: the tokens."""
    with httpx.Client(base_url=url, timeout=30) as client:
        final, _, verifier = sign_in(Browser(client, url), shop, scope="openid profile")
        code = query_of(final.headers["location"])["code"]
        tokens = exchange_code(client, shop, code, verifier)
        assert tokens.status_code == 200, tokens.text
        return dict(tokens.json())


def watch_demo_sign_ins(url: str, shop: ShopHandle, stop: threading.Event, whole: Timings) -> None:
    while not stop.is_set():
        started = time.monotonic()
        try:
            demo_sign_in(url, shop)
        except (httpx.HTTPError, AssertionError, KeyError) as error:
            whole.failures.append(type(error).__name__)
            continue
        whole.add(started)


def watch_token(url: str, shop: ShopHandle, refresh_token: str, stop: threading.Event,
                out: Timings) -> None:
    assert shop.secret is not None
    with httpx.Client(base_url=url, timeout=30) as client:
        while not stop.is_set():
            started = time.monotonic()
            try:
                reply = client.post("/token", auth=(shop.client_id, shop.secret), data={
                    "grant_type": "refresh_token", "refresh_token": refresh_token})
                out.add(started)
                if reply.status_code != 200:
                    out.failures.append(f"HTTP {reply.status_code}")
                    return
                refresh_token = reply.json()["refresh_token"]
            except httpx.HTTPError as error:
                out.add(started)
                out.failures.append(type(error).__name__)
            stop.wait(0.1)


@dataclass
class Answer:
    seconds: float
    status: int | None  # None: no answer before the client gave up
    text: str = ""


def chooser(client: httpx.Client, url: str, shop: ShopHandle) -> tuple[Browser, str]:
    """Authorize at the gateway and land on the provider chooser: the browser and the page."""
    browser = Browser(client, url)
    _, challenge = pkce_pair()
    page = browser.follow(f"/authorize?{urlencode(authorize_params(shop, challenge))}")
    assert page.status_code == 200, page.text
    return browser, page.text


def burst(url: str, shop: ShopHandle, provider_id: str, patience: float,
          at_callback: bool) -> tuple[list[Answer], float]:
    """PEOPLE people choose ``provider_id`` at the same moment (or, ``at_callback``, come
    back from it with a code at the same moment); each waits up to ``patience``. The
    answers, and the moment they clicked (after each had reached that point)."""
    released: list[float] = []
    gate = threading.Barrier(PEOPLE, action=lambda: released.append(time.monotonic()))
    answers: list[Answer] = []
    lock = threading.Lock()

    def person() -> None:
        with httpx.Client(base_url=url, timeout=httpx.Timeout(30, read=patience)) as client:
            browser, page = chooser(client, url, shop)
            link = re.search(rf'href="(/upstream/{provider_id}/start\?[^"]+)"', page)
            assert link, page
            target = link.group(1).replace("&amp;", "&")
            if at_callback:  # the provider's sign-in page is skipped: straight back with a code
                upstream = query_of(browser.request("GET", target).headers["location"])
                target = f"/upstream/{provider_id}/callback?" + urlencode(
                    {"code": secrets.token_urlsafe(8), "state": upstream["state"]})
            gate.wait(timeout=30)
            started = time.monotonic()
            try:
                reply = browser.request("GET", target)
                answer = Answer(time.monotonic() - started, reply.status_code, reply.text)
            except httpx.TimeoutException:
                answer = Answer(time.monotonic() - started, None)
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=person) for _ in range(PEOPLE)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=patience + 60)
    return answers, released[0] if released else time.monotonic()


def settle(calls: Calls, prefix: str, quiet: float) -> tuple[int, int, int]:
    """Requests to ``prefix`` so far, connections still open after up to 2 s, and requests
    that arrived during the ``quiet`` seconds after that."""
    for _ in range(20):
        with calls.lock:
            if calls.open == 0:
                break
        time.sleep(0.1)
    with calls.lock:
        still_open = calls.open
    before = calls.count(prefix)
    time.sleep(quiet)
    return before, still_open, calls.count(prefix) - before


def test_hanging_and_trickling_providers_delay_nobody_else(
    tmp_path: Path, gateway: Callable[[dict[str, str]], Gateway],
) -> None:
    (tmp_path / "policies" / "shops").mkdir(parents=True)
    shutil.copy(REPO_POLICIES / "catalogue.yaml", tmp_path / "policies" / "catalogue.yaml")
    (tmp_path / "keys").mkdir()
    people_shop = write_shop(tmp_path, "people-shop")
    other_shop = write_shop(tmp_path, "other-shop")
    calls = Calls()
    server, port = broken_provider(calls)
    base = f"http://127.0.0.1:{port}"
    secret = {"env": "SLOW_OIDC_SECRET"}
    providers = [
        {"kind": "oidc", "id": "hanging", "name": "Hanging", "issuer": f"{base}/hang",
         "client_id": "gateway", "client_secret": secret},
        {"kind": "oidc", "id": "trickling", "name": "Trickling", "issuer": f"{base}/trickle",
         "client_id": "gateway", "client_secret": secret},
        {"kind": "oidc", "id": "slowtoken", "name": "Slow token", "issuer": f"{base}/slowtoken",
         "client_id": "gateway", "client_secret": secret},
    ]
    names = {p["id"]: p["name"] for p in providers}
    report: list[str] = []
    try:
        running = gateway({
            "GATEWAY_PROVIDERS": json.dumps(providers), "SLOW_OIDC_SECRET": "not-a-real-secret",
            "GATEWAY_UPSTREAM_DEADLINE": str(DEADLINE), "GATEWAY_UPSTREAM_TIMEOUT": str(DEADLINE),
        })
        url = running.url
        for provider_id, prefix in (("hanging", "/hang/"), ("trickling", "/trickle/"),
                                    ("slowtoken", "/slowtoken/token")):
            tokens = demo_sign_in(url, other_shop)  # the other shop's refresh token
            health, whole, token = Timings(), Timings(), Timings()
            stop = threading.Event()
            watchers = [
                threading.Thread(target=watch_healthz, args=(url, stop, health)),
                threading.Thread(target=watch_demo_sign_ins, args=(url, other_shop, stop, whole)),
                threading.Thread(target=watch_token, args=(url, other_shop, tokens["refresh_token"],
                                                           stop, token)),
            ]
            for watcher in watchers:
                watcher.start()
            answers, chose = burst(url, people_shop, provider_id, patience=DEADLINE + 20,
                                   at_callback=provider_id == "slowtoken")
            finished = time.monotonic()
            stop.set()
            for watcher in watchers:
                watcher.join(timeout=60)
            made, still_open, after = settle(calls, prefix, quiet=2.0)
            answered = [a for a in answers if a.status is not None]
            slowest = max((a.seconds for a in answered), default=0.0)
            # While the fifty wait on the provider (from their click to the last answer):
            health, whole, token = (t.within(chose, finished) for t in (health, whole, token))
            report.append(
                f"{provider_id}: {len(answered)}/{PEOPLE} answered, slowest {slowest:.2f}s, "
                f"statuses {sorted({a.status for a in answers}, key=str)}, waiting window "
                f"{finished - chose:.1f}s; provider calls {made}, open afterwards {still_open}, "
                f"made afterwards {after}; healthz {health.summary()}; whole demo sign-ins "
                f"{whole.summary()}; token {token.summary()}")
            print(report[-1])
            assert len(answered) == PEOPLE, report[-1]
            assert all(a.status == 502 and "temporarily_unavailable" in a.text for a in answered), report[-1]
            assert slowest < DEADLINE + SLACK, report[-1]
            assert health.values and health.worst() < 1.0 and not health.failures, report[-1]
            assert whole.values and whole.worst() < 1.0 and not whole.failures, report[-1]
            assert token.values and token.worst() < 1.0 and not token.failures, report[-1]
            if provider_id == "slowtoken":  # code exchanges: at most the call limit at once
                assert 1 <= made <= CALL_LIMIT, report[-1]
            else:
                assert made <= 2, report[-1]  # one shared discovery fetch (a retry at most)
            assert still_open == 0 and after == 0, report[-1]

            # While the failure is remembered (discovery) or the circuit open (slowtoken),
            # the chooser says so and still offers the others.
            with httpx.Client(base_url=url, timeout=5) as client:
                _, page = chooser(client, url, people_shop)
            assert "/upstream/demo/start" in page and f"/upstream/{provider_id}/start" not in page
            assert re.search(rf"{names[provider_id]} \((temporarily unavailable|暂时不可用)\)", page)
    finally:
        calls.stop.set()
        server.shutdown()
        server.server_close()
        print("\n".join(report))
