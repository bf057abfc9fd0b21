"""Collapsed stacks (``a;b;c 42`` per line, as py-spy's raw format) → summary and flame graph.

The SVG is a plain flame graph (root at the bottom, width = share of samples, a tooltip per
frame); it needs no script, so it opens in any browser or image viewer.
"""

from __future__ import annotations

import hashlib
import html
import re
from collections import Counter
from dataclasses import dataclass, field

_LINE_NUMBER = re.compile(r":\d+\)$")
_SITE = re.compile(r"^.*?/(?:site|dist)-packages/")
_PYTHON_LIB = re.compile(r"^.*/lib/python3\.\d+/")


def clean_frame(frame: str, repo: str = "") -> str:
    """``handle (/x/site-packages/starlette/routing.py:12)`` → ``handle (starlette/routing.py)``."""
    name, _, where = frame.partition(" (")
    where = _LINE_NUMBER.sub(")", f"({where}") if where else ""
    where = where[1:-1] if where.startswith("(") and where.endswith(")") else where
    if repo and where.startswith(repo):
        where = where[len(repo):].lstrip("/")
    where = _SITE.sub("", where)
    where = _PYTHON_LIB.sub("stdlib/", where)
    return f"{name} ({where})" if where else name


def parse_collapsed(text: str, repo: str = "") -> Counter[tuple[str, ...]]:
    stacks: Counter[tuple[str, ...]] = Counter()
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        stacks[tuple(clean_frame(f, repo) for f in stack.split(";"))] += int(count)
    return stacks


def package_of(frame: str) -> str:
    """The top-level package a frame's file belongs to (``gateway``, ``authlib``, ``stdlib/json``…)."""
    where = frame.rpartition(" (")[2].rstrip(")")
    if not where:
        return frame
    parts = where.split("/")
    if parts[0] == "stdlib" and len(parts) > 1:
        return "stdlib/" + parts[1].removesuffix(".py")
    return parts[0].removesuffix(".py")


#: Leaf frames of threads that wait for work: a worker thread on its queue, the event loop in
#: select, the audit checkpointer between polls. py-spy is meant to leave idle threads out, but
#: it cannot always tell (it did not in this container), so they are set apart here.
IDLE_LEAVES = frozenset({
    ("Condition.wait", "threading.py"), ("Event.wait", "threading.py"),
    ("EpollSelector.select", "selectors.py"), ("Thread.join", "threading.py"),
    ("Thread._wait_for_tstate_lock", "threading.py"),
})
#: A worker thread blocked on a Redis reply (synchronous client): latency, not CPU.
REDIS_WAIT_LEAVES = frozenset({("SocketBuffer._read_from_socket", "socket.py")})


def _function_and_file(frame: str) -> tuple[str, str]:
    name, _, where = frame.partition(" (")
    return name, where.rstrip(")").rpartition("/")[2]


def split_idle(stacks: Counter[tuple[str, ...]]) -> tuple[Counter[tuple[str, ...]], int, int]:
    """(busy stacks including Redis waits, idle samples, Redis-wait samples)."""
    busy: Counter[tuple[str, ...]] = Counter()
    idle = redis_wait = 0
    for stack, count in stacks.items():
        leaf = _function_and_file(stack[-1]) if stack else ("", "")
        if leaf in IDLE_LEAVES:
            idle += count
            continue
        if leaf in REDIS_WAIT_LEAVES:
            redis_wait += count
        busy[stack] += count
    return busy, idle, redis_wait


