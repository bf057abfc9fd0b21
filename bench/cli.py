"""``python -m bench``: the whole benchmark in one command.

    python -m bench                         # every flow at c=1,16,64, 10 s cells → bench/results/latest.*
    python -m bench --quick                 # a short validation run (c=1,16, 3 s cells)
    python -m bench --flows token,userinfo --concurrency 64 --duration 30 --workers 2
    python -m bench --soak 600              # adds a 10-minute mixed load with RSS samples
    python -m bench --profile token         # py-spy flame graph → bench/results/token.svg / .txt
    python -m bench --cleanup               # remove keys left by an interrupted run (cgperf:*)

Redis: ``--redis-url``, else ``BENCH_REDIS_URL``, else ``GATEWAY_REDIS_URL``, else
redis://127.0.0.1:6379/0. Every key is written under ``cgperf:<run id>:`` and removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import shutil
import signal
import sys
import time
from collections.abc import Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import redis

from bench import report
from bench.machine import describe
from bench.redis_meter import delete_prefix
from bench.run import FLOWS, Options, run_all
from bench.workspace import create_workspace

RESULTS = Path(__file__).resolve().parent / "results"
T = TypeVar("T")


def _list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _levels(text: str) -> list[int]:
    levels = [int(item) for item in _list(text)]
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError("concurrency levels are positive integers")
    return levels


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="validation preset: c=1,16, 3 s cells, 1 s warm-up, fewer accounting requests")
    p.add_argument("--flows", type=_list, default=list(FLOWS), help=f"comma-separated, of {', '.join(FLOWS)}")
    p.add_argument("--concurrency", type=_levels, default=None, help="levels, e.g. 1,16,64 (default)")
    p.add_argument("--duration", type=float, default=None, help="seconds measured per cell (default 10)")
    p.add_argument("--warmup", type=float, default=None, help="seconds of warm-up per cell (default 2)")
    p.add_argument("--max-requests", type=int, default=None, help="cap on requests per cell")
    p.add_argument("--targets", type=_list, default=["gateway", "peer"], help="gateway,peer (default both)")
    p.add_argument("--workers", type=int, default=1, help="gateway worker processes (default 1)")
    p.add_argument("--peer-workers", type=int, default=None,
                   help="oidc-provider processes (default: --workers)")
    p.add_argument("--runner", choices=["auto", "serve", "uvicorn"], default="auto",
                   help="`gateway serve` (1 process) or uvicorn via bench.gateway_app "
                        "(auto: serve if possible)")
    p.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="auto")
    p.add_argument("--http", choices=["auto", "h11", "httptools"], default="auto")
    p.add_argument("--gil-switch-interval", type=float, default=None, metavar="SECONDS",
                   help="experiment: sys.setswitchinterval in each gateway worker (uvicorn runner)")
    p.add_argument("--code-pool", type=int, default=None,
                   help="at most this many codes minted before a token cell (default 20000; the pool is "
                        "sized from the warm-up rate)")
    p.add_argument("--accounting-requests", type=int, default=None, help="sequential requests per flow (30)")
    p.add_argument("--no-accounting", action="store_true", help="skip the counting-proxy phase")
    p.add_argument("--audit-seconds", type=float, default=None,
                   help="audit append measurement (3 s; 0 = skip)")
    p.add_argument("--soak", type=float, default=0.0, metavar="SECONDS",
                   help="mixed gateway load with RSS samples")
    p.add_argument("--soak-concurrency", type=int, default=16)
    p.add_argument("--redis-url", default=None)
    p.add_argument("--gateway-log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                   help="the gateway's GATEWAY_LOG_LEVEL (INFO, the default, logs a line per request)")
    p.add_argument("--out", type=Path, default=RESULTS, help="results directory (bench/results)")
    p.add_argument("--name", default="latest", help="file name of the results (latest.md, latest.json)")
    p.add_argument("--note", default="", help="a line printed at the top of the report")
    p.add_argument("--keep-keys", action="store_true", help="leave this run's Redis keys for inspection")
    p.add_argument("--profile", metavar="FLOW", default=None, help="profile the gateway with py-spy on FLOW")
    p.add_argument("--profile-seconds", type=float, default=20.0)
    p.add_argument("--profile-concurrency", type=int, default=16)
    p.add_argument("--profile-rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument("--profile-all-threads", action="store_true",
                   help="sample every thread (wall time: Redis and GIL waits too), not only the GIL holder")
    p.add_argument("--cleanup", action="store_true",
                   help="delete every cgperf:* key (interrupted runs) and exit; only while no other "
                        "benchmark runs on this Redis")
    return p


def options_from(args: argparse.Namespace, redis_url: str) -> Options:
    quick = args.quick
    unknown = [f for f in args.flows if f not in FLOWS]
    if unknown:
        raise SystemExit(f"unknown flows {unknown}; choose from {', '.join(FLOWS)}")
    runner = args.runner
    if runner == "auto":
        plain = args.loop == "auto" and args.http == "auto" and args.gil_switch_interval is None
        runner = "serve" if args.workers == 1 and plain else "uvicorn"
    if runner == "serve" and (args.workers != 1 or args.loop != "auto" or args.http != "auto"
                              or args.gil_switch_interval is not None):
        raise SystemExit("--runner serve runs one process with uvicorn's defaults")

    def pick(value: Any, normal: Any, fast: Any) -> Any:
        return value if value is not None else (fast if quick else normal)

    return Options(
        redis_url=redis_url,
        flows=args.flows,
        concurrency=pick(args.concurrency, [1, 16, 64], [1, 16]),
        duration=pick(args.duration, 10.0, 3.0),
        warmup=pick(args.warmup, 2.0, 1.0),
        max_requests=args.max_requests,
        targets=[t for t in args.targets if t in ("gateway", "peer")],
        workers=args.workers,
        runner=runner,
        loop=args.loop,
        http=args.http,
        switch_interval=args.gil_switch_interval,
        peer_workers=args.peer_workers or args.workers,
        code_pool=pick(args.code_pool, 20000, 20000),
        accounting_requests=pick(args.accounting_requests, 30, 10),
        accounting=not args.no_accounting,
        audit_seconds=pick(args.audit_seconds, 3.0, 2.0),
        soak=args.soak,
        soak_concurrency=args.soak_concurrency,
        log_level=args.gateway_log_level,
        note=args.note,
    )


async def _cancel_on_sigterm(work: Coroutine[Any, Any, T]) -> T:
    """Let SIGTERM end the run like Ctrl-C does: the finally blocks stop servers and remove keys."""
    task = asyncio.ensure_future(work)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await task
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    redis_url = args.redis_url or os.environ.get("BENCH_REDIS_URL") or os.environ.get("GATEWAY_REDIS_URL") \
        or "redis://127.0.0.1:6379/0"
    client = redis.Redis.from_url(redis_url)
    try:
        client.ping()
    except redis.RedisError as error:
        raise SystemExit(f"Redis at {redis_url} does not answer: {error}") from None
    if args.cleanup:
        print(f"removed {delete_prefix(client, 'cgperf:')} keys under cgperf:")
        return
    options = options_from(args, redis_url)
    machine = describe(client)
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    workspace = create_workspace(redis_url, options.log_level)
    print(f"run {workspace.run_id}: Redis {redis_url} under {workspace.key_prefix}, "
          f"files in {workspace.root}", flush=True)
    failed = True
    began = time.monotonic()
    try:
        if args.profile:
            from bench.profiling import profile_flow

            asyncio.run(_cancel_on_sigterm(profile_flow(
                options, workspace, args.profile, seconds=args.profile_seconds,
                concurrency=args.profile_concurrency, rate=args.profile_rate,
                gil=not args.profile_all_threads,
                out_dir=args.out)))
        else:
            work = run_all(options, workspace, lambda message: print(message, flush=True))
            results = asyncio.run(_cancel_on_sigterm(work))
            results["run"] = {
                "started": started, "note": options.note, "duration_s": options.duration,
                "warmup_s": options.warmup, "concurrency": options.concurrency, "flows": options.flows,
                "workers": options.workers, "peer_workers": options.peer_workers, "runner": options.runner,
                "redis_url": redis_url, "wall_s": round(time.monotonic() - began, 1),
                "command": "python -m bench " + shlex.join(argv if argv is not None else sys.argv[1:]),
            }
            results["machine"] = machine
            md_path, json_path = report.write(results, args.out, args.name)
            print()
            print(md_path.read_text(encoding="utf-8"))
            print(f"wrote {md_path} and {json_path}")
        failed = False
    finally:
        if failed and workspace.logs_dir.exists():
            kept = args.out / f"logs-{workspace.run_id}"
            shutil.copytree(workspace.logs_dir, kept, dirs_exist_ok=True)
            print(f"server logs kept in {kept}", file=sys.stderr)
        if args.keep_keys:
            print(f"keys kept under {workspace.key_prefix}")
        else:
            removed = delete_prefix(client, workspace.key_prefix)
            print(f"removed {removed} Redis keys under {workspace.key_prefix}")
        client.close()
        workspace.cleanup()
