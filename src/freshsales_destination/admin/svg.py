"""The dashboard's chart, drawn on the server as SVG: a pure function of counts, no I/O.

One bar per bucket of time, stacked by outcome (delivered, retried, dead, filtered,
discarded), with the received count drawn over them as a line: the Delivery Overview's last
24 hours at a glance, readable without JavaScript. The SVG carries a title and a description
(``role="img"``) and each bar its counts as a ``<title>`` (a tooltip, read by screen readers).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape


@dataclass(frozen=True, slots=True)
class Series:
    """One stacked part of every bar (``values[i]`` belongs to bucket ``i``)."""

    name: str
    color: str
    values: Sequence[int]


@dataclass(frozen=True, slots=True)
class Chart:
    """What to draw: bucket start times (epoch seconds, oldest first), the stacked series
    (bottom first), and an optional line (``line.color`` its stroke)."""

    title: str
    starts: Sequence[float]
    bucket_seconds: int
    stacked: Sequence[Series]
    line: Series | None = None


WIDTH = 720
HEIGHT = 220
_LEFT = 44  # room for the y axis labels
_RIGHT = 8
_TOP = 12
_BOTTOM = 28  # room for the time labels


def nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 5 times a power of ten that is at least `value` (at least 1):
    the top of the y axis."""
    top = 1
    while True:
        for step in (1, 2, 5):
            if step * top >= value:
                return step * top
        top *= 10


def _label(start: float, bucket_seconds: int) -> str:
    moment = datetime.fromtimestamp(start, UTC)
    if bucket_seconds >= 6 * 3600:
        return moment.strftime("%d %b %H:%M")
    return moment.strftime("%H:%M")


def render(chart: Chart, *, width: int = WIDTH, height: int = HEIGHT, ident: str = "chart") -> str:
    """The chart as an SVG element (a string to embed in HTML as it is); `ident` prefixes the
    ids of its title and description (unique per page when it shows several charts).

    Raises ValueError when a series does not have one value per bucket or holds a negative
    count: a chart that silently drew the wrong bars would be worse than none."""
    count = len(chart.starts)
    series = [*chart.stacked, *([chart.line] if chart.line is not None else [])]
    for one in series:
        if len(one.values) != count:
            raise ValueError(
                f"series {one.name!r} has {len(one.values)} values for {count} buckets"
            )
        if any(value < 0 for value in one.values):
            raise ValueError(f"series {one.name!r} holds a negative count")
    totals = [sum(one.values[i] for one in chart.stacked) for i in range(count)]
    peak = max([*totals, *(chart.line.values if chart.line is not None else []), 0])
    top = nice_ceiling(peak)
    plot_w = width - _LEFT - _RIGHT
    plot_h = height - _TOP - _BOTTOM
    slot = plot_w / count if count else plot_w
    bar = max(slot * 0.8, 1.0)

    def y(value: float) -> float:
        return _TOP + plot_h - value / top * plot_h

    summary = ", ".join(
        f"{one.name} {sum(one.values)}" for one in series
    ) or "no data"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'aria-labelledby="{escape(ident)}-title {escape(ident)}-desc">',
        f'<title id="{escape(ident)}-title">{escape(chart.title)}</title>',
        f'<desc id="{escape(ident)}-desc">Totals: {escape(summary)}.</desc>',
    ]
    # The y axis: 0, half and the top, with grid lines.
    for value in (0, top // 2 if top >= 2 else None, top):
        if value is None:
            continue
        gy = y(value)
        parts.append(
            f'<line x1="{_LEFT}" y1="{gy:.1f}" x2="{width - _RIGHT}" y2="{gy:.1f}" '
            'stroke="#ddd" stroke-width="1"/>'
        )
        parts.append(
            f'<text x="{_LEFT - 6}" y="{gy + 4:.1f}" text-anchor="end" '
            f'font-size="11" fill="#555">{value}</text>'
        )
    # The bars, stacked bottom first.
    for i in range(count):
        x = _LEFT + i * slot + (slot - bar) / 2
        base = 0
        label = _label(chart.starts[i], chart.bucket_seconds)
        tip = escape(
            f"{label}: " + ", ".join(f"{one.name} {one.values[i]}" for one in series)
        )
        parts.append(f'<g class="bucket"><title>{tip}</title>')
        for one in chart.stacked:
            value = one.values[i]
            if value:
                top_y = y(base + value)
                parts.append(
                    f'<rect class="{escape(one.name)}" x="{x:.1f}" y="{top_y:.1f}" '
                    f'width="{bar:.1f}" height="{y(base) - top_y:.1f}" '
                    f'fill="{escape(one.color)}"/>'
                )
                base += value
        # An invisible full-height rectangle so the whole slot shows the tooltip.
        parts.append(
            f'<rect x="{_LEFT + i * slot:.1f}" y="{_TOP}" width="{slot:.1f}" '
            f'height="{plot_h}" fill="transparent"/>'
        )
        parts.append("</g>")
    if chart.line is not None and count:
        points = " ".join(
            f"{_LEFT + (i + 0.5) * slot:.1f},{y(v):.1f}" for i, v in enumerate(chart.line.values)
        )
        parts.append(
            f'<polyline class="{escape(chart.line.name)}" points="{points}" fill="none" '
            f'stroke="{escape(chart.line.color)}" stroke-width="2"/>'
        )
    # Time labels: about six along the axis.
    every = max(1, round(count / 6)) if count else 1
    for i in range(0, count, every):
        x = _LEFT + (i + 0.5) * slot
        parts.append(
            f'<text x="{x:.1f}" y="{height - 8}" text-anchor="middle" font-size="11" '
            f'fill="#555">{escape(_label(chart.starts[i], chart.bucket_seconds))}</text>'
        )
    parts.append(
        f'<line x1="{_LEFT}" y1="{y(0):.1f}" x2="{width - _RIGHT}" y2="{y(0):.1f}" '
        'stroke="#888" stroke-width="1"/>'
    )
    parts.append("</svg>")
    return "".join(parts)


__all__ = ["Chart", "Series", "nice_ceiling", "render"]
