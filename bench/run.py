"""The benchmark's phases: accounting through the counting proxy, timed cells, soak, audit.

1. **Accounting** (exact Redis commands and round trips per request): both servers start with
   their Redis URL pointing at :class:`~bench.redis_meter.CountingProxy`; each flow runs
   sequentially for a few requests; the full sign-in is also broken down per HTTP step. The
   Redis bytes a person occupies are measured here too, right after a fresh sign-in.
2. **Timed cells**: both servers restart with the direct Redis URL (the relay would add
   latency). For each flow and concurrency level the gateway and the peer run one after the
   other, the order alternating from cell to cell so that drift in the machine's load does
   not always favour the same side. Inputs that a request consumes (codes) are minted before
   the cell; warm-up requests run first and are not counted.
3. **Soak** (``--soak SECONDS``): a mixed load on the gateway, its workers' RSS sampled.
4. **Audit**: appends/s and bytes per event through ``gateway.audit`` in this process.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import math
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import psutil  # type: ignore[import-untyped, unused-ignore]  # stubs: types-psutil
import redis

from bench.audit_rate import measure_audit
from bench.browser import Browser, FlowError, StepObserver, new_http_client
from bench.flows import Code, GatewayTarget, PeerTarget, Target, Tokens, check_encrypted_userinfo
from bench.loadgen import Operation, PoolExhausted, drive
from bench.redis_meter import (
    CountingProxy,
    TrafficCounts,
    commandstats,
    delta,
    memory_usage,
    redis_cpu_seconds,
)
from bench.servers import Server, free_port, prepare_gateway, start_gateway, start_peer, with_host_port
from bench.workspace import PEOPLE, ClientCredentials, Workspace

FLOWS: dict[str, str] = {
    "login": "full sign-in, consent already given "
             "(authorize → upstream → callback → code → token → userinfo)",
    "token": "authorization code exchange at the token endpoint",
    "refresh": "refresh with rotation",
    "userinfo": "userinfo, plain JSON",
    "userinfo_jwe": "userinfo, JWE (ECDH-ES+A256KW, A256GCM) for the encrypted shop; peer: plain userinfo",
    "introspect": "token introspection",
}
#: The peer has no encrypted shop: its plain userinfo is the comparison.
PEER_EQUIVALENT = {"userinfo_jwe": "userinfo"}
MINTING_BROWSERS = 8
TOKEN_POOL = 64


@dataclass(slots=True)
class Options:
    redis_url: str
    flows: list[str]
    concurrency: list[int]
    duration: float = 10.0
    warmup: float = 2.0
    max_requests: int | None = None
    targets: list[str] = field(default_factory=lambda: ["gateway", "peer"])
    workers: int = 1
    runner: str = "serve"
    loop: str = "auto"
    http: str = "auto"
    switch_interval: float | None = None
    peer_workers: int = 1
    code_pool: int = 20000  # most codes minted for one token cell (sized from the warm-up rate)
    accounting_requests: int = 30
    accounting: bool = True
    audit_seconds: float = 3.0
    soak: float = 0.0
    soak_concurrency: int = 16
    log_level: str = "INFO"
    note: str = ""


@dataclass(slots=True)
class Side:
    """One server under test with the shop credentials and signed-in browsers used on it."""

    key: str  # "gateway" or "peer"
    target: Target
    client: ClientCredentials
    server: Server
    jwe_client: ClientCredentials | None = None
    jwe_private_key: dict[str, Any] = field(default_factory=dict, repr=False)
    minting: list[tuple[Browser, str]] = field(default_factory=list)
    access_tokens: list[str] = field(default_factory=list)
    jwe_tokens: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.target.name


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


# -- preparing inputs ---------------------------------------------------------------------


async def prepare_side(side: Side) -> None:
    """Discovery, each person's consent given once, and browsers holding a session."""
    await side.target.discover()
    for person in PEOPLE:
        browser = side.target.browser()
        await side.target.sign_in(browser, side.client, person)
        if side.jwe_client is not None:
            await side.target.sign_in(browser, side.jwe_client, person)
    side.minting = []
    for number in range(MINTING_BROWSERS):
        person = PEOPLE[number % len(PEOPLE)]
        browser = side.target.browser()
        await side.target.sign_in(browser, side.client, person)
        side.minting.append((browser, person))


