"""Serving an ASGI app on a free loopback port in a thread, for the tests that need real HTTP."""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any, cast

import redis
import uvicorn

# For harnesses that sign many people in from loopback: the limits stay on (their round trip
# is exercised) with room for the run; tests/web/test_limits.py tests the limits themselves.
ROOMY_RATE_LIMIT = '{"count": 100000, "per_seconds": 60, "burst": 100000}'


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def serve_in_thread(app: Any, port: int, timeout: float = 15.0) -> tuple[uvicorn.Server, threading.Thread]:
    """Start ``app`` on ``127.0.0.1:port`` and wait until it accepts connections."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the server did not start")
        time.sleep(0.02)
    return server, thread


def stop(server: uvicorn.Server, thread: threading.Thread) -> None:
    server.should_exit = True
    thread.join(timeout=10)


def redis_for(url: str) -> redis.Redis:
    """A client with the gateway's options for ``url``: a cluster client when the run uses a
    Redis Cluster (GATEWAY_REDIS_CLUSTER, set by tests/conftest.py and inherited by the
    processes the tests start)."""
    from gateway.store.connection import cluster_client, redis_client

    if os.environ.get("GATEWAY_REDIS_CLUSTER", "").lower() in ("1", "true"):
        return cast(redis.Redis, cluster_client(url))
    return redis_client(url)


def gateway_free_environment() -> dict[str, str]:
    """This process's environment without its GATEWAY_ settings, for a gateway process a test
    starts with settings of its own; a cluster run's GATEWAY_REDIS_CLUSTER stays."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("GATEWAY_") or k == "GATEWAY_REDIS_CLUSTER"}


def queued_command_names(pipe: Any) -> list[str]:
    """The names of the commands queued in a redis-py pipeline, a cluster pipeline too
    (which keeps them elsewhere, as objects with ``args``)."""
    strategy = getattr(pipe, "_execution_strategy", None)
    if strategy is not None:
        return [str(command.args[0]) for command in strategy.command_queue]
    return [str(command[0][0]) for command in pipe.command_stack]
