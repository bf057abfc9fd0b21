"""The gateway under uvicorn with several worker processes.

``gateway serve`` runs one process. To measure more than one worker without touching
``gateway/``, the benchmark starts uvicorn itself with :func:`create` as the application
factory: each worker reads the same ``GATEWAY_*`` settings from its environment and builds
the app exactly as ``gateway serve`` does (same logging, same uvicorn options), only with
``workers`` > 1.

    python -m bench.gateway_app prepare                 # create signing keys and secrets once
    python -m bench.gateway_app serve --port 8000 --workers 2 [--loop uvloop] [--http httptools]

``prepare`` exists because every worker would otherwise race to create the signing keys and
sealed secrets of a fresh keys directory on first start.
"""

from __future__ import annotations

import argparse
import os
import sys

from fastapi import FastAPI

from gateway.app import create_app
from gateway.config import load_settings
from gateway.telemetry import configure_logging

#: An experiment knob, not a gateway setting: the interpreter's GIL switch interval (seconds) in
#: each worker, to test how much the thread-pool bridge loses to GIL hand-offs (default 0.005).
SWITCH_INTERVAL_VARIABLE = "BENCH_GIL_SWITCH_INTERVAL"


def create() -> FastAPI:
    """uvicorn's application factory: settings from the environment, as ``gateway serve``."""
    interval = os.environ.get(SWITCH_INTERVAL_VARIABLE)
    if interval:
        sys.setswitchinterval(float(interval))
    settings = load_settings()
    configure_logging(settings.log_level)
    return create_app(settings)


def prepare() -> None:
    """Build the app once so that keys and secrets exist before several workers start."""
    app = create()
    app.state.gateway.store.close()


def serve(host: str, port: int, workers: int, loop: str, http: str) -> None:
    import uvicorn

    # The options of gateway.cli._serve, plus the worker count.
    uvicorn.run("bench.gateway_app:create", factory=True, host=host, port=port, workers=workers,
                log_config=None, proxy_headers=True, server_header=False, loop=loop, http=http)


def main() -> None:
    parser = argparse.ArgumentParser(description="The gateway under uvicorn, for the benchmark.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("prepare")
    run = commands.add_parser("serve")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, required=True)
    run.add_argument("--workers", type=int, default=1)
    run.add_argument("--loop", default="auto", choices=["auto", "asyncio", "uvloop"])
    run.add_argument("--http", default="auto", choices=["auto", "h11", "httptools"])
    args = parser.parse_args()
    if args.command == "prepare":
        prepare()
    else:
        serve(args.host, args.port, args.workers, args.loop, args.http)


if __name__ == "__main__":
    main()