async def mint_codes(side: Side, client: ClientCredentials, count: int) -> deque[Code]:
    """Authorization codes from browsers that already have a session (one request each)."""
    codes: deque[Code] = deque()
    each = math.ceil(count / len(side.minting))

    async def mint(browser: Browser, person: str) -> None:
        for _ in range(each):
            codes.append(await side.target.sign_in(browser, client, person))

    await asyncio.gather(*(mint(b, p) for b, p in side.minting))
    return codes


async def mint_tokens(side: Side, client: ClientCredentials, count: int) -> list[Tokens]:
    codes = await mint_codes(side, client, count)
    tokens: list[Tokens] = []

    async def exchange() -> None:
        while codes:
            tokens.append(await side.target.exchange(client, codes.popleft()))

    await asyncio.gather(*(exchange() for _ in range(MINTING_BROWSERS)))
    return tokens


async def ensure_access_tokens(side: Side, flow: str) -> list[str]:
    if flow == "userinfo_jwe":
        if side.jwe_client is None:
            raise ValueError("no encrypted shop on this side")
        if not side.jwe_tokens:
            side.jwe_tokens = [t.access for t in await mint_tokens(side, side.jwe_client, TOKEN_POOL)]
        return side.jwe_tokens
    if not side.access_tokens:
        side.access_tokens = [t.access for t in await mint_tokens(side, side.client, TOKEN_POOL)]
    return side.access_tokens


async def _login(side: Side, concurrency: int, pool: int, observer: StepObserver | None) -> Operation:
    target, client, counter = side.target, side.client, itertools.count()

    async def login(_: int) -> None:
        person = PEOPLE[next(counter) % len(PEOPLE)]
        code = await target.sign_in(target.browser(observer), client, person)
        tokens = await target.exchange(client, code)
        if observer is not None:
            observer("POST", "/token")
        await target.userinfo(tokens.access)
        if observer is not None:
            observer("GET", "/userinfo")
    return login


async def _token(side: Side, concurrency: int, pool: int, observer: StepObserver | None) -> Operation:
    codes = await mint_codes(side, side.client, pool)

    async def token(_: int) -> None:
        try:
            code = codes.popleft()
        except IndexError:
            raise PoolExhausted from None
        await side.target.exchange(side.client, code)
    return token


async def _refresh(side: Side, concurrency: int, pool: int, observer: StepObserver | None) -> Operation:
    issued = await mint_tokens(side, side.client, max(concurrency, 32))
    chains = deque(t.refresh for t in issued if t.refresh)
    if len(chains) < concurrency:
        raise FlowError(f"{side.name}: the token endpoint issued no refresh tokens")

    async def refresh(_: int) -> None:
        tokens = await side.target.refresh(side.client, chains.popleft())  # rotation: a new one each time
        if tokens.refresh is None:
            raise FlowError(f"{side.name}: refresh without a new refresh token (no rotation)")
        chains.append(tokens.refresh)
    return refresh


async def _userinfo(side: Side, concurrency: int, pool: int, observer: StepObserver | None) -> Operation:
    access, counter = await ensure_access_tokens(side, "userinfo"), itertools.count()

    async def userinfo(_: int) -> None:
        await side.target.userinfo(access[next(counter) % len(access)])
    return userinfo


async def _userinfo_jwe(side: Side, concurrency: int, pool: int, observer: StepObserver | None) -> Operation:
    access, counter = await ensure_access_tokens(side, "userinfo_jwe"), itertools.count()
    checked = [False]

    async def userinfo_jwe(_: int) -> None:
        response = await side.target.userinfo(access[next(counter) % len(access)])
        if not checked[0]:  # decrypt one answer per cell, outside the hot loop
            checked[0] = True
            check_encrypted_userinfo(response, side.jwe_private_key)
    return userinfo_jwe


async def _introspect(side: Side, concurrency: int, pool: int, observer: StepObserver | None) -> Operation:
    access, counter = await ensure_access_tokens(side, "userinfo"), itertools.count()

    async def introspect(_: int) -> None:
        await side.target.introspect(side.client, access[next(counter) % len(access)])
    return introspect


_BUILDERS = {"login": _login, "token": _token, "refresh": _refresh, "userinfo": _userinfo,
             "userinfo_jwe": _userinfo_jwe, "introspect": _introspect}


