"""Inline SVG line plots for the audit report (no plotting library, no external resources).

:func:`line_plot` draws one ``<polyline class="series">`` per series (plus a marker with a
tooltip per point), axes with rounded ticks, and a legend. Every text and attribute value is
escaped with :func:`html.escape`, so series names cannot inject markup. Colours are the
Okabe-Ito palette (distinguishable with common colour-vision deficiencies), with dash patterns
once the eight colours repeat.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from securefed.errors import ConfigError

__all__ = ["Series", "line_plot"]

_COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
_DASHES = ("", "6 3", "2 3", "8 3 2 3")
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 170, 34, 48
_Scale = Callable[[float], float]


@dataclass(frozen=True, slots=True)
class Series:
    """One line: a name for the legend and (x, y) points, drawn in x order.

    Raises:
        ConfigError: a point is not finite.
    """

    name: str
    points: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        if not all(math.isfinite(x) and math.isfinite(y) for x, y in self.points):
            raise ConfigError(f"series {self.name!r} has a non-finite point")


def line_plot(
    series: Sequence[Series],
    *,
    title: str,
    x_label: str,
    y_label: str,
    element_id: str,
    width: int = 680,
    height: int = 320,
) -> str:
    """An ``<svg>`` element (a string) plotting ``series``; the y axis starts at 0 when all
    values are non-negative. An empty plot (no points) still renders its axes and title."""
    points = [p for s in series for p in s.points]
    x_lo, x_hi = _span([x for x, _ in points], default=(0.0, 1.0))
    ys = [y for _, y in points]
    y_lo, y_hi = _span([*ys, 0.0] if all(y >= 0 for y in ys) else ys, default=(0.0, 1.0))
    x_ticks, y_ticks = _ticks(x_lo, x_hi), _ticks(y_lo, y_hi)
    x_lo, x_hi = min(x_lo, x_ticks[0]), max(x_hi, x_ticks[-1])
    y_lo, y_hi = min(y_lo, y_ticks[0]), max(y_hi, y_ticks[-1])
    plot_w, plot_h = width - _LEFT - _RIGHT, height - _TOP - _BOTTOM

    def sx(x: float) -> float:
        return _LEFT + (x - x_lo) / (x_hi - x_lo) * plot_w

    def sy(y: float) -> float:
        return _TOP + plot_h - (y - y_lo) / (y_hi - y_lo) * plot_h

    esc = html.escape
    out = [
        f'<svg id="{esc(element_id)}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{esc(title)}" font-family="sans-serif" font-size="11">',
        f"<title>{esc(title)}</title>",
        f'<text x="{width / 2:.1f}" y="18" text-anchor="middle" font-size="13">{esc(title)}</text>',
        f'<g class="axes" stroke="#444" fill="none"><line x1="{_LEFT}" y1="{_TOP + plot_h}" '
        f'x2="{_LEFT + plot_w}" y2="{_TOP + plot_h}"/><line x1="{_LEFT}" y1="{_TOP}" '
        f'x2="{_LEFT}" y2="{_TOP + plot_h}"/></g>',
    ]
    out += _tick_marks(x_ticks, y_ticks, sx, sy, plot_w=plot_w, plot_h=plot_h)
    out.append(
        f'<text x="{_LEFT + plot_w / 2:.1f}" y="{height - 8}" text-anchor="middle">'
        f"{esc(x_label)}</text>"
        f'<text x="14" y="{_TOP + plot_h / 2:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 14 {_TOP + plot_h / 2:.1f})">{esc(y_label)}</text>'
    )
    for index, line in enumerate(series):
        out.append(_series(index, line, sx, sy, legend_x=_LEFT + plot_w + 16))
    out.append("</svg>")
    return "\n".join(out)


def _tick_marks(
    x_ticks: list[float],
    y_ticks: list[float],
    sx: _Scale,
    sy: _Scale,
    *,
    plot_w: float,
    plot_h: float,
) -> list[str]:
    """Tick marks and labels on both axes (horizontal grid lines at the y ticks)."""
    esc = html.escape
    bottom = _TOP + plot_h
    marks = [
        f'<g class="tick"><line x1="{sx(tick):.1f}" y1="{bottom}" x2="{sx(tick):.1f}" '
        f'y2="{bottom + 4}" stroke="#444"/><text x="{sx(tick):.1f}" '
        f'y="{bottom + 16}" text-anchor="middle">{esc(_label(tick))}</text></g>'
        for tick in x_ticks
    ]
    marks += [
        f'<g class="tick"><line x1="{_LEFT}" y1="{sy(tick):.1f}" x2="{_LEFT + plot_w}" '
        f'y2="{sy(tick):.1f}" stroke="#ddd"/><text x="{_LEFT - 6}" y="{sy(tick) + 4:.1f}" '
        f'text-anchor="end">{esc(_label(tick))}</text></g>'
        for tick in y_ticks
    ]
    return marks


def _series(index: int, line: Series, sx: _Scale, sy: _Scale, *, legend_x: float) -> str:
    esc = html.escape
    colour = _COLOURS[index % len(_COLOURS)]
    dash = _DASHES[(index // len(_COLOURS)) % len(_DASHES)]
    dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
    ordered = sorted(line.points)
    coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in ordered)
    parts = [
        f'<g class="line"><polyline class="series" data-series="{esc(line.name)}" fill="none" '
        f'stroke="{colour}" stroke-width="2"{dash_attr} points="{coords}"/>'
    ]
    for x, y in ordered:
        parts.append(
            f'<circle class="point" cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{colour}">'
            f"<title>{esc(line.name)}: ({esc(_label(x))}, {esc(_label(y))})</title></circle>"
        )
    legend_y = _TOP + 6 + 16 * index
    parts.append(
        f'<line x1="{legend_x}" y1="{legend_y}" x2="{legend_x + 18}" y2="{legend_y}" '
        f'stroke="{colour}" stroke-width="2"{dash_attr}/><text x="{legend_x + 24}" '
        f'y="{legend_y + 4}">{esc(line.name)}</text></g>'
    )
    return "".join(parts)


def _span(values: list[float], *, default: tuple[float, float]) -> tuple[float, float]:
    if not values:
        return default
    lo, hi = min(values), max(values)
    if lo == hi:
        pad = abs(lo) * 0.1 or 1.0
        return lo - pad if lo < 0 else max(0.0, lo - pad), hi + pad
    return lo, hi


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Rounded tick values covering [lo, hi] (steps of 1, 2 or 5 times a power of ten)."""
    raw = (hi - lo) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.floor(lo / step) * step
    ticks = []
    value = first
    while value < hi + step * 0.5:
        ticks.append(round(value, 12))
        value += step
    return ticks if len(ticks) >= 2 else [first, first + step]


def _label(value: float) -> str:
    if value == int(value) and abs(value) < 1e9:
        return str(int(value))
    return f"{value:.4g}"
