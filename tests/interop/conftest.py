"""Interoperability fixtures: a live gateway on loopback and the Node.js relying party on
``openid-client`` (installed with ``npm ci`` from the lock file when missing).

The relying-party libraries under test do the shop's side with their own defaults; pytest
only plays the person (demo sign-in, consent form, following the logout URL), because
that part is a browser's, not a library's.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx2 as httpx
import pytest
import uvicorn

from gateway.app import create_app
from gateway.config import Settings
from gateway.store import Store
from tests.interop.harness import NODE_DIR, LiveGateway, NodeRelyingParty, free_port
from tests.live import serve_in_thread


@pytest.fixture
def live_gateway(make_settings: Callable[..., Settings], store: Store) -> Iterator[Callable[[], LiveGateway]]:
    """Start the gateway on a free loopback port, once the test has declared its shops.

    Afterwards, check that no request ended in a 5xx: a library that makes the gateway fail
    has found a bug even if it coped with the answer.
    """
    running: list[tuple[uvicorn.Server, threading.Thread, Any, httpx.Client]] = []

    def start(**overrides: Any) -> LiveGateway:
        port = free_port()
        issuer = f"http://127.0.0.1:{port}"
        app = create_app(make_settings(issuer=issuer, **overrides), store=store)
        server, thread = serve_in_thread(app, port)
        http = httpx.Client(base_url=issuer, follow_redirects=False, timeout=10.0)
        running.append((server, thread, app, http))
        return LiveGateway(issuer, http)

    yield start
    for server, thread, _, http in running:
        http.close()
        server.should_exit = True
        thread.join(timeout=10)
    for _, _, app, _ in running:
        registry = app.state.gateway.metrics.registry
        errors = [s for m in registry.collect() for s in m.samples
                  if s.name.endswith("_total") and s.labels.get("status", "").startswith("5")
                  and s.value]
        assert not errors, f"server errors during the test: {errors}"


def _installed_version(package: str) -> str | None:
    try:
        manifest = json.loads((NODE_DIR / "node_modules" / package / "package.json").read_text())
    except (OSError, ValueError):
        return None
    return str(manifest.get("version"))


def _locked_version(package: str) -> str:
    lock = json.loads((NODE_DIR / "package-lock.json").read_text())
    return str(lock["packages"][f"node_modules/{package}"]["version"])


@pytest.fixture(scope="session")
def node() -> str:
    """The Node.js executable, with the relying party's packages installed from the lock
    file when missing or stale. No Node.js or npm is a failure, not a skip: CI must run
    these tests (.ci/run installs the packages; this is the fallback for a plain pytest)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.fail("the interoperability tests need Node.js 20 or later and npm on PATH")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout
    if int(version.strip().lstrip("v").split(".")[0]) < 20:
        pytest.fail(f"the interoperability tests need Node.js 20 or later, found {version.strip()}")
    if _installed_version("openid-client") != _locked_version("openid-client"):
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, capture_output=True, text=True,
            timeout=300, check=False,
        )
        if result.returncode != 0:
            pytest.fail(f"npm ci failed in {NODE_DIR}:\n{result.stdout}\n{result.stderr}")
    return node


@pytest.fixture
def node_rp(node: str) -> Iterator[Callable[[], NodeRelyingParty]]:
    """A factory of Node relying parties (one process per shop), stopped after the test."""
    started: list[NodeRelyingParty] = []

    def start() -> NodeRelyingParty:
        rp = NodeRelyingParty(node)
        started.append(rp)
        return rp

    yield start
    for rp in started:
        rp.close()
