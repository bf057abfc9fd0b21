"""End to end through a real OpenID provider: node's ``oidc-provider`` on loopback.

The provider (``oidc_provider/server.mjs``, pinned by its package-lock.json) runs as a
child process with one test account and an interaction that signs in and consents by
itself. The gateway runs on another loopback port with that provider configured; the
test plays the person's browser across both origins and the shop's back end.

Node.js 20+ and npm are required: their absence fails the test rather than skipping it,
since CI must run it. ``npm ci`` runs here when the installed packages differ from the lock.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

import httpx2
import pytest

from gateway.app import create_app
from gateway.config import Settings
from gateway.store import Store
from tests.conftest import ShopHandle, authorize_params, checkboxes, pkce_pair, query_of
from tests.live import serve_in_thread, stop

PROVIDER_DIR = Path(__file__).resolve().parent / "oidc_provider"
SHOP_CALLBACK = "http://127.0.0.1:9/callback"  # nothing listens: the test reads the redirect


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _version(path: Path, key: str | None = None) -> str | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if key is not None:
        data = data["packages"][key]
    return str(data.get("version"))


@pytest.fixture(scope="session")
def node() -> str:
    """Node.js, with the provider's packages installed from the lock file when missing."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.fail("the live OpenID provider test needs Node.js 20 or later and npm on PATH")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout
    if int(version.strip().lstrip("v").split(".")[0]) < 20:
        pytest.fail(f"the live OpenID provider test needs Node.js 20 or later, found {version.strip()}")
    installed = _version(PROVIDER_DIR / "node_modules" / "oidc-provider" / "package.json")
    locked = _version(PROVIDER_DIR / "package-lock.json", "node_modules/oidc-provider")
    if installed != locked:
        result = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=PROVIDER_DIR,
                                capture_output=True, text=True, timeout=300, check=False)
        if result.returncode != 0:
            pytest.fail(f"npm ci failed in {PROVIDER_DIR}:\n{result.stdout}\n{result.stderr}")
    return node


