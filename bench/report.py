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
        checks.append({"target": f"ratio gateway/oidc-provider ≥ {goal} — {row['flow']} at c={row['concurrency']}",
                       "measured": row["ratio"], "met": row["ratio"] >= goal})
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
        first, last = soak["rss_samples"][0]["rss_mib"], soak["rss_samples"][-1]["rss_mib"]
        growth = sum(last.values()) - sum(first.values())
        checks.append({"target": f"worker RSS flat over the soak ({soak['seconds']:.0f} s)",
                       "measured": f"{sum(first.values()):.1f} → {sum(last.values()):.1f} MiB",
                       "met": growth <= 0.05 * max(sum(first.values()), 1)})
    return checks


def _audit_per_request(results: dict[str, Any], flow: str) -> float:
    values = [c.get("audit_events_per_request", 0) for c in results.get("cells", [])
              if c["flow"] == flow and c["target"] == "gateway"]
    return max(values, default=0.0)


def _by_command(entry: dict[str, Any]) -> str:
    return ", ".join(f"{name} {count:g}" for name, count in entry.get("by_command", {}).items()) or "–"


def markdown(results: dict[str, Any]) -> str:  # noqa: C901 - one section after another
    run, machine = results["run"], results["machine"]
    lines = [f"# Consent Gateway vs node oidc-provider — {run['started']}", ""]
    if run.get("note"):
        lines += [f"> **{run['note']}**", ""]
    lines += [
        f"Machine: {machine['nproc']} × {machine['cpu_model']}, {machine['memory_gib']} GiB, load average at "
        f"start {machine['load_average_at_start']}; Redis {machine['redis_version']}; Python {machine['python']} "
        f"(uvicorn {machine['uvicorn']}, uvloop {'yes' if machine['uvloop_installed'] else 'no'}, httptools "
        f"{'yes' if machine['httptools_installed'] else 'no'}); node {machine['node']}, oidc-provider "
        f"{machine['oidc_provider']}; checkout {machine['git_commit']}"
        f"{' with uncommitted gateway/ changes' if machine['gateway_changes_uncommitted'] else ''}.",
        "",
        f"Servers: gateway = {results.get('servers', {}).get('gateway', '–')}; "
        f"peer = {results.get('servers', {}).get('peer', '–')}. Cells: {run['duration_s']} s each after "
        f"{run['warmup_s']} s warm-up, concurrency {run['concurrency']}, closed loop (each virtual client "
        "sends its next request when the last one is answered), one asyncio load generator on the same machine.",
        "",
        "## Throughput and latency",
        "",
        "Requests/s (sign-ins/s for `login`) and latency in ms; ratio = gateway / oidc-provider.",
        "",
        "| flow | c | gateway /s | p50 | p95 | p99 | oidc-provider /s | p50 | p95 | p99 | ratio |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in ratios(results):
        gateway = _cell(results, row["flow"], "gateway", row["concurrency"]) or {}
        peer = _cell(results, PEER_EQUIVALENT.get(row["flow"], row["flow"]), "peer", row["concurrency"]) or {}
        peer_note = " (plain)" if row["flow"] in PEER_EQUIVALENT and peer else ""
        lines.append(
            f"| {row['flow']} | {row['concurrency']} | {_fmt(gateway.get('rps'))} | {_fmt(gateway.get('p50_ms'))} | "
            f"{_fmt(gateway.get('p95_ms'))} | {_fmt(gateway.get('p99_ms'))} | {_fmt(peer.get('rps'))}{peer_note} | "
            f"{_fmt(peer.get('p50_ms'))} | {_fmt(peer.get('p95_ms'))} | {_fmt(peer.get('p99_ms'))} | "
            f"{_fmt(row['ratio'], 2)} |")
    lines += ["", "Flows: " + "; ".join(f"`{k}` {v}" for k, v in FLOWS.items()) + ".", ""]

    lines += ["## CPU and errors per cell", "",
              "CPU % of one core over the cell (server: all its processes; Redis: the whole shared server). "
              "A load generator near 100 % means the client, not the server, set the pace.", "",
              "| flow | c | server | req | errors | server CPU % | load generator CPU % | Redis CPU % | "
              "Redis cmds/req (commandstats, noisy) | audit events/req |",
              "|---|--:|---|--:|--:|--:|--:|--:|--:|--:|"]
    for cell in results.get("cells", []):
        lines.append(
            f"| {cell['flow']} | {cell['concurrency']} | {cell['server']} | {cell['requests']:,} | {cell['errors']} | "
            f"{_fmt(cell['server_cpu_pct'])} | {_fmt(cell['loadgen_cpu_pct'])} | {_fmt(cell['redis_cpu_pct'])} | "
            f"{_fmt(cell['redis_commandstats_per_request'], 2)} | {_fmt(cell.get('audit_events_per_request'), 2)} |")
    lines.append("")

    accounting = results.get("accounting")
    if accounting:
        lines += ["## Redis per request (exact: counting proxy, sequential requests)", "",
                  f"{accounting['requests_per_flow']} requests per flow through the counting relay; a round trip "
                  "is one write after a read on a connection (a pipeline or MULTI/EXEC sent at once is one); "
                  "EVALSHA counts as one command (its Lua body's commands are not seen).", "",
                  "| flow | gateway round trips | gateway commands | gateway by command | oidc-provider round trips "
                  "| oidc-provider commands | oidc-provider by command |",
                  "|---|--:|--:|---|--:|--:|---|"]
        for flow, entries in accounting["flows"].items():
            gateway, peer = entries.get("gateway", {}), entries.get("peer", {})
            lines.append(f"| {flow} | {_fmt(gateway.get('round_trips'), 2)} | {_fmt(gateway.get('commands'), 2)} | "
                         f"{_by_command(gateway)} | {_fmt(peer.get('round_trips'), 2)} | "
                         f"{_fmt(peer.get('commands'), 2)} | {_by_command(peer)} |")
        lines.append("")
        for side, steps in accounting.get("login_steps", {}).items():
            name = "gateway" if side == "gateway" else "oidc-provider"
            lines += [f"Full sign-in, per HTTP step ({name}):", "",
                      "| step | round trips | commands | by command |", "|---|--:|--:|---|"]
            for label, entry in steps.items():
                lines.append(f"| `{label}` | {_fmt(entry['round_trips'], 2)} | {_fmt(entry['commands'], 2)} | "
                             f"{_by_command(entry)} |")
            lines.append("")
        memory = accounting.get("memory_per_person", {})
        if memory:
            lines += ["## Redis bytes per person", "",
                      "`MEMORY USAGE … SAMPLES 0` right after a fresh sign-in and code exchange at one shop.", "",
                      "| server | profile | consent | tokens | total (audit and session excluded) | session |",
                      "|---|--:|--:|--:|--:|--:|"]
            for side, entry in memory.items():
                b = entry["bytes"]
                lines.append(f"| {'gateway' if side == 'gateway' else 'oidc-provider'} | {b.get('profile', 0):,} | "
                             f"{b.get('consent', 0):,} | {b.get('tokens', 0):,} | "
                             f"{entry['total_bytes_excluding_session']:,} | {b.get('session', 0):,} |")
            lines += [""] + [f"- {('gateway' if s == 'gateway' else 'oidc-provider')}: {e['note']}"
                             for s, e in memory.items()] + [""]

    audit = results.get("audit")
    if audit:
        lines += ["## Audit", ""]
        if audit.get("available"):
            lines.append(f"Appends through `AuditService.record`: {audit['appends_per_s']:,} /s (p50 {audit['p50_ms']} "
                         f"ms, p99 {audit['p99_ms']} ms, {audit['events']:,} events); "
                         f"{audit['bytes_per_event']} Redis bytes per event. {audit['note']}.")
        else:
            lines.append(str(audit.get("note")))
        events = {c["flow"]: c.get("audit_events_per_request", 0) for c in results.get("cells", [])
                  if c["target"] == "gateway"}
        if events and not any(events.values()):
            lines.append("")
            lines.append("Audit events written by the gateway's flows during the timed cells: **none** "
                         "(`{audit}:size` did not move) — the flows do not append audit events yet.")
        lines.append("")

    rss = results.get("rss", {})
    if rss:
        lines += ["## Worker RSS", "", "| server | start (MiB) | end (MiB) |", "|---|---|---|"]
        for side in rss.get("start", {}):
            start = ", ".join(f"{v / 2**20:.1f}" for v in rss["start"][side].values())
            end = ", ".join(f"{v / 2**20:.1f}" for v in rss.get("end", {}).get(side, {}).values())
            lines.append(f"| {'gateway' if side == 'gateway' else 'oidc-provider'} | {start} | {end} |")
        lines.append("")
    soak = results.get("soak")
    if soak:
        lines += [f"Soak: {soak['seconds']:.0f} s mixed load at c={soak['concurrency']}: {soak['rps']} req/s, "
                  f"p99 {soak['p99_ms']} ms, {soak['errors']} errors; gateway RSS samples (MiB): "
                  + "; ".join(f"{s['t_s']} s: {list(s['rss_mib'].values())}" for s in soak["rss_samples"]), ""]

    checks = target_checks(results)
    if checks:
        lines += ["## Issue 9 targets", "", "| target | measured | met |", "|---|---|---|"]
        lines += [f"| {c['target']} | {c['measured']} | {'yes' if c['met'] else '**no**'} |" for c in checks]
        lines.append("")
    return "\n".join(lines)


def write(results: dict[str, Any], out_dir: Path, name: str = "latest") -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {**results, "ratios": ratios(results), "targets": target_checks(results)}
    json_path, md_path = out_dir / f"{name}.json", out_dir / f"{name}.md"
    json_path.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    md_path.write_text(markdown(results), encoding="utf-8")
    return md_path, json_path
