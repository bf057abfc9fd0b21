"""``python -m bench --profile FLOW``: a py-spy profile of the gateway while one flow runs.

The gateway starts as in the timed phase (``gateway serve`` by default), the flow's inputs are
minted, a short warm-up runs, then ``py-spy record`` attaches to the serving process (with
``--subprocesses`` when uvicorn has workers) for a fixed time while the load runs. py-spy writes
collapsed stacks; this module turns them into ``bench/results/<FLOW>.svg`` (a flame graph),
``<FLOW>.txt`` (top frames by self and inclusive time, and self time per package) and
``<FLOW>.json``. Idle threads are not sampled (py-spy's default), so the profile shows where
the CPU goes, not where requests wait.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from bench.browser import new_http_client
from bench.flamegraph import parse_collapsed, render_svg, summarise
from bench.loadgen import drive
from bench.run import FLOWS, Options, Ports, make_sides, prepare_side, running_servers, warmed_operation
from bench.servers import free_port
from bench.workspace import REPO, Workspace


def py_spy() -> str:
    candidate = Path(sys.executable).parent / "py-spy"
    found = str(candidate) if candidate.exists() else shutil.which("py-spy")
    if not found:
        raise RuntimeError("py-spy is not installed: pip install py-spy")
    return found


async def profile_flow(options: Options, workspace: Workspace, flow: str, *, seconds: float, concurrency: int,
                       rate: int, gil: bool, out_dir: Path) -> dict[str, Any]:
    if flow not in FLOWS:
        raise ValueError(f"unknown flow {flow!r}; one of {', '.join(FLOWS)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    collapsed = out_dir / f"{flow}.collapsed"
    options.targets = ["gateway"]
    http = new_http_client(concurrency + 16)
    try:
        async with running_servers(options, workspace, Ports(free_port(), free_port())) as servers:
            side = make_sides(workspace, servers, http)[0]
            await prepare_side(side)
            options.warmup = max(options.warmup, 2.0)
            operation = await warmed_operation(options, side, flow, concurrency, seconds + 1.0)
            command = [py_spy(), "record", "--pid", str(side.server.process.pid),
                       "--duration", str(int(seconds)), "--rate", str(rate), "--format", "raw",
                       "--full-filenames", "-o", str(collapsed)]
            if options.workers > 1 or options.runner != "serve":
                command.append("--subprocesses")
            if gil:
                command.append("--gil")  # only the thread holding the GIL: where the CPU goes
            recorder = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE,
                                                            stderr=asyncio.subprocess.STDOUT)
            try:
                await asyncio.sleep(1.0)  # attached before the measured load starts
                samples = await drive(operation, concurrency, seconds + 1.0)
                output, _ = await asyncio.wait_for(recorder.communicate(), timeout=120)
            finally:
                if recorder.returncode is None:
                    recorder.kill()
                    await recorder.wait()
            if recorder.returncode != 0 or not collapsed.exists():
                raise RuntimeError(f"py-spy failed: {output.decode(errors='replace')[-2000:]}")
    finally:
        await http.aclose()

    stacks = parse_collapsed(collapsed.read_text(encoding="utf-8"), repo=str(REPO))
    summary = summarise(stacks)
    load = samples.summary()
    title = (f"gateway profile: {flow} at concurrency {concurrency}, {seconds:.0f} s, "
             f"{load['rps']} req/s, p50 {load['p50_ms']} ms ({side.server.description})")
    (out_dir / f"{flow}.svg").write_text(render_svg(stacks, title), encoding="utf-8")
    (out_dir / f"{flow}.txt").write_text(summary.as_text(title), encoding="utf-8")
    result = {"flow": flow, "title": title, "load": load, "profile": summary.as_dict()}
    (out_dir / f"{flow}.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(summary.as_text(title))
    print(f"wrote {out_dir / f'{flow}.svg'}, {flow}.txt, {flow}.json and the raw stacks {collapsed.name}")
    return result