async def build_operation(side: Side, flow: str, concurrency: int, pool: int,
                          observer: StepObserver | None = None) -> Operation:
    """The request one virtual client repeats in a cell of ``flow``, with its inputs ready
    (``pool``: how many codes to mint for the token flow; ``observer``: per-step accounting)."""
    if flow not in _BUILDERS:
        raise ValueError(f"unknown flow {flow!r}")
    if flow == "userinfo_jwe" and side.key != "gateway":
        flow = "userinfo"
    return await _BUILDERS[flow](side, concurrency, pool, observer)


def consumes_input(flow: str) -> bool:
    return flow == "token"


# -- servers --------------------------------------------------------------------------------


@dataclass(slots=True)
class Ports:
    gateway: int
    peer: int


@asynccontextmanager
async def running_servers(options: Options, workspace: Workspace, ports: Ports, *,
                          redis_url: str | None = None,
                          accounting: bool = False) -> AsyncIterator[dict[str, Server]]:
    """Start the selected servers (one process each in accounting), stop them afterwards."""
    servers: dict[str, Server] = {}
    try:
        if "gateway" in options.targets:
            prepare_gateway(workspace, f"http://127.0.0.1:{ports.gateway}")
            if accounting:
                servers["gateway"] = await start_gateway(workspace, ports.gateway, redis_url=redis_url,
                                                   label="gateway-accounting")
            else:
                servers["gateway"] = await start_gateway(workspace, ports.gateway, workers=options.workers,
                                                   runner=options.runner, loop=options.loop,
                                                   http=options.http, redis_url=redis_url,
                                                   switch_interval=options.switch_interval)
        if "peer" in options.targets:
            servers["peer"] = await start_peer(
                workspace, ports.peer, workers=1 if accounting else options.peer_workers, redis_url=redis_url,
                label="oidc-provider-accounting" if accounting else "oidc-provider")
        yield servers
    finally:
        for server in servers.values():
            server.stop()


def make_sides(workspace: Workspace, servers: dict[str, Server], http: Any) -> list[Side]:
    sides = []
    if "gateway" in servers and workspace.shop is not None:
        sides.append(Side("gateway", GatewayTarget(servers["gateway"].base_url, http), workspace.shop,
                          servers["gateway"], jwe_client=workspace.jwe_shop,
                          jwe_private_key=workspace.jwe_private_key))
    if "peer" in servers and workspace.peer_client is not None:
        sides.append(Side("peer", PeerTarget(servers["peer"].base_url, http), workspace.peer_client,
                          servers["peer"]))
    return sides


def applies(flow: str, side: Side) -> bool:
    return not (flow == "userinfo_jwe" and side.key != "gateway")


# -- phase 1: accounting ----------------------------------------------------------------------

_ID_SEGMENT = re.compile(r"/[A-Za-z0-9_-]{16,}")


def step_label(method: str, path: str) -> str:
    return f"{method} {_ID_SEGMENT.sub('/:id', path)}"


def _per_request(counts: TrafficCounts, requests: int) -> dict[str, Any]:
    n = max(requests, 1)
    return {
        "round_trips": round(counts.round_trips / n, 2),
        "commands": round(counts.total_commands / n, 2),
        "by_command": {name: round(count / n, 2) for name, count in sorted(counts.commands.items())},
        "background_round_trips_left_out": counts.background_round_trips,
    }


async def accounting_phase(options: Options, workspace: Workspace, ports: Ports) -> dict[str, Any]:
    parts = _redis_host_port(options.redis_url)
    proxy = CountingProxy(*parts)
    await proxy.start()
    proxied = with_host_port(options.redis_url, "127.0.0.1", proxy.port)
    result: dict[str, Any] = {"requests_per_flow": options.accounting_requests, "flows": {},
                              "login_steps": {}, "memory_per_person": {}}
    direct = redis.Redis.from_url(options.redis_url)
    http = new_http_client(64)
    try:
        async with running_servers(options, workspace, ports, redis_url=proxied, accounting=True) as servers:
            sides = make_sides(workspace, servers, http)
            for side in sides:
                await prepare_side(side)
                result["memory_per_person"][side.key] = await person_memory(side, workspace, direct)
            learned = await proxy.learn_background(3.0)
            result["background"] = sorted(
                " | ".join(f"{name} {key.removeprefix(workspace.key_prefix)}".strip() for name, key in rt)
                for rt in learned)
            for flow in options.flows:
                for side in sides:
                    if not applies(flow, side):
                        continue
                    print(f"  accounting {flow:<13} {side.name}", flush=True)
                    steps: dict[str, TrafficCounts] = {}
                    last = [proxy.snapshot()]

                    def observe(method: str, path: str, steps: dict[str, TrafficCounts] = steps,
                                last: list[TrafficCounts] = last) -> None:
                        now = proxy.snapshot()
                        label = step_label(method, path)
                        steps.setdefault(label, TrafficCounts()).add(now.minus(last[0]))
                        last[0] = now

                    operation = await build_operation(side, flow, 1, options.accounting_requests + 5,
                                                      observe if flow == "login" else None)
                    before = proxy.snapshot()
                    last[0] = before
                    samples = await drive(operation, 1, 600.0, options.accounting_requests)
                    counts = proxy.snapshot().minus(before)
                    entry = _per_request(counts, samples.ok)
                    entry["requests"] = samples.ok
                    entry["errors"] = samples.error_count
                    result["flows"].setdefault(flow, {})[side.key] = entry
                    if flow == "login":
                        result["login_steps"][side.key] = {
                            label: _per_request(c, samples.ok) for label, c in steps.items()}
    finally:
        await http.aclose()
        await proxy.close()
        direct.close()
    return result


