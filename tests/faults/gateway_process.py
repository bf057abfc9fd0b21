"""A real ``gateway serve`` process for the fault tests, configured only through GATEWAY_*."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx2 as httpx

from tests.conftest import REPO_POLICIES
from tests.live import free_port, gateway_free_environment

GATEWAY = str(Path(sys.executable).with_name("gateway"))


@dataclass
class GatewayProcess:
    root: Path
    redis_url: str
    workers: int = 1
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        policies = self.root / "policies"
        if not policies.exists():
            shutil.copytree(REPO_POLICIES, policies)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.root / "gateway.log"

    def env(self) -> dict[str, str]:
        base = gateway_free_environment()
        return {**base, "GATEWAY_ISSUER": self.url, "GATEWAY_REDIS_URL": self.redis_url,
                "GATEWAY_REDIS_KEY_PREFIX": "cgfault:", "GATEWAY_DEMO": "true",
                "GATEWAY_KEYS_DIR": str(self.root / "keys"), "GATEWAY_DATA_DIR": str(self.root / "data"),
                "GATEWAY_POLICIES_DIR": str(self.root / "policies"),
                "GATEWAY_AUDIT_CHECKPOINT_SECONDS": "1", **self.extra_env}

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([GATEWAY, *args], env=self.env(), capture_output=True, text=True,
                              timeout=timeout)

    def start(self, timeout: float = 30.0) -> GatewayProcess:
        with open(self.log_file, "ab") as log:
            self.process = subprocess.Popen(
                [GATEWAY, "serve", "--port", str(self.port), "--workers", str(self.workers)],
                env=self.env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited: {self.log_file.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/healthz/live", timeout=1).status_code < 500:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("gateway did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        self.process = None
