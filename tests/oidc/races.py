"""Real gateway processes for the race tests: ``gateway serve --workers N`` on loopback.

The tests drive the gateway over HTTP only, as shops and people do, so they do not depend on
internal APIs. The gateway runs in demo mode (the simulated sign-in provider) against the
test's Redis and key prefix; its log goes to a file, and :meth:`LiveGateway.server_errors`
lists the requests that ended in a 5xx.

Liveness of a credential is judged as a shop would see it: userinfo answers 200 for an
access token, introspection says ``active``, a refresh token still refreshes.
"""

from __future__ import annotations

import html
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx2 as httpx

from tests.conftest import Browser, ShopHandle, exchange_code, query_of, sign_in
from tests.live import ROOMY_RATE_LIMIT, gateway_free_environment

STARTUP_TIMEOUT = 60.0
HTTP_TIMEOUT = 15.0


class Deadline:
    """A time budget for a whole test: ``check()`` fails the test once it is spent."""

    def __init__(self, seconds: float, what: str) -> None:
        self.seconds = seconds
        self.what = what
        self.started = time.monotonic()

    @property
    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.started)

    def check(self, progress: str = "") -> None:
        if self.left <= 0:
            raise AssertionError(f"{self.what} took longer than {self.seconds:.0f} s {progress}".rstrip())