def _redis_host_port(url: str) -> tuple[str, int]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("redis",):
        raise ValueError("the benchmark needs a redis:// URL (TCP) to count round trips")
    return parts.hostname or "127.0.0.1", parts.port or 6379


async def person_memory(side: Side, workspace: Workspace, direct: redis.Redis) -> dict[str, Any]:
    """Redis bytes of one person after a fresh sign-in and code exchange at one shop."""
    browser = side.target.browser()
    person = PEOPLE[-1]
    code = await side.target.sign_in(browser, side.client, person)
    tokens = await side.target.exchange(side.client, code)
    if tokens.refresh is None:
        raise FlowError(f"{side.name}: no refresh token issued")
    if side.key == "gateway":
        groups = _gateway_person_keys(direct, workspace.gateway_prefix, side.client.client_id, tokens,
                                      browser.cookies.get("__Host-cg_session", ""))
        note = ("profile = sealed profile hash + wrapped data key + link index and link keys; consent = "
                "consent record + the shop's family index; tokens = access + refresh token + family; "
                "session listed apart (not per person)")
    else:
        groups = _peer_person_keys(direct, workspace.peer_prefix, side.client.client_id, tokens,
                                   browser.cookies.get("_session", ""))
        note = ("profile: not in Redis (the peer's findAccount serves claims from memory, as a real "
                "deployment would from its own user store); consent = Grant + standing-grant pointer; "
                "tokens = access + refresh token + the grant's token list; session listed apart")
    sizes = {group: memory_usage(direct, keys) for group, keys in groups.items()}
    totals = {group: sum(s.values()) for group, s in sizes.items()}
    return {
        "bytes": totals,
        "total_bytes_excluding_session": sum(v for k, v in totals.items() if k != "session"),
        "keys": {group: {k.removeprefix(workspace.key_prefix): v for k, v in s.items()}
                 for group, s in sizes.items()},
        "note": note,
    }


def _credential_key(direct: redis.Redis, prefix: str, kind: str, value: str) -> str:
    pattern = f"{prefix}*{kind}:{_digest(value)}".replace("[", "\\[")
    for name in direct.scan_iter(match=pattern, count=1000):
        return name.decode() if isinstance(name, bytes) else str(name)
    raise FlowError(f"gateway: no {kind} key in Redis")


def _gateway_person_keys(direct: redis.Redis, prefix: str, client_id: str, tokens: Tokens,
                         session: str) -> dict[str, list[str]]:
    from gateway.oidc.credentials import read_token
    from gateway.store import KeySpace
    from gateway.upstream.links import LinkIndex

    keys = KeySpace(prefix)
    # A token's key is tagged with its person's slot, which only the gateway can read from the
    # token (gateway/store/slots.py): find it by its digest; its record names person and family.
    access_key = _credential_key(direct, prefix, "at", tokens.access)
    raw = direct.get(access_key)
    if not isinstance(raw, bytes):
        raise FlowError("gateway: access token not found in Redis")
    record = read_token(raw, "access_token", access_key, keys)
    person = record.person_id
    links = LinkIndex(direct, keys).link_keys(person)
    return {
        "profile": [keys.person_profile(person), keys.vault_data_key(person), keys.person_links(person),
                    *links],
        "consent": [keys.person_consent(person, client_id), keys.person_shop_families(person, client_id)],
        "tokens": [access_key, _credential_key(direct, prefix, "rt", tokens.refresh or ""),
                   record.family_key],
        "session": [keys.login_session(_digest(session))] if session else [],
    }


