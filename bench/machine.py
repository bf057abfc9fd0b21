"""What the benchmark ran on: CPU, cores, memory, Redis, Python, node, the checkout."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from typing import Any

import psutil  # type: ignore[import-untyped, unused-ignore]  # stubs: types-psutil
import redis

from bench.servers import node_version, peer_version
from bench.workspace import REPO


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _git(*args: str) -> str:
    git = shutil.which("git")
    if git is None:
        return "?"
    result = subprocess.run([git, *args], cwd=REPO, capture_output=True, text=True, check=False,  # noqa: S603
                            timeout=30)
    return result.stdout.strip() if result.returncode == 0 else "?"


def describe(client: redis.Redis) -> dict[str, Any]:
    server: dict[str, Any] = client.info("server")
    import uvicorn

    dirty = _git("status", "--porcelain", "--", "gateway")
    return {
        "cpu_model": _cpu_model(),
        "nproc": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "redis_version": server.get("redis_version"),
        "python": platform.python_version(),
        "uvicorn": uvicorn.__version__,
        "uvloop_installed": _installed("uvloop"),
        "httptools_installed": _installed("httptools"),
        "node": node_version(),
        "oidc_provider": peer_version(),
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "gateway_changes_uncommitted": bool(dirty and dirty != "?"),
    }


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