@pytest.fixture
def oidc_provider(node: str) -> Iterator[Callable[[str, str, str], str]]:
    """Start the provider for one client; returns its issuer."""
    started: list[subprocess.Popen[str]] = []

    def start(client_id: str, client_secret: str, redirect_uri: str) -> str:
        port = _free_port()
        env = {**os.environ, "PORT": str(port), "CLIENT_ID": client_id,
               "CLIENT_SECRET": client_secret, "REDIRECT_URI": redirect_uri, "NODE_ENV": "test"}
        process = subprocess.Popen([node, "server.mjs"], cwd=PROVIDER_DIR, env=env, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        started.append(process)
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                pytest.fail(f"oidc-provider exited: {process.stderr.read() if process.stderr else ''}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return f"http://127.0.0.1:{port}"
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("oidc-provider did not start within 30 s")
                time.sleep(0.1)

    yield start
    for process in started:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


class CrossOriginBrowser:
    """Keeps cookies per origin and follows redirects across the gateway and the provider,
    stopping at the shop's redirect URI."""

    def __init__(self, http: httpx2.Client) -> None:
        self.http = http
        self.jars: dict[str, dict[str, str]] = {}
        self.visited: list[str] = []

    def request(self, method: str, url: str, **kwargs: Any) -> httpx2.Response:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        jar = self.jars.setdefault(origin, {})
        headers = dict(kwargs.pop("headers", {}))
        if jar:
            headers["cookie"] = "; ".join(f"{k}={v}" for k, v in jar.items())
        self.http.cookies.clear()
        self.visited.append(url)
        response = self.http.request(method, url, headers=headers, **kwargs)
        self.http.cookies.clear()
        for header in response.headers.get_list("set-cookie"):
            cookie: SimpleCookie = SimpleCookie()
            cookie.load(header)
            for name, morsel in cookie.items():
                expired = morsel["max-age"] == "0" or "1970" in morsel["expires"]
                if expired or not morsel.value:
                    jar.pop(name, None)
                else:
                    jar[name] = morsel.value
        return response

    def follow(self, url: str, method: str = "GET", **kwargs: Any) -> httpx2.Response:
        response = self.request(method, url, **kwargs)
        for _ in range(20):
            location = response.headers.get("location")
            if response.status_code not in (302, 303) or not location:
                return response
            target = urljoin(str(response.request.url), location)
            if target.startswith(SHOP_CALLBACK):
                return response
            response = self.request("GET", target)
        raise AssertionError("too many redirects")


def test_sign_in_through_a_real_openid_provider(
    oidc_provider: Callable[[str, str, str], str], make_settings: Callable[..., Settings],
    make_shop: Callable[..., ShopHandle], store: Store, keys_dir: Path,
) -> None:
    shop = make_shop("shop-live", redirect_uris=[SHOP_CALLBACK])
    gateway_port = _free_port()
    gateway = f"http://127.0.0.1:{gateway_port}"
    client_secret = secrets.token_urlsafe(32)
    issuer = oidc_provider("consent-gateway", client_secret, f"{gateway}/upstream/node/callback")
    (keys_dir / "node-oidc.secret").write_text(client_secret)

    settings = make_settings(issuer=gateway, providers=[{
        "kind": "oidc", "id": "node", "name": "Test OP", "issuer": issuer,
        "client_id": "consent-gateway", "client_secret": {"file": "node-oidc.secret"},
        "scopes": ["openid", "profile", "email"],
    }])
    app = create_app(settings, store=store)
    server, thread = serve_in_thread(app, gateway_port)
    try:
        with httpx2.Client(follow_redirects=False, timeout=20.0) as http:
            _sign_in_and_check(CrossOriginBrowser(http), http, gateway, issuer, shop)
    finally:
        stop(server, thread)
    registry = app.state.gateway.metrics.registry
    errors = [s for m in registry.collect() for s in m.samples
              if s.name.endswith("_total") and s.labels.get("status", "").startswith("5") and s.value]
    assert not errors, f"server errors during the test: {errors}"


def _sign_in_and_check(browser: CrossOriginBrowser, http: httpx2.Client, gateway: str, issuer: str,
                       shop: ShopHandle) -> None:
    verifier, challenge = pkce_pair()
    params = authorize_params(shop, challenge)
    page = browser.follow(f"{gateway}/authorize?{urlencode(params)}")
    start = re.search(r'href="(/upstream/node/start\?[^"]+)"', page.text)
    assert start, page.text
    # Gateway → provider (authorize, automatic login and consent) → gateway callback →
    # the gateway's consent screen.
    page = browser.follow(urljoin(gateway, start.group(1).replace("&amp;", "&")))
    assert page.status_code == 200 and 'action="/consent"' in page.text, page.text
    assert any(url.startswith(f"{issuer}/auth?") for url in browser.visited)
    callback = next(url for url in browser.visited if url.startswith(f"{gateway}/upstream/node/callback"))
    assert query_of(callback)["iss"] == issuer  # RFC 9207, checked by the gateway
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page.text))
    form = [*fields.items(), *checkboxes(page), ("decision", "allow")]
    final = browser.follow(f"{gateway}/consent", method="POST", content=urlencode(form),
                           headers={"content-type": "application/x-www-form-urlencoded"})
    assert final.status_code == 302, final.text
    answer = query_of(final.headers["location"])
    assert answer["state"] == params["state"] and answer["iss"] == gateway

    tokens = http.post(f"{gateway}/token", auth=(shop.client_id, shop.secret or ""), data={
        "grant_type": "authorization_code", "code": answer["code"], "redirect_uri": shop.redirect_uri,
        "code_verifier": verifier}).json()
    assert "id_token" in tokens, tokens
    claims = http.get(f"{gateway}/userinfo",
                      headers={"authorization": f"Bearer {tokens['access_token']}"}).json()
    assert claims["nickname"] == "tester"
    assert claims["email"] == "tester@example.org"
    assert "age_band" in claims and "birthdate" not in claims
    assert "test-account-1" not in json.dumps(claims) and "locale" not in claims
    assert set(claims) <= {"sub", "nickname", "picture", "email", "age_band"}