def _peer_person_keys(direct: redis.Redis, prefix: str, client_id: str, tokens: Tokens,
                      session: str) -> dict[str, list[str]]:
    raw = direct.get(f"{prefix}AccessToken:{tokens.access}")
    if not isinstance(raw, bytes):
        raise FlowError("oidc-provider: access token not found in Redis")
    record = json.loads(raw)
    grant, account = record["grantId"], record["accountId"]
    session_keys = []
    if session:
        session_keys.append(f"{prefix}Session:{session}")
        stored = direct.get(f"{prefix}Session:{session}")
        if isinstance(stored, bytes) and "uid" in json.loads(stored):
            session_keys.append(f"{prefix}sessionUid:{json.loads(stored)['uid']}")
    return {
        "profile": [],
        "consent": [f"{prefix}Grant:{grant}", f"{prefix}standing:{account}:{client_id}"],
        "tokens": [f"{prefix}AccessToken:{tokens.access}", f"{prefix}RefreshToken:{tokens.refresh}",
                   f"{prefix}grant:{grant}"],
        "session": session_keys,
    }


# -- phase 2: timed cells ---------------------------------------------------------------------


def _loadgen_cpu() -> float:
    times = psutil.Process().cpu_times()
    return float(times.user + times.system)


def _audit_size(direct: redis.Redis, prefix: str) -> int:
    from gateway.store import KeySpace

    value = direct.get(KeySpace(prefix).audit_size())
    return int(value) if isinstance(value, bytes | str) else 0


async def warmed_operation(options: Options, side: Side, flow: str, concurrency: int,
                           seconds: float) -> Operation:
    """The cell's operation after its warm-up, with enough codes for ``seconds`` of load.

    Codes are used up, so a token cell first warms up on a small pool; the rate it reached
    sizes the pool minted for the measured part (1.5 * rate * seconds, at most ``code_pool``).
    """
    if not consumes_input(flow):
        operation = await build_operation(side, flow, concurrency, 0)
        if options.warmup > 0:
            await drive(operation, concurrency, options.warmup)
        return operation
    warm = await build_operation(side, flow, concurrency, max(4 * concurrency, 200))
    rate = 100.0
    if options.warmup > 0:
        warmed = await drive(warm, concurrency, options.warmup)
        rate = warmed.ok / max(warmed.elapsed, 1e-3)
    needed = math.ceil(rate * seconds * 1.5) + 4 * concurrency
    if options.max_requests is not None:
        needed = min(needed, options.max_requests + concurrency)
    return await build_operation(side, flow, concurrency, min(needed, options.code_pool))


async def timed_cell(options: Options, side: Side, flow: str, concurrency: int, workspace: Workspace,
                     direct: redis.Redis) -> dict[str, Any]:
    operation = await warmed_operation(options, side, flow, concurrency, options.duration)
    server_cpu, loadgen_cpu, redis_cpu = side.server.cpu_seconds(), _loadgen_cpu(), redis_cpu_seconds(direct)
    stats_before = commandstats(direct)
    audit_before = _audit_size(direct, workspace.gateway_prefix) if side.key == "gateway" else 0
    samples = await drive(operation, concurrency, options.duration, options.max_requests)
    elapsed = max(samples.elapsed, 1e-9)
    stats = delta(commandstats(direct), stats_before)
    cell: dict[str, Any] = {"flow": flow, "target": side.key, "server": side.name, "concurrency": concurrency,
                            **samples.summary()}
    n = max(samples.ok, 1)
    cell["server_cpu_pct"] = round(100 * (side.server.cpu_seconds() - server_cpu) / elapsed, 1)
    cell["loadgen_cpu_pct"] = round(100 * (_loadgen_cpu() - loadgen_cpu) / elapsed, 1)
    cell["redis_cpu_pct"] = round(100 * (redis_cpu_seconds(direct) - redis_cpu) / elapsed, 1)
    cell["redis_commandstats_per_request"] = round(sum(stats.values()) / n, 2)
    cell["redis_commandstats_top"] = {k: round(v / n, 2) for k, v in stats.most_common(8)}
    if side.key == "gateway":
        appended = _audit_size(direct, workspace.gateway_prefix) - audit_before
        cell["audit_events_per_request"] = round(appended / n, 2)
    return cell