@dataclass
class LiveGateway:
    """One running ``gateway serve`` process group and the shop it serves."""

    origin: str
    shop: ShopHandle
    log_path: Path
    process: subprocess.Popen[bytes]
    _local: threading.local = field(default_factory=threading.local)
    _clients: list[httpx.Client] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- HTTP clients ----------------------------------------------------------------

    def new_client(self) -> httpx.Client:
        client = httpx.Client(base_url=self.origin, follow_redirects=False, timeout=HTTP_TIMEOUT)
        with self._lock:
            self._clients.append(client)
        return client

    @property
    def http(self) -> httpx.Client:
        """A client of the calling thread's own (httpx clients are not shared across threads here)."""
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self.new_client()
        return client

    def browser(self) -> Browser:
        return Browser(self.new_client(), origin=self.origin)

    def close_clients(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()

    # -- what a shop does ------------------------------------------------------------

    @property
    def auth(self) -> tuple[str, str]:
        return (self.shop.client_id, self.shop.secret or "")

    def code(self, browser: Browser, person: str = "li-lei", **extra: str) -> tuple[str, str]:
        """Sign in (or, with a session and consent, just authorize): a fresh code and its verifier."""
        final, _, verifier = sign_in(browser, self.shop, person=person, **extra)
        assert final.status_code in (302, 303), (
            f"authorize did not come back to the shop: {final.status_code} {final.text[:300]}")
        location = final.headers["location"]
        assert location.startswith(self.shop.redirect_uri), location
        query = query_of(location)
        assert "code" in query, f"no code in the redirect to the shop: {query}"
        return query["code"], verifier

    def redeem(self, code: str, verifier: str, client: httpx.Client | None = None) -> httpx.Response:
        return exchange_code(client or self.http, self.shop, code, verifier)

    def tokens(self, browser: Browser, person: str = "li-lei", **extra: str) -> dict[str, Any]:
        """A new token family: authorize, then redeem the code."""
        code, verifier = self.code(browser, person, **extra)
        reply = self.redeem(code, verifier)
        assert reply.status_code == 200, f"code redemption failed: {reply.status_code} {reply.text}"
        tokens: dict[str, Any] = reply.json()
        return tokens

    def refresh(self, refresh_token: str, client: httpx.Client | None = None,
                **extra: str) -> httpx.Response:
        return (client or self.http).post(
            "/token", data={"grant_type": "refresh_token", "refresh_token": refresh_token, **extra},
            auth=self.auth)

    def introspect(self, token: str) -> dict[str, Any]:
        reply = self.http.post("/introspect", data={"token": token}, auth=self.auth)
        assert reply.status_code == 200, f"introspection answered {reply.status_code}: {reply.text}"
        body: dict[str, Any] = reply.json()
        return body

    def userinfo(self, access_token: str) -> httpx.Response:
        return self.http.get("/userinfo", headers={"Authorization": f"Bearer {access_token}"})

    # -- what the person does in the consent centre ------------------------------------

    def account(self, browser: Browser) -> httpx.Response:
        page = browser.follow("/account", headers={"accept-language": "en"})
        assert page.status_code == 200 and "/account/erase" in page.text, (
            f"the consent centre did not open: {page.status_code} {page.text[:300]}")
        return page

    def lists_shop(self, page: httpx.Response) -> bool:
        return f'name="shop" value="{self.shop.client_id}"' in page.text

    def withdraw_shop(self, browser: Browser) -> httpx.Response:
        """Withdraw everything for the shop: the whole-shop form, its confirmation page, then
        "yes". Returns the final answer (303 to /account), not following it."""
        page = self.account(browser)
        forms = re.findall(r'<form method="post" action="/account/withdraw">(.*?)</form>', page.text, re.S)
        whole = [f for f in forms if self.lists_shop_form(f) and 'name="purpose"' not in f]
        assert whole, f"no 'withdraw everything' form for {self.shop.client_id} on /account"
        fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', whole[0]))
        return self._confirmed(browser, "/account/withdraw", fields, "Withdraw consent?")

    def lists_shop_form(self, form: str) -> bool:
        return f'name="shop" value="{self.shop.client_id}"' in form

    def erase(self, browser: Browser) -> httpx.Response:
        """Erase the account: the erase form, its confirmation, then "yes" (200, signed out)."""
        page = self.account(browser)
        form = re.search(r'<form method="post" action="/account/erase">(.*?)</form>', page.text, re.S)
        assert form, "no erase form on /account"
        fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form.group(1)))
        return self._confirmed(browser, "/account/erase", fields, "Erase your account?")

    def _confirmed(self, browser: Browser, action: str, fields: dict[str, str],
                   question: str) -> httpx.Response:
        form = {"content-type": "application/x-www-form-urlencoded", "accept-language": "en"}
        confirm = browser.request("POST", action, content=urlencode(fields), headers=form)
        assert confirm.status_code == 200 and question in confirm.text, (
            f"no confirmation step at {action}: {confirm.status_code} {confirm.text[:300]}")
        hidden = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', confirm.text))
        pairs = [(k, html.unescape(v)) for k, v in hidden.items()] + [("confirm", "yes")]
        return browser.request("POST", action, content=urlencode(pairs), headers=form)

    # -- liveness ----------------------------------------------------------------------

    def still_working(self, access_tokens: Iterable[str], refresh_tokens: Iterable[str],
                      workers: int = 8) -> list[str]:
        """Which of these credentials still work, as "<kind> <token prefix>: <why>".

        Non-destructive checks first (introspection and userinfo), then each refresh token
        is presented. Both phases run in parallel; refresh tokens are taken newest first
        (callers list them in the order they were issued), and since every token was already
        introspected, replaying an old one cannot hide a live successor.
        """
        access = list(dict.fromkeys(access_tokens))
        refresh = list(dict.fromkeys(refresh_tokens))

        def look(kind_token: tuple[str, str]) -> str | None:
            kind, token = kind_token
            why = []
            if self.introspect(token).get("active") is not False:
                why.append("introspection active")
            if kind == "access_token":
                status = self.userinfo(token).status_code
                if status != 401:
                    why.append(f"userinfo {status}")
            return f"{kind} {token[:8]}…: {', '.join(why)}" if why else None

        def use(token: str) -> str | None:
            reply = self.refresh(token)
            error = reply.json().get("error") if reply.headers.get("content-type", "").startswith(
                "application/json") else None
            if reply.status_code == 400 and error == "invalid_grant":
                return None
            return f"refresh_token {token[:8]}…: refresh answered {reply.status_code} {error}"

        with ThreadPoolExecutor(workers) as pool:
            found = [r for r in pool.map(look, [("access_token", t) for t in access]
                                         + [("refresh_token", t) for t in refresh]) if r]
            found += [r for r in pool.map(use, reversed(refresh)) if r]
        return found

    # -- the server's own view -----------------------------------------------------------

    def log_lines(self) -> Iterator[dict[str, Any]]:
        with self.log_path.open(encoding="utf-8", errors="replace") as log:
            for line in log:
                if line.startswith("{"):
                    try:
                        yield json.loads(line)
                    except ValueError:
                        continue

    def server_errors(self) -> list[str]:
        """Every request that ended in a 5xx, and every unhandled error logged."""
        errors = []
        for entry in self.log_lines():
            status = entry.get("status")
            if (isinstance(status, int) and status >= 500) or entry.get("level") in ("error", "critical"):
                where = entry.get("route") or entry.get("logger")
                errors.append(f"{where}: {entry.get('status')} {entry.get('message')} "
                              f"{entry.get('exception') or ''} {entry.get('at') or ''}")
        return errors

    def stop(self) -> None:
        self.close_clients()
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                return
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        else:
            # The workers may outlive a parent that died.
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def gateway_command() -> list[str]:
    script = Path(sys.executable).with_name("gateway")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from gateway.cli import main; main()"]




