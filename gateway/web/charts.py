"""Server-side SVG bar charts for the compliance console (no script, CSP-friendly).

Presentation attributes only (``fill=``), never inline CSS, so the strict
Content-Security-Policy (``style-src 'self'``) holds.
"""

from __future__ import annotations

from collections import Counter
from html import escape

PALETTE = ("#0b5cad", "#d9480f", "#2b8a3e", "#862e9c", "#e67700", "#0c8599", "#c2255c", "#5c940d")
WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 640, 220, 36, 28, 10


def stacked_bars(title: str, days: list[str], counts: Counter[tuple[str, str]]) -> str:
    """Bars per day, stacked by series; ``counts[(day, series)]``."""
    series = sorted({name for _, name in counts})
    totals = [sum(counts[(day, name)] for name in series) for day in days]
    peak = max(totals, default=0) or 1
    plot_h = HEIGHT - BOTTOM - TOP
    slot = (WIDTH - LEFT) / max(len(days), 1)
    view_height = HEIGHT + 18 * len(series)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {WIDTH} {view_height}" '
             f'width="100%" aria-label="{escape(title)}"><title>{escape(title)}</title>',
             f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH}" y2="{TOP + plot_h}" stroke="#888"/>',
             f'<text x="{LEFT - 4}" y="{TOP + 8}" text-anchor="end" font-size="10">{peak}</text>',
             f'<text x="{LEFT - 4}" y="{TOP + plot_h}" text-anchor="end" font-size="10">0</text>']
    for i, day in enumerate(days):
        x = LEFT + i * slot + slot * 0.15
        y: float = TOP + plot_h
        for j, name in enumerate(series):
            value = counts[(day, name)]
            if not value:
                continue
            h = plot_h * value / peak
            y -= h
            parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{slot * 0.7:.1f}" height="{h:.1f}" '
                         f'fill="{PALETTE[j % len(PALETTE)]}"><title>{escape(day)} {escape(name)}: {value}'
                         f'</title></rect>')
        if len(days) <= 16 or i % 2 == 0:
            parts.append(f'<text x="{x + slot * 0.35:.1f}" y="{HEIGHT - 12}" text-anchor="middle" '
                         f'font-size="9">{escape(day[5:])}</text>')
    for j, name in enumerate(series):
        y = HEIGHT + 4 + 18 * j
        parts.append(f'<rect x="{LEFT}" y="{y}" width="12" height="12" fill="{PALETTE[j % len(PALETTE)]}"/>'
                     f'<text x="{LEFT + 18}" y="{y + 10}" font-size="11">{escape(name)} '
                     f'({sum(counts[(d, name)] for d in days)})</text>')
    parts.append("</svg>")
    return "".join(parts)