def _print_cell(cell: dict[str, Any]) -> None:
    exhausted = " (pool exhausted)" if cell["pool_exhausted"] else ""
    errors = f", {cell['errors']} errors: {cell['error_examples'][:1]}" if cell["errors"] else ""
    print(f"  {cell['flow']:<13} c={cell['concurrency']:<3} {cell['server']:<14} {cell['rps']:>8.1f}/s "
          f"p50 {cell['p50_ms']} p95 {cell['p95_ms']} p99 {cell['p99_ms']} ms "
          f"(cpu server {cell['server_cpu_pct']}%, loadgen {cell['loadgen_cpu_pct']}%)"
          f"{exhausted}{errors}", flush=True)


async def timed_phase(options: Options, workspace: Workspace, ports: Ports) -> dict[str, Any]:
    direct = redis.Redis.from_url(options.redis_url)
    connections = max(options.concurrency) + MINTING_BROWSERS + 8
    http = new_http_client(connections)
    result: dict[str, Any] = {"cells": [], "rss": {}, "servers": {}}
    try:
        async with running_servers(options, workspace, ports) as servers:
            sides = make_sides(workspace, servers, http)
            for side in sides:
                await prepare_side(side)
                result["servers"][side.key] = side.server.description
            result["rss"]["start"] = {s.key: s.server.rss() for s in sides}
            cell_number = 0
            for flow in options.flows:
                for concurrency in options.concurrency:
                    order = sides if cell_number % 2 == 0 else list(reversed(sides))
                    cell_number += 1
                    for side in order:
                        if not applies(flow, side):
                            continue
                        cell = await timed_cell(options, side, flow, concurrency, workspace, direct)
                        _print_cell(cell)
                        result["cells"].append(cell)
            result["rss"]["end"] = {s.key: s.server.rss() for s in sides}
            gateway = next((s for s in sides if s.key == "gateway"), None)
            if options.soak > 0 and gateway is not None:
                result["soak"] = await soak(options, gateway)
    finally:
        await http.aclose()
        direct.close()
    return result


async def soak(options: Options, side: Side) -> dict[str, Any]:
    """A longer mixed load (sign-ins, refresh, userinfo, introspection) with RSS samples."""
    print(f"  soak: {options.soak:.0f} s at concurrency {options.soak_concurrency} on the gateway",
          flush=True)
    operations = [await build_operation(side, flow, options.soak_concurrency, 0)
                  for flow in ("userinfo", "introspect", "refresh", "userinfo", "introspect", "refresh")]
    operations.append(await build_operation(side, "login", options.soak_concurrency, 0))
    turn = itertools.count()

    async def mixed(number: int) -> None:
        await operations[next(turn) % len(operations)](number)

    rss_samples: list[dict[str, Any]] = []
    began = time.monotonic()

    def rss_sample() -> dict[str, Any]:
        sizes = {str(pid): round(rss / 2**20, 1) for pid, rss in side.server.rss().items()}
        return {"t_s": round(time.monotonic() - began, 1), "rss_mib": sizes}

    async def sample() -> None:
        while True:
            rss_samples.append(rss_sample())
            await asyncio.sleep(min(10.0, max(1.0, options.soak / 20)))

    sampler = asyncio.ensure_future(sample())
    try:
        samples = await drive(mixed, options.soak_concurrency, options.soak)
    finally:
        sampler.cancel()
    rss_samples.append(rss_sample())
    return {"seconds": options.soak, "concurrency": options.soak_concurrency, **samples.summary(),
            "rss_samples": rss_samples}


# -- everything -------------------------------------------------------------------------------


async def run_all(options: Options, workspace: Workspace, progress: Callable[[str], None]) -> dict[str, Any]:
    ports = Ports(free_port(), free_port())
    results: dict[str, Any] = {}
    if options.accounting:
        progress("phase 1: Redis accounting through the counting proxy (sequential requests)")
        results["accounting"] = await accounting_phase(options, workspace, ports)
    progress("phase 2: timed cells")
    results.update(await timed_phase(options, workspace, ports))
    if options.audit_seconds > 0:
        progress("phase 3: audit appends (servers stopped)")
        results["audit"] = measure_audit(options.redis_url, workspace.audit_prefix, options.audit_seconds)
    return results