def start_gateway(*, port: int, shop: ShopHandle, redis_url: str, key_prefix: str, keys_dir: Path,
                  policies_dir: Path, data_dir: Path, master_key: str, log_path: Path,
                  workers: int = 2, extra_env: dict[str, str] | None = None) -> LiveGateway:
    """Start ``gateway serve --workers N`` in its own process group; wait for ``/healthz``."""
    origin = f"http://127.0.0.1:{port}"
    env = gateway_free_environment()
    env.update({
        "GATEWAY_ISSUER": origin,
        "GATEWAY_DEMO": "true",
        "GATEWAY_REDIS_URL": redis_url,
        "GATEWAY_REDIS_KEY_PREFIX": key_prefix,
        "GATEWAY_KEYS_DIR": str(keys_dir),
        "GATEWAY_POLICIES_DIR": str(policies_dir),
        "GATEWAY_DATA_DIR": str(data_dir),
        "GATEWAY_MASTER_KEY": master_key,
        "GATEWAY_LOG_LEVEL": "INFO",
        # Many rounds of one person signing in and withdrawing from loopback: the limits
        # stay on, with room for the run (tests/web/test_limits.py tests them).
        "GATEWAY_RATE_LIMIT_AUTHORIZE_PER_IP": ROOMY_RATE_LIMIT,
        "GATEWAY_RATE_LIMIT_ACCOUNT_WRITES_PER_PERSON": ROOMY_RATE_LIMIT,
        **(extra_env or {}),
    })
    log = log_path.open("wb")
    process = subprocess.Popen(
        [*gateway_command(), "serve", "--host", "127.0.0.1", "--port", str(port),
         "--workers", str(workers)],
        env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True)
    log.close()
    gateway = LiveGateway(origin, shop, log_path, process)
    try:
        _wait_until_serving(gateway, workers)
    except BaseException:
        gateway.stop()
        raise
    return gateway


def _wait_until_serving(gateway: LiveGateway, workers: int) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    with httpx.Client(base_url=gateway.origin, timeout=2.0) as probe:
        while True:
            if gateway.process.poll() is not None:
                raise RuntimeError(f"gateway serve exited with {gateway.process.returncode}:\n"
                                   f"{gateway.log_path.read_text(errors='replace')[-3000:]}")
            try:
                if probe.get("/healthz").status_code == 200 and _workers_started(gateway) >= workers:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"gateway serve did not answer /healthz within {STARTUP_TIMEOUT:.0f} s:\n"
                                   f"{gateway.log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.1)


def _workers_started(gateway: LiveGateway) -> int:
    text = gateway.log_path.read_text(errors="replace")
    return text.count("Application startup complete")


def run_threads(count: int, target: Callable[[int], None], timeout: float) -> None:
    """Run ``target(i)`` in ``count`` threads; fail if any is still running after ``timeout``."""
    errors: list[BaseException] = []

    def guarded(index: int) -> None:
        try:
            target(index)
        except BaseException as error:  # noqa: BLE001 - reported to the test below
            errors.append(error)

    threads = [threading.Thread(target=guarded, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    end = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, end - time.monotonic()))
    stuck = sum(thread.is_alive() for thread in threads)
    assert not stuck, f"{stuck} of {count} threads still running after {timeout:.0f} s"
    if errors:
        raise errors[0]