@dataclass(slots=True)
class ProfileSummary:
    total: int
    self_time: list[tuple[str, int]]
    inclusive: list[tuple[str, int]]
    by_package: list[tuple[str, int]]
    gateway_inclusive: list[tuple[str, int]] = field(default_factory=list)
    idle: int = 0
    redis_wait: int = 0

    def as_text(self, title: str, top: int = 25) -> str:
        def pct(n: int) -> str:
            return f"{100 * n / self.total:5.1f}%"

        everything = self.total + self.idle
        lines = [title,
                 f"{everything} samples: {self.idle} idle threads left out (worker threads waiting for work, "
                 f"the event loop in select); {self.total} busy, of which {self.redis_wait} "
                 f"({pct(self.redis_wait).strip()}) wait for a Redis reply.",
                 "Percentages below are of the busy samples (on CPU, waiting for the GIL, or for Redis).",
                 "", "self time by package (leaf frame's package):"]
        lines += [f"  {pct(n)}  {name}" for name, n in self.by_package[:15]]
        lines += ["", f"top {top} frames by self time:"]
        lines += [f"  {pct(n)}  {name}" for name, n in self.self_time[:top]]
        lines += ["", f"top {top} frames by inclusive time:"]
        lines += [f"  {pct(n)}  {name}" for name, n in self.inclusive[:top]]
        lines += ["", "gateway/ and bench-relevant frames by inclusive time:"]
        lines += [f"  {pct(n)}  {name}" for name, n in self.gateway_inclusive[:top]]
        return "\n".join(lines) + "\n"

    def as_dict(self, top: int = 25) -> dict[str, object]:
        def rows(items: list[tuple[str, int]]) -> list[dict[str, object]]:
            return [{"frame": name, "samples": n, "percent": round(100 * n / self.total, 1)}
                    for name, n in items[:top]]

        return {"busy_samples": self.total, "idle_samples": self.idle, "redis_wait_samples": self.redis_wait,
                "by_package": rows(self.by_package), "self": rows(self.self_time),
                "inclusive": rows(self.inclusive), "gateway_inclusive": rows(self.gateway_inclusive)}


def summarise(all_stacks: Counter[tuple[str, ...]]) -> ProfileSummary:
    stacks, idle, redis_wait = split_idle(all_stacks)
    total = sum(stacks.values()) or 1
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    for stack, count in stacks.items():
        if not stack:
            continue
        self_time[stack[-1]] += count
        packages[package_of(stack[-1])] += count
        for frame in set(stack):
            inclusive[frame] += count
    own = [(f, n) for f, n in inclusive.most_common() if "(gateway/" in f]
    return ProfileSummary(total, self_time.most_common(), inclusive.most_common(), packages.most_common(),
                          own, idle, redis_wait)


# -- SVG ---------------------------------------------------------------------------------


@dataclass(slots=True)
class _Node:
    name: str
    value: int = 0
    children: dict[str, _Node] = field(default_factory=dict)


def _tree(stacks: Counter[tuple[str, ...]]) -> _Node:
    root = _Node("all")
    for stack, count in stacks.items():
        root.value += count
        node = root
        for frame in stack:
            node = node.children.setdefault(frame, _Node(frame))
            node.value += count
    return root


def _colour(name: str) -> str:
    digest = hashlib.sha256(name.encode()).digest()
    if _function_and_file(name) in REDIS_WAIT_LEAVES:
        return "rgb(150,150,150)"  # waiting for Redis: grey
    if "(gateway/" in name:
        return f"rgb({60 + digest[0] % 60},{140 + digest[1] % 80},{200 + digest[2] % 55})"  # ours: blue
    return f"rgb({205 + digest[0] % 50},{80 + digest[1] % 130},{30 + digest[2] % 40})"  # others: warm


def render_svg(all_stacks: Counter[tuple[str, ...]], title: str, width: int = 1400, row: int = 17) -> str:
    """The busy stacks (idle threads left out, as in the summary) as a flame graph."""
    root = _tree(split_idle(all_stacks)[0])
    total = root.value or 1

    def depth(node: _Node) -> int:
        return 1 + max((depth(c) for c in node.children.values()), default=0)

    height = (depth(root) + 2) * row + 30
    scale = (width - 20) / total
    parts: list[str] = []

    def place(node: _Node, x: float, level: int) -> None:
        w = node.value * scale
        if w < 0.3:
            return
        y = height - (level + 1) * row - 10
        share = 100 * node.value / total
        label = html.escape(node.name)
        parts.append(
            f'<g><title>{label} — {node.value} samples, {share:.1f}%</title>'
            f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row - 1}" rx="2" '
            f'fill="{_colour(node.name)}"/>'
        )
        characters = int(w / 7)
        if characters >= 4:
            text = node.name if len(node.name) <= characters else node.name[: characters - 1] + "…"
            parts.append(f'<text x="{x + 3:.1f}" y="{y + row - 5}">{html.escape(text)}</text>')
        parts.append("</g>")
        offset = x
        for child in sorted(node.children.values(), key=lambda c: c.name):
            place(child, offset, level + 1)
            offset += child.value * scale

    place(root, 10.0, 0)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="monospace" font-size="11">'
        f'<rect width="100%" height="100%" fill="#fbfbf7"/>'
        f'<text x="10" y="20" font-size="14">{html.escape(title)} ({total} samples; '
        f'idle threads left out; gateway/ frames blue, Redis waits grey; hover for details)</text>'
        + "".join(parts) + "</svg>\n"
    )
