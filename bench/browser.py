"""A person's browser over a shared asyncio HTTP client: its own cookies, redirects followed.

Many browsers share one ``httpx2.AsyncClient`` (one connection pool), so the client's own
cookie jar is switched off and each :class:`Browser` keeps its cookies and sends them itself
(as ``tests/conftest.py``'s ``Browser`` does). Cookie attributes are ignored on purpose: the
servers run on plain-http loopback, where a real browser would also accept ``Secure`` cookies
for localhost, and sending a cookie to every path changes nothing for these servers.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from http.cookiejar import DefaultCookiePolicy
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

import httpx2 as httpx

#: Called after every request with (method, path): the Redis accounting uses it per step.
StepObserver = Callable[[str, str], None]

_FORM = re.compile(r'<form method="post" action="([^"]+)"')
_HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)"')
_CHECKBOX = re.compile(r'<input type="checkbox" name="([^"]+)" value="([^"]*)"')
FORM_HEADERS = {"content-type": "application/x-www-form-urlencoded"}
_EXPIRED = ("max-age=0", "expires=thu, 01 jan 1970")


class FlowError(Exception):
    """A server answered something a correct flow never gets (counted as an error)."""


def new_http_client(connections: int, timeout: float = 30.0) -> httpx.AsyncClient:
    """One pooled client for many browsers; its cookie jar accepts nothing."""
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections,
                          keepalive_expiry=30.0)
    client = httpx.AsyncClient(limits=limits, timeout=timeout, follow_redirects=False, trust_env=False)
    # Set on the client's own jar: a jar passed in is copied into a new one, losing its policy.
    client.cookies.jar.set_policy(DefaultCookiePolicy(allowed_domains=[]))
    return client


class Browser:
    def __init__(self, http: httpx.AsyncClient, origin: str, observer: StepObserver | None = None) -> None:
        self.http = http
        self.origin = origin.rstrip("/")
        self.cookies: dict[str, str] = {}
        self.observer = observer

    def _remember(self, response: httpx.Response) -> None:
        for header in response.headers.get_list("set-cookie"):
            pair, _, attributes = header.partition(";")
            name, _, value = pair.strip().partition("=")
            if not value or any(mark in attributes.lower() for mark in _EXPIRED):
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        url = urljoin(self.origin + "/", url)
        headers = dict(kwargs.pop("headers", {}))
        if self.cookies:
            headers["cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        response = await self.http.request(method, url, headers=headers, **kwargs)
        self._remember(response)
        if self.observer is not None:
            self.observer(method, urlsplit(url).path)
        return response

    def is_local(self, location: str) -> bool:
        return location.startswith("/") or location.startswith(self.origin + "/")

    async def follow(self, url: str, method: str = "GET", **kwargs: Any) -> httpx.Response:
        """Request ``url`` and follow redirects while they stay on this server."""
        response = await self.request(method, url, **kwargs)
        for _ in range(20):
            location = response.headers.get("location", "")
            if response.status_code not in (301, 302, 303, 307) or not self.is_local(location):
                return response
            response = await self.request("GET", location)
        raise FlowError("too many redirects")

    async def submit(self, page: httpx.Response, extra: list[tuple[str, str]]) -> httpx.Response:
        """Post the first form on ``page`` with its hidden fields plus ``extra``."""
        action = _FORM.search(page.text)
        if action is None:
            raise FlowError(f"no form on the page (HTTP {page.status_code})")
        names = {name for name, _ in extra}
        fields = [(n, html.unescape(v)) for n, v in _HIDDEN.findall(page.text) if n not in names]
        return await self.follow(html.unescape(action.group(1)), method="POST",
                                 content=urlencode(fields + extra), headers=FORM_HEADERS)


def checkboxes(page: httpx.Response) -> list[tuple[str, str]]:
    """Every checkbox on a page, as (name, value): ticking them all."""
    return [(n, html.unescape(v)) for n, v in _CHECKBOX.findall(page.text)]
