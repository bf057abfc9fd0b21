"""Starting, watching and stopping the two servers under test.

Each server runs in its own process group (``start_new_session``), so stopping it ends the
processes this benchmark started and nothing else: the group id is the id of the process we
spawned.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit, urlunsplit

import httpx2 as httpx
import psutil  # type: ignore[import-untyped, unused-ignore]  # stubs: types-psutil

from bench.workspace import REPO, Workspace, gateway_command

PEER_DIR = Path(__file__).resolve().parent / "oidc_provider"
START_TIMEOUT = 90.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def with_host_port(redis_url: str, host: str, port: int) -> str:
    """The same Redis URL (database, credentials) pointed at another host and port."""
    parts = urlsplit(redis_url)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@{host}:{port}" if credentials else f"{host}:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@dataclass(slots=True)
class Server:
    """One server under test (possibly a parent with worker processes)."""

    name: str
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path
    description: str
    _log: IO[bytes] | None = field(default=None, repr=False)

    def _processes(self) -> list[psutil.Process]:
        try:
            parent = psutil.Process(self.process.pid)
            return [parent, *parent.children(recursive=True)]
        except psutil.Error:
            return []

    def worker_pids(self) -> list[int]:
        """The processes that serve requests: the workers, or the process itself without any."""
        processes = self._processes()
        workers = []
        for process in processes[1:]:
            try:
                if "resource_tracker" not in " ".join(process.cmdline()):
                    workers.append(process.pid)
            except psutil.Error:
                continue
        return workers or [p.pid for p in processes[:1]]

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server and all its processes so far."""
        total = 0.0
        for process in self._processes():
            try:
                times = process.cpu_times()
                total += times.user + times.system
            except psutil.Error:
                continue
        return total

    def rss(self) -> dict[int, int]:
        """Resident memory (bytes) of each worker process."""
        sizes = {}
        for pid in self.worker_pids():
            try:
                sizes[pid] = psutil.Process(pid).memory_info().rss
            except psutil.Error:
                continue
        return sizes

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.process.wait(timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None


async def _spawn(name: str, command: list[str], env: dict[str, str], cwd: Path, log_path: Path,
           base_url: str, ready_path: str, description: str) -> Server:
    log = log_path.open("ab")
    process = subprocess.Popen(  # noqa: S603 - fixed commands built by this module
        command, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    server = Server(name, process, base_url, log_path, description, log)
    try:
        await _wait_ready(server, ready_path)
    except BaseException:
        server.stop()
        raise
    return server


async def _wait_ready(server: Server, path: str) -> None:
    """Poll ``path`` until it answers 200. Asynchronous: the counting proxy runs on this loop."""
    deadline = time.monotonic() + START_TIMEOUT
    async with httpx.AsyncClient(base_url=server.base_url, timeout=2.0, trust_env=False) as client:
        while True:
            if server.process.poll() is not None:
                raise RuntimeError(f"{server.name} exited during start-up:\n{server.log_tail()}")
            try:
                if (await client.get(path)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{server.name} did not answer {path} in {START_TIMEOUT:.0f} s:\n"
                                   f"{server.log_tail()}")
            await asyncio.sleep(0.1)


def prepare_gateway(workspace: Workspace, issuer: str) -> None:
    """Create the signing keys and secrets once, before any worker starts (see gateway_app)."""
    result = subprocess.run(
        [sys.executable, "-m", "bench.gateway_app", "prepare"], env=workspace.gateway_env(issuer),
        cwd=REPO, capture_output=True, text=True, timeout=180, check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"preparing the gateway failed:\n{result.stderr[-3000:]}")


async def start_gateway(workspace: Workspace, port: int, *, workers: int = 1, runner: str = "serve",
                  loop: str = "auto", http: str = "auto", redis_url: str | None = None,
                  switch_interval: float | None = None, label: str = "gateway") -> Server:
    """``gateway serve`` (one process) or uvicorn with ``workers`` processes (bench.gateway_app)."""
    issuer = f"http://127.0.0.1:{port}"
    env = workspace.gateway_env(issuer, redis_url)
    if switch_interval is not None:
        env["BENCH_GIL_SWITCH_INTERVAL"] = str(switch_interval)
    if runner == "serve":
        if workers != 1 or loop != "auto" or http != "auto" or switch_interval is not None:
            raise ValueError("`gateway serve` runs one process with uvicorn's defaults; use runner uvicorn")
        command = [*gateway_command(), "serve", "--host", "127.0.0.1", "--port", str(port)]
        description = "`gateway serve` (1 process)"
    else:
        command = [sys.executable, "-m", "bench.gateway_app", "serve", "--port", str(port),
                   "--workers", str(workers), "--loop", loop, "--http", http]
        description = f"uvicorn bench.gateway_app:create, {workers} worker(s), loop={loop}, http={http}"
        if switch_interval is not None:
            description += f", GIL switch interval {switch_interval} s"
    log_path = workspace.logs_dir / f"{label}.log"
    return await _spawn(label, command, env, REPO, log_path, issuer, "/healthz", description)


def ensure_peer_installed() -> None:
    """``npm ci`` in bench/oidc_provider when node_modules is missing (pinned by the lock file)."""
    if (PEER_DIR / "node_modules" / "oidc-provider" / "package.json").exists():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is not installed: node 20.19+ and npm are needed for the peer")
    print("installing the peer (npm ci in bench/oidc_provider) ...", flush=True)
    result = subprocess.run(  # noqa: S603 - npm by absolute path, fixed arguments
        [npm, "ci", "--no-audit", "--no-fund"], cwd=PEER_DIR, capture_output=True, text=True,
        timeout=600, check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"npm ci failed:\n{result.stderr[-3000:]}")


def node_version() -> str:
    node = shutil.which("node")
    if node is None:
        return "not installed"
    result = subprocess.run([node, "--version"], capture_output=True, text=True, check=False,  # noqa: S603
                            timeout=30)
    return result.stdout.strip()


async def start_peer(workspace: Workspace, port: int, *, workers: int = 1, redis_url: str | None = None,
               label: str = "oidc-provider") -> Server:
    ensure_peer_installed()
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is not installed")
    issuer = f"http://127.0.0.1:{port}"
    env = dict(os.environ)
    env.update({
        "NODE_ENV": "production",
        "PEER_PORT": str(port),
        "PEER_ISSUER": issuer,
        "PEER_REDIS_URL": redis_url or workspace.redis_url,
        "PEER_KEY_PREFIX": workspace.peer_prefix,
        "PEER_CONFIG": str(workspace.peer_config_file),
        "PEER_WORKERS": str(workers),
    })
    log_path = workspace.logs_dir / f"{label}.log"
    description = f"node oidc-provider {peer_version()} ({workers} process{'es' if workers > 1 else ''})"
    return await _spawn(label, [node, str(PEER_DIR / "server.mjs")], env, PEER_DIR, log_path, issuer,
                  "/.well-known/openid-configuration", description)


def peer_version() -> str:
    import json

    try:
        package = json.loads((PEER_DIR / "node_modules" / "oidc-provider" / "package.json").read_text())
        return str(package["version"])
    except (OSError, ValueError, KeyError):
        return "?"
