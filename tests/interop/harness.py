"""Helpers of the interoperability tests: the live gateway's handle, the person's browser
walk, and the Node.js relying party process (fixtures live in ``conftest.py``)."""

from __future__ import annotations

import html
import json
import queue
import re
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2 as httpx

from tests.conftest import Browser, checkboxes
from tests.live import free_port  # noqa: F401 - re-exported for the interop tests

NODE_DIR = Path(__file__).resolve().parent / "node"
NODE_TIMEOUT = 30.0  # seconds for one openid-client operation, generous for a slow CI



@dataclass
class LiveGateway:
    issuer: str
    http: httpx.Client
    browsers: list[Browser] = field(default_factory=list)

    def browser(self) -> Browser:
        """A fresh browser (its own cookies) on this gateway."""
        browser = Browser(self.http, origin=self.issuer)
        self.browsers.append(browser)
        return browser


def authorize_in_browser(browser: Browser, url: str, person: str = "li-lei",
                         consent: bool = True) -> str:
    """Play the person for an authorization URL a relying party built: choose the demo
    provider, sign in as ``person``, tick every box and allow (or deny). Returns the URL
    the gateway finally sends the browser to: the shop's callback."""
    page = browser.follow(url)
    if page.status_code == 200 and "/upstream/demo/start" in page.text:
        start = re.search(r'href="(/upstream/demo/start\?[^"]+)"', page.text)
        assert start, page.text
        page = browser.follow(html.unescape(start.group(1)))
        page = browser.submit(page, person=person)
    if page.status_code == 200 and 'action="/consent"' in page.text:
        ticks = checkboxes(page) if consent else []
        page = browser.submit(page, ticks, decision="allow" if consent else "deny")
    assert page.status_code in (302, 303), f"no redirect to the shop: {page.status_code} {page.text[:500]}"
    return str(page.headers["location"])


class RelyingPartyError(Exception):
    """openid-client refused something; ``details`` holds its error name, code and OAuth error."""

    def __init__(self, op: str, details: dict[str, Any]) -> None:
        super().__init__(f"openid-client {op}: {details}")
        self.details = details


class NodeRelyingParty:
    """One ``node rp.mjs`` process: a shop's server using openid-client, driven line by line
    (the protocol is described at the top of ``node/rp.mjs``)."""

    def __init__(self, node: str = "node") -> None:
        self._process = subprocess.Popen(
            [node, str(NODE_DIR / "rp.mjs")], cwd=NODE_DIR, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr: list[str | None] = []
        self._next_id = 0
        threading.Thread(target=self._pump, args=(self._process.stdout, self._lines.put),
                         daemon=True).start()
        threading.Thread(target=self._pump, args=(self._process.stderr, self._stderr.append),
                         daemon=True).start()

    @staticmethod
    def _pump(stream: Any, sink: Callable[[str | None], None]) -> None:
        for line in stream:
            sink(line)
        sink(None)

    def _stderr_text(self) -> str:
        return "".join(line for line in self._stderr if line)

    def call(self, op: str, **args: Any) -> Any:
        """Run one operation; return its result or raise :class:`RelyingPartyError`."""
        self._next_id += 1
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps({"id": self._next_id, "op": op, "args": args}) + "\n")
        self._process.stdin.flush()
        try:
            line = self._lines.get(timeout=NODE_TIMEOUT)
        except queue.Empty:
            raise AssertionError(f"openid-client {op}: no answer in {NODE_TIMEOUT}s; "
                                 f"stderr: {self._stderr_text()}") from None
        if line is None:
            raise AssertionError(f"the Node relying party exited; stderr: {self._stderr_text()}")
        message = json.loads(line)
        assert message["id"] == self._next_id, message
        if not message["ok"]:
            raise RelyingPartyError(op, message["error"])
        return message["result"]

    def close(self) -> None:
        if self._process.poll() is None and self._process.stdin is not None:
            try:
                self._process.stdin.write(json.dumps({"op": "exit"}) + "\n")
                self._process.stdin.close()
            except OSError:
                pass
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        for stream in (self._process.stdout, self._process.stderr):
            if stream is not None:
                stream.close()
