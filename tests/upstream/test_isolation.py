"""Upstream isolation (issue 13): total deadlines, per-provider call limits, circuit breakers,
remembered discovery and JWKS failures, one shared fetch in flight.

Providers are imitated with respx (and, for a body trickling over a real socket, a local
``http.server``); the gateway's side is the real code. The real-process version with fifty
people at once is tests/faults/test_slow_upstream.py.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import respx
from starlette.testclient import TestClient

from gateway.upstream.base import ProviderUnavailableError, UpstreamError
from gateway.upstream.http import ProviderHttp, UpstreamHttp
from gateway.upstream.isolation import CircuitBreaker, CircuitState, SharedFetch
from tests.conftest import Browser, ShopHandle, authorize_params, pkce_pair
from tests.live import free_port
from tests.upstream.conftest import begin, shop_error

URL = "https://provider.example/api"
ISSUER = "https://id.example.com"
DISCOVERY = f"{ISSUER}/.well-known/openid-configuration"
TOKEN_URL = "https://github.com/login/oauth/access_token"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def provider_http(*, deadline: float = 5, failures: int = 3, cooldown: float = 30,
                  concurrency: int = 8, clock: Callable[[], float] = time.monotonic,
                  retries: int = 0) -> ProviderHttp:
    http = UpstreamHttp(timeout=5, retries=retries, deadline=deadline)
    return http.for_provider("corp", concurrency=concurrency,
                             breaker=CircuitBreaker("corp", failures=failures, cooldown=cooldown,
                                                    clock=clock))


async def get(http: ProviderHttp, url: str = URL) -> int:
    return (await http.request("GET", url, what="corp read", idempotent=True)).status


# -- the circuit breaker -------------------------------------------------------------------


def test_breaker_opens_after_consecutive_failures_then_lets_one_trial_through() -> None:
    clock = Clock()
    http = provider_http(failures=3, cooldown=30, clock=clock)

    async def scenario(route: respx.Route) -> None:
        for _ in range(3):
            with pytest.raises(UpstreamError) as caught:
                await get(http)
            assert caught.value.retryable and not isinstance(caught.value, ProviderUnavailableError)
        assert http.breaker.state is CircuitState.OPEN and not http.available()
        started = time.monotonic()
        with pytest.raises(ProviderUnavailableError, match="circuit open"):
            await get(http)
        assert time.monotonic() - started < 0.05  # refused without a call
        assert route.call_count == 3

        clock.now += 29
        with pytest.raises(ProviderUnavailableError):
            await get(http)
        clock.now += 1  # the cool-down is over: one trial
        assert http.available()
        route.mock(return_value=httpx.Response(503))
        with pytest.raises(UpstreamError, match="HTTP 503"):
            await get(http)
        assert route.call_count == 4  # the trial went, failed: open again for a whole cool-down
        assert http.breaker.state is CircuitState.OPEN
        clock.now += 29
        with pytest.raises(ProviderUnavailableError):
            await get(http)
        clock.now += 1
        route.mock(return_value=httpx.Response(200, json={}))
        assert await get(http) == 200  # the trial succeeded: closed
        assert http.breaker.state is CircuitState.CLOSED
        assert await get(http) == 200
        assert route.call_count == 6

    with respx.mock as mock:
        route = mock.get(URL).mock(side_effect=httpx.ConnectError("refused"))
        asyncio.run(scenario(route))


def test_while_the_trial_is_out_every_other_call_fails_fast() -> None:
    clock = Clock()
    breaker = CircuitBreaker("corp", failures=1, cooldown=10, clock=clock)
    breaker.admit("x").failed()
    assert breaker.is_open()
    clock.now += 10
    trial = breaker.admit("x")
    assert trial.trial and breaker.state is CircuitState.HALF_OPEN and breaker.is_open()
    with pytest.raises(ProviderUnavailableError):
        breaker.admit("x")
    trial.abandoned()  # the trial's request was cancelled: no verdict, the next call is the trial
    again = breaker.admit("x")
    assert again.trial
    again.succeeded()
    assert breaker.state is CircuitState.CLOSED and not breaker.is_open()


def test_answers_below_500_are_the_provider_being_up() -> None:
    """A provider saying no (400 invalid_grant) is healthy: only failures count."""
    http = provider_http(failures=2)

    async def scenario() -> None:
        for _ in range(5):
            await http.request("POST", URL, what="corp token", idempotent=False, data={"code": "c"})
            with pytest.raises(UpstreamError):
                await get(http)
        assert http.breaker.state is CircuitState.CLOSED  # never two failures in a row

    with respx.mock as mock:
        mock.post(URL).mock(return_value=httpx.Response(400, json={"error": "invalid_grant"}))
        mock.get(URL).mock(return_value=httpx.Response(502))
        asyncio.run(scenario())


# -- the call limit ------------------------------------------------------------------------


def test_calls_beyond_the_limit_fail_at_once_instead_of_queuing() -> None:
    http = provider_http(concurrency=2)

    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.5)
        return httpx.Response(200, json={})

    async def timed() -> tuple[float, Any]:
        started = time.monotonic()
        try:
            result: Any = await get(http)
        except UpstreamError as error:
            result = error
        return time.monotonic() - started, result

    async def scenario() -> list[tuple[float, Any]]:
        return list(await asyncio.gather(*(timed() for _ in range(5))))

    with respx.mock as mock:
        route = mock.get(URL).mock(side_effect=slow)
        results = asyncio.run(scenario())
    assert route.call_count == 2
    served = [seconds for seconds, result in results if result == 200]
    refused = [(seconds, result) for seconds, result in results if isinstance(result, UpstreamError)]
    assert len(served) == 2 and len(refused) == 3
    assert all(isinstance(r, ProviderUnavailableError) and s < 0.1 for s, r in refused), refused
    assert "already in progress" in refused[0][1].reason
    assert http.limit.in_progress == 0
    assert http.breaker.state is CircuitState.CLOSED  # refusing is not the provider failing


# -- the total deadline --------------------------------------------------------------------


def test_the_deadline_bounds_a_call_whose_body_never_ends() -> None:
    """Each chunk arrives well within the per-read timeout; the whole never does."""
    http = provider_http(deadline=1.0)

    async def trickle() -> AsyncIterator[bytes]:
        for byte in b'{"issuer": "https://id.example.com"}':
            await asyncio.sleep(0.2)
            yield bytes([byte])

    async def scenario() -> float:
        started = time.monotonic()
        with pytest.raises(UpstreamError, match="no complete answer within 1 s") as caught:
            await get(http)
        assert caught.value.retryable
        return time.monotonic() - started

    with respx.mock as mock:
        mock.get(URL).mock(side_effect=lambda request: httpx.Response(200, content=trickle()))
        assert 0.9 < asyncio.run(scenario()) < 1.5


def test_the_deadline_covers_retries_and_back_off() -> None:
    http = provider_http(deadline=1.0, retries=5, failures=100)

    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.4)
        return httpx.Response(503)

    async def scenario() -> float:
        started = time.monotonic()
        with pytest.raises(UpstreamError, match="within 1 s"):
            await get(http)
        return time.monotonic() - started

    with respx.mock as mock:
        route = mock.get(URL).mock(side_effect=hang)
        assert asyncio.run(scenario()) < 1.3
    assert route.call_count <= 3  # 6 attempts were allowed; the deadline ended them


@pytest.fixture
def trickling_server() -> Iterator[str]:
    """A real socket sending a JSON body one byte every 0.3 s (per-read timeouts never fire)."""
    stop = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            body = json.dumps({"padding": "x" * 40}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                for byte in body:
                    if stop.wait(0.3):
                        return
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
            except OSError:
                return

    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{port}/slow"
    stop.set()
    server.shutdown()
    server.server_close()


def test_the_deadline_holds_against_a_real_trickling_socket(trickling_server: str) -> None:
    http = UpstreamHttp(timeout=1.0, retries=0, deadline=1.5)  # 1 s per read would never fire

    async def scenario() -> float:
        started = time.monotonic()
        try:
            with pytest.raises(UpstreamError, match=r"within 1\.5 s"):
                await http.request("GET", trickling_server, what="slow read", idempotent=True)
            return time.monotonic() - started
        finally:
            await http.aclose()

    assert 1.4 < asyncio.run(scenario()) < 2.0


# -- remembered failures and the shared fetch ----------------------------------------------


def test_a_failed_fetch_is_remembered_and_shared_by_everyone_waiting() -> None:
    clock = Clock()
    shared = SharedFetch[str]("corp discovery", ttl=3600, failure_ttl=15, clock=clock)
    calls = 0

    async def failing() -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.2)
        raise UpstreamError("corp discovery: timeout", retryable=True)

    async def succeeding() -> str:
        nonlocal calls
        calls += 1
        return "document"

    async def scenario() -> None:
        results = await asyncio.gather(*(shared.get(failing) for _ in range(20)),
                                       return_exceptions=True)
        assert calls == 1  # one fetch in flight for the twenty
        assert all(isinstance(r, UpstreamError) for r in results)
        assert len({id(r) for r in results}) == 20  # each request its own error object
        assert shared.failing()
        with pytest.raises(ProviderUnavailableError, match="not asked again"):
            await shared.get(succeeding)
        assert calls == 1
        clock.now += 15
        assert not shared.failing()
        assert await shared.get(succeeding) == "document"
        assert await shared.get(failing) == "document"  # cached now
        assert calls == 2

    asyncio.run(scenario())


def test_a_request_giving_up_does_not_cancel_the_shared_fetch() -> None:
    shared = SharedFetch[str]("corp jwks", ttl=3600, failure_ttl=15)

    async def slow() -> str:
        await asyncio.sleep(0.3)
        return "keys"

    async def scenario() -> None:
        impatient = asyncio.create_task(shared.get(slow))
        patient = asyncio.create_task(shared.get(slow))
        await asyncio.sleep(0.05)
        impatient.cancel()
        assert await patient == "keys"
        assert shared.fresh() == "keys"

    asyncio.run(scenario())


# -- what the person and the shop see ------------------------------------------------------


@pytest.fixture
def oidc_provider(write_secret: Callable[..., dict[str, str]]) -> dict[str, Any]:
    return {"kind": "oidc", "id": "corp", "name": "Corp ID", "name_zh": "企业账号", "issuer": ISSUER,
            "client_id": "gateway", "client_secret": write_secret("corp-iso.secret", "s")}


def chooser_page(client: TestClient, shop: ShopHandle) -> str:
    _, challenge = pkce_pair()
    page = Browser(client).follow(f"/authorize?{urlencode(authorize_params(shop, challenge))}")  # type: ignore[arg-type]
    assert page.status_code == 200, page.text
    return page.text


def test_failed_discovery_is_not_fetched_again_for_a_while(
    upstream_client: Callable[..., TestClient], oidc_provider: dict[str, Any], shop: ShopHandle,
) -> None:
    client = upstream_client([oidc_provider], upstream_failure_ttl=1)
    with respx.mock as mock:
        discovery = mock.get(DISCOVERY).mock(return_value=httpx.Response(503))
        first = client.get("/")  # any request: nothing about the provider is fetched at start
        assert discovery.call_count == 0, first
        sign_in = _start(client, shop, "corp")
        assert sign_in.status_code == 502 and shop_error(sign_in) == "temporarily_unavailable"
        assert discovery.call_count == 1
        # Moments later: shown as unavailable, the other provider still offered, not called.
        page = chooser_page(client, shop)
        assert "/upstream/demo/start" in page and "/upstream/corp/start" not in page
        assert "temporarily unavailable" in page or "暂时不可用" in page
        again = _start(client, shop, "corp", from_page=False)
        assert again.status_code == 502 and "temporarily unavailable" in again.text.lower()
        assert discovery.call_count == 1
        time.sleep(1.1)  # upstream_failure_ttl later it is asked again
        assert "/upstream/corp/start" in chooser_page(client, shop)
        _start(client, shop, "corp")
        assert discovery.call_count == 2


def test_an_open_circuit_is_shown_on_the_chooser_and_refused_with_the_styled_page(
    upstream_client: Callable[..., TestClient], write_secret: Callable[..., dict[str, str]],
    shop: ShopHandle,
) -> None:
    client = upstream_client([{"kind": "oauth2", "preset": "github", "id": "github", "name": "GitHub",
                               "client_id": "Iv1.gateway",
                               "client_secret": write_secret("gh-iso.secret", "s")}],
                             upstream_breaker_failures=2, upstream_breaker_cooldown=1)
    with respx.mock as mock:
        token = mock.post(TOKEN_URL).mock(side_effect=httpx.ConnectTimeout("slow"))
        for _ in range(2):
            sign_in = begin(client, shop, "github")
            page = sign_in.callback(code="c", state=sign_in.state)
            assert page.status_code == 502 and shop_error(page) == "temporarily_unavailable"
        assert token.call_count == 2
        chooser = chooser_page(client, shop)
        assert "/upstream/demo/start" in chooser and "/upstream/github/start" not in chooser
        assert re.search(r"GitHub \((temporarily unavailable|暂时不可用)\)", chooser)
        refused = _start(client, shop, "github", from_page=False, lang="zh-CN")
        assert refused.status_code == 502
        assert "此登录方式暂时不可用" in refused.text and "temporarily_unavailable" in refused.text
        assert shop_error(refused) == "temporarily_unavailable"  # the shop is told, as before
        time.sleep(1.1)  # after the cool-down: offered again, one trial goes through
        assert "/upstream/github/start" in chooser_page(client, shop)
        token.mock(return_value=httpx.Response(200, json={"error": "bad_verification_code"}))
        sign_in = begin(client, shop, "github")
        page = sign_in.callback(code="c", state=sign_in.state)
        assert page.status_code == 400 and token.call_count == 3  # the provider answered: closed
        assert "/upstream/github/start" in chooser_page(client, shop)


def _start(client: TestClient, shop: ShopHandle, provider_id: str, *, from_page: bool = True,
           lang: str = "en") -> Any:
    """Authorize, then open /upstream/<id>/start (taken from the chooser, or typed in)."""
    browser = Browser(client)  # type: ignore[arg-type]
    _, challenge = pkce_pair()
    page = browser.follow(f"/authorize?{urlencode(authorize_params(shop, challenge))}")
    request_id = re.search(r"request=([^\"&]+)", page.text)
    assert request_id, page.text
    if from_page:
        assert f"/upstream/{provider_id}/start" in page.text, page.text
    return browser.request("GET", f"/upstream/{provider_id}/start?request={request_id.group(1)}&lang={lang}")
