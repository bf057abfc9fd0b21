"""The results as a Markdown report and a JSON file (bench/results/latest.md, latest.json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.run import FLOWS, PEER_EQUIVALENT

RATIO_TARGETS = {"login": 0.5, "token": 1.0, "refresh": 1.0, "userinfo": 1.0, "userinfo_jwe": 1.0,
                 "introspect": 1.0}
P99_TARGET_MS, P99_FLOWS, P99_CONCURRENCY = 50.0, ("token", "userinfo", "userinfo_jwe", "introspect"), 64
ROUND_TRIP_TARGETS = {"userinfo": 3, "userinfo_jwe": 3, "introspect": 3, "token": 5}


def _cell(results: dict[str, Any], flow: str, target: str, concurrency: int) -> dict[str, Any] | None:
    for cell in results.get("cells", []):
        if cell["flow"] == flow and cell["target"] == target and cell["concurrency"] == concurrency:
            return dict(cell)
    return None


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def ratios(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    seen = sorted({(c["flow"], c["concurrency"]) for c in results.get("cells", [])},
                  key=lambda fc: (list(FLOWS).index(fc[0]), fc[1]))
    for flow, concurrency in seen:
        gateway = _cell(results, flow, "gateway", concurrency)
        peer = _cell(results, PEER_EQUIVALENT.get(flow, flow), "peer", concurrency)
        ratio = None
        if gateway and peer and peer["rps"]:
            ratio = round(gateway["rps"] / peer["rps"], 2)
        rows.append({"flow": flow, "concurrency": concurrency, "ratio": ratio,
                     "gateway_rps": gateway["rps"] if gateway else None,
                     "peer_rps": peer["rps"] if peer else None})
    return rows


def target_checks(results: dict[str, Any]) -> list[dict[str, Any]]:
    checks: list[dict[str, Any]] = []
    for row in ratios(results):
        goal = RATIO_TARGETS.get(row["flow"])
        if goal is None or row["ratio"] is None:
            continue
        name = f"ratio gateway/oidc-provider ≥ {goal} — {row['flow']} at c={row['concurrency']}"
        checks.append({"target": name, "measured": row["ratio"], "met": row["ratio"] >= goal})
    for flow in P99_FLOWS:
        cell = _cell(results, flow, "gateway", P99_CONCURRENCY)
        if cell and cell["p99_ms"] is not None:
            checks.append({"target": f"p99 < {P99_TARGET_MS:.0f} ms at c={P99_CONCURRENCY} — {flow}",
                           "measured": f"{cell['p99_ms']} ms", "met": cell["p99_ms"] < P99_TARGET_MS})
    flows = results.get("accounting", {}).get("flows", {})
    for flow, limit in ROUND_TRIP_TARGETS.items():
        entry = flows.get(flow, {}).get("gateway")
        if entry:
            audit = _audit_per_request(results, flow)
            suffix = "" if audit else " (no audit append happens yet: the target counts one)"
            checks.append({"target": f"Redis round trips ≤ {limit} incl. audit — {flow}",
                           "measured": f"{entry['round_trips']}{suffix}",
                           "met": entry["round_trips"] <= limit and bool(audit)})
    soak = results.get("soak")
    if soak and len(soak.get("rss_samples", [])) >= 2:
        # The first tenth of the soak fills caches and pools; flat means no growth after it.
        settled = next((s for s in soak["rss_samples"] if s["t_s"] >= 0.1 * soak["seconds"]),
                       soak["rss_samples"][0])
        first, last = sum(settled["rss_mib"].values()), sum(soak["rss_samples"][-1]["rss_mib"].values())
        checks.append({"target": f"worker RSS flat over the soak ({soak['seconds']:.0f} s; ≤ 5 % growth "
                                 f"after the first tenth)",
                       "measured": f"{first:.1f} MiB at {settled['t_s']} s → {last:.1f} MiB at the end",
                       "met": last - first <= 0.05 * max(first, 1)})
    return checks


def _audit_per_request(results: dict[str, Any], flow: str) -> float:
    values = [c.get("audit_events_per_request", 0) for c in results.get("cells", [])
              if c["flow"] == flow and c["target"] == "gateway"]
    return max(values, default=0.0)


def _by_command(entry: dict[str, Any]) -> str:
    return ", ".join(f"{name} {count:g}" for name, count in entry.get("by_command", {}).items()) or "–"


def _server_name(side: str) -> str:
    return "gateway" if side == "gateway" else "oidc-provider"


def _row(*cells: Any) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _header(results: dict[str, Any]) -> list[str]:
    run, machine = results["run"], results["machine"]
    lines = [f"# Consent Gateway vs node oidc-provider — {run['started']}", ""]
    if run.get("note"):
        lines += [f"> **{run['note']}**", ""]
    uncommitted = " with uncommitted gateway/ changes" if machine["gateway_changes_uncommitted"] else ""
    servers = results.get("servers", {})
    lines += [
        f"Machine: {machine['nproc']} × {machine['cpu_model']}, {machine['memory_gib']} GiB, "
        f"load average at start {machine['load_average_at_start']}; Redis {machine['redis_version']}; "
        f"Python {machine['python']} (uvicorn {machine['uvicorn']}, "
        f"uvloop {'yes' if machine['uvloop_installed'] else 'no'}, "
        f"httptools {'yes' if machine['httptools_installed'] else 'no'}); node {machine['node']}, "
        f"oidc-provider {machine['oidc_provider']}; checkout {machine['git_commit']}{uncommitted}.",
        "",
        f"Servers: gateway = {servers.get('gateway', '–')}; peer = {servers.get('peer', '–')}. "
        f"Cells: {run['duration_s']} s each after {run['warmup_s']} s warm-up, concurrency "
        f"{run['concurrency']}, closed loop (each virtual client sends its next request when the last "
        "one is answered), one asyncio load generator on the same machine. "
        f"Command: `{run.get('command', 'python -m bench')}`.",
        "",
    ]
    return lines


def _throughput(results: dict[str, Any]) -> list[str]:
    lines = ["## Throughput and latency", "",
             "Requests/s (sign-ins/s for `login`) and latency in ms; ratio = gateway / oidc-provider.", "",
             "| flow | c | gateway /s | p50 | p95 | p99 | oidc-provider /s | p50 | p95 | p99 | ratio |",
             "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for row in ratios(results):
        flow, concurrency = row["flow"], row["concurrency"]
        gateway = _cell(results, flow, "gateway", concurrency) or {}
        peer = _cell(results, PEER_EQUIVALENT.get(flow, flow), "peer", concurrency) or {}
        plain = " (plain)" if flow in PEER_EQUIVALENT and peer else ""
        lines.append(_row(
            flow, concurrency, _fmt(gateway.get("rps")), _fmt(gateway.get("p50_ms")),
            _fmt(gateway.get("p95_ms")), _fmt(gateway.get("p99_ms")), _fmt(peer.get("rps")) + plain,
            _fmt(peer.get("p50_ms")), _fmt(peer.get("p95_ms")), _fmt(peer.get("p99_ms")),
            _fmt(row["ratio"], 2)))
    lines += ["", "Flows: " + "; ".join(f"`{k}` {v}" for k, v in FLOWS.items()) + ".", ""]
    return lines


def _cpu(results: dict[str, Any]) -> list[str]:
    lines = ["## CPU and errors per cell", "",
             "CPU % of one core over the cell (server: all its processes; Redis: the whole shared "
             "server). A load generator near 100 % means the client, not the server, set the pace. "
             "Redis commands per request come from `INFO commandstats` deltas: they include the "
             "commands Lua scripts run, and every other client of the shared server (a noisy upper "
             "bound).", "",
             "| flow | c | server | requests | errors | server CPU % | load generator CPU % | Redis CPU % "
             "| Redis cmds/req (noisy) | audit events/req |",
             "|---|--:|---|--:|--:|--:|--:|--:|--:|--:|"]
    for cell in results.get("cells", []):
        lines.append(_row(
            cell["flow"], cell["concurrency"], cell["server"], f"{cell['requests']:,}", cell["errors"],
            _fmt(cell["server_cpu_pct"]), _fmt(cell["loadgen_cpu_pct"]), _fmt(cell["redis_cpu_pct"]),
            _fmt(cell["redis_commandstats_per_request"], 2), _fmt(cell.get("audit_events_per_request"), 2)))
    errors = [c for c in results.get("cells", []) if c["errors"]]
    if errors:
        lines += ["", "Errors: " + "; ".join(
            f"{c['flow']} c={c['concurrency']} {c['server']}: {c['error_examples']}" for c in errors)]
    return [*lines, ""]


def _accounting(accounting: dict[str, Any]) -> list[str]:
    lines = ["## Redis per request (exact: counting proxy, sequential requests)", "",
             f"{accounting['requests_per_flow']} requests per flow through the counting relay. A round trip "
             "is one exchange on a connection: a pipeline or MULTI/EXEC sent at once is one; EVALSHA is "
             "one command (the commands its Lua body runs are not seen). Round trips the idle servers "
             "make on their own were learned first and are left out: "
             + (", ".join(f"`{b}`" for b in accounting.get("background", [])) or "none") + ".", "",
             "| flow | gateway round trips | gateway commands | gateway by command "
             "| oidc-provider round trips | oidc-provider commands | oidc-provider by command |",
             "|---|--:|--:|---|--:|--:|---|"]
    for flow, entries in accounting["flows"].items():
        gateway, peer = entries.get("gateway", {}), entries.get("peer", {})
        lines.append(_row(flow, _fmt(gateway.get("round_trips"), 2), _fmt(gateway.get("commands"), 2),
                          _by_command(gateway), _fmt(peer.get("round_trips"), 2),
                          _fmt(peer.get("commands"), 2), _by_command(peer)))
    lines.append("")
    for side, steps in accounting.get("login_steps", {}).items():
        lines += [f"Full sign-in, per HTTP step ({_server_name(side)}):", "",
                  "| step | round trips | commands | by command |", "|---|--:|--:|---|"]
        for label, entry in steps.items():
            lines.append(_row(f"`{label}`", _fmt(entry["round_trips"], 2), _fmt(entry["commands"], 2),
                              _by_command(entry)))
        lines.append("")
    memory = accounting.get("memory_per_person", {})
    if memory:
        lines += ["## Redis bytes per person", "",
                  "`MEMORY USAGE … SAMPLES 0` right after a fresh sign-in and code exchange at one shop.", "",
                  "| server | profile | consent | tokens | total (audit and session excluded) | session |",
                  "|---|--:|--:|--:|--:|--:|"]
        for side, entry in memory.items():
            b = entry["bytes"]
            lines.append(_row(_server_name(side), f"{b.get('profile', 0):,}", f"{b.get('consent', 0):,}",
                              f"{b.get('tokens', 0):,}", f"{entry['total_bytes_excluding_session']:,}",
                              f"{b.get('session', 0):,}"))
        lines += ["", *(f"- {_server_name(s)}: {e['note']}" for s, e in memory.items()), ""]
    return lines


def _audit(results: dict[str, Any], audit: dict[str, Any]) -> list[str]:
    lines = ["## Audit", ""]
    if audit.get("available"):
        lines.append(f"Appends through `AuditService.record`: {audit['appends_per_s']:,} /s "
                     f"(p50 {audit['p50_ms']} ms, p99 {audit['p99_ms']} ms, {audit['events']:,} events); "
                     f"{audit['bytes_per_event']} Redis bytes per event. {audit['note']}.")
    else:
        lines.append(str(audit.get("note")))
    events = {c["flow"]: c.get("audit_events_per_request", 0) for c in results.get("cells", [])
              if c["target"] == "gateway"}
    if events:
        lines += ["", "Audit events the gateway appended per request in the timed cells: "
                  + ", ".join(f"{flow} {value:g}" for flow, value in events.items()) + "."]
    return [*lines, ""]


def _memory_over_time(results: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    rss = results.get("rss", {})
    if rss:
        lines += ["## Worker RSS", "", "| server | start (MiB) | end (MiB) |", "|---|---|---|"]
        for side in rss.get("start", {}):
            start = ", ".join(f"{v / 2**20:.1f}" for v in rss["start"][side].values())
            end = ", ".join(f"{v / 2**20:.1f}" for v in rss.get("end", {}).get(side, {}).values())
            lines.append(_row(_server_name(side), start, end))
        lines.append("")
    soak = results.get("soak")
    if soak:
        samples = "; ".join(f"{s['t_s']} s: {list(s['rss_mib'].values())}" for s in soak["rss_samples"])
        lines += [f"Soak: {soak['seconds']:.0f} s mixed load at c={soak['concurrency']}: "
                  f"{soak['rps']} req/s, p99 {soak['p99_ms']} ms, {soak['errors']} errors; "
                  f"gateway RSS (MiB): {samples}", ""]
    return lines


def markdown(results: dict[str, Any]) -> str:
    lines = _header(results) + _throughput(results) + _cpu(results)
    if results.get("accounting"):
        lines += _accounting(results["accounting"])
    if results.get("audit"):
        lines += _audit(results, results["audit"])
    lines += _memory_over_time(results)
    checks = target_checks(results)
    if checks:
        lines += ["## Issue 9 targets", "", "| target | measured | met |", "|---|---|---|"]
        lines += [_row(c["target"], c["measured"], "yes" if c["met"] else "**no**") for c in checks]
        lines.append("")
    return "\n".join(lines)


def write(results: dict[str, Any], out_dir: Path, name: str = "latest") -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {**results, "ratios": ratios(results), "targets": target_checks(results)}
    json_path, md_path = out_dir / f"{name}.json", out_dir / f"{name}.md"
    json_path.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    md_path.write_text(markdown(results), encoding="utf-8")
    return md_path, json_path
