"""The report's plots, drawn by matplotlib and inlined as SVG.

:func:`epsilon_plot` draws cumulative ε per round, in numeric round order, with a dashed budget
line: one line per institution up to :data:`MAX_LINES`, beyond that a band (the smallest to the
largest ε of the institutions in each round) around the median, so 62 institutions stay
readable. :func:`metric_plot` draws one or more per-round metrics (accuracy, AUC).
:func:`roc_plot` draws one ROC curve (false-positive rate against true-positive rate) with the
diagonal of a model that guesses.

Guarantees: the output is one ``<svg>`` element (no XML declaration, no DOCTYPE, no metadata
block, no script, no external reference -- ``url(#...)`` fragments only), identical for
identical input (``svg.hashsalt`` is fixed per plot id, no date is written), and text is kept as
``<text>`` (``svg.fonttype = "none"``), so no glyph is embedded and no font is fetched. The
Agg backend is used; nothing is shown on a screen. matplotlib is imported on the first plot,
not with the package (importing :mod:`securefed.audit` stays fast). Every id inside the SVG is
prefixed by the plot's ``element_id``, so several plots can share one page. Text is escaped by
matplotlib's SVG writer. Failure modes: a non-finite point raises
:class:`~securefed.errors.ConfigError` when the :class:`Series` is built.
"""

from __future__ import annotations

import html
import io
import math
import re
import statistics
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from securefed.errors import ConfigError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["MAX_LINES", "Series", "epsilon_plot", "metric_plot", "roc_plot"]

MAX_LINES = 8
# Okabe-Ito: distinguishable with the common colour-vision deficiencies.
_COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
_BUDGET = "#8a1c1c"
_RC = {
    "svg.hashsalt": "securefed-report",
    "svg.fonttype": "none",
    "font.family": "sans-serif",
    "font.size": 9.0,
    "axes.grid": True,
    "grid.color": "#dddddd",
}
_METADATA: dict[str, str | None] = {"Date": None, "Creator": None, "Format": None, "Type": None}
_ID = re.compile(r'\bid="([^"]+)"')


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


def epsilon_plot(
    series: Sequence[Series], *, budget: float | None, title: str, element_id: str
) -> str:
    """Cumulative ε per round (x: round, numeric order) with the budget as a dashed line.

    Up to :data:`MAX_LINES` series are drawn as lines with a legend; more are drawn as a band
    from the least to the greatest ε of each round, with the median as a line. ``budget`` None
    draws no budget line."""
    with _style(element_id):
        fig = _figure(3.4)
        ax = fig.add_subplot()
        if len(series) <= MAX_LINES:
            for index, line in enumerate(series):
                xs, ys = _xy(line)
                colour = _COLOURS[index % len(_COLOURS)]
                ax.plot(xs, ys, marker="o", markersize=3, color=colour, label=line.name)[0].set_gid(
                    f"series-{index}"
                )
        else:
            rounds = sorted({x for s in series for x, _ in s.points})
            at = [[y for s in series for x, y in s.points if x == r] for r in rounds]
            ax.fill_between(
                rounds,
                [min(v) for v in at],
                [max(v) for v in at],
                color=_COLOURS[0],
                alpha=0.25,
                label=f"range over {len(series)} institutions",
            )
            median = [statistics.median(v) for v in at]
            ax.plot(rounds, median, color=_COLOURS[0], marker="o", markersize=3, label="median")[
                0
            ].set_gid("median")
        if budget is not None and math.isfinite(budget):
            ax.axhline(
                budget, color=_BUDGET, linestyle="--", linewidth=1.2, label=f"budget ε = {budget:g}"
            ).set_gid("budget")
        _finish(ax, title=title, x_label="round", y_label="ε (cumulative)")
        return _svg(fig, element_id, title)


def metric_plot(series: Sequence[Series], *, title: str, y_label: str, element_id: str) -> str:
    """One line per series (e.g. mean accuracy, mean ROC AUC) over rounds, numeric order."""
    with _style(element_id):
        fig = _figure(3.0)
        ax = fig.add_subplot()
        for index, line in enumerate(series):
            xs, ys = _xy(line)
            colour = _COLOURS[index % len(_COLOURS)]
            ax.plot(xs, ys, marker="o", markersize=3, color=colour, label=line.name)[0].set_gid(
                f"series-{index}"
            )
        _finish(ax, title=title, x_label="round", y_label=y_label)
        return _svg(fig, element_id, title)


def roc_plot(curve: Series, *, title: str, element_id: str) -> str:
    """One ROC curve, its points joined in the order given (from the strictest threshold to the
    loosest), on [0, 1] x [0, 1], with the dashed diagonal of a model that guesses."""
    with _style(element_id):
        from matplotlib.figure import Figure  # noqa: PLC0415 -- lazily, see _style

        fig = Figure(figsize=(5.2, 4.0))
        ax = fig.add_subplot()
        xs, ys = [x for x, _ in curve.points], [y for _, y in curve.points]
        ax.plot(xs, ys, color=_COLOURS[0], linewidth=1.5, label=curve.name)[0].set_gid("curve")
        ax.plot(
            [0.0, 1.0], [0.0, 1.0], color="#777777", linestyle="--", linewidth=1.0, label="chance"
        )[0].set_gid("diagonal")
        ax.set_xlim(-0.02, 1.02)  # a margin: a curve along an edge stays visible
        ax.set_ylim(-0.02, 1.02)
        ax.set_aspect("equal")
        ax.set_title(title)
        ax.set_xlabel("false-positive rate")
        ax.set_ylabel("true-positive rate")
        ax.legend(loc="lower right", frameon=False, fontsize=8)
        return _svg(fig, element_id, title)


def _style(element_id: str) -> AbstractContextManager[None]:
    """matplotlib's settings for one plot (the Agg backend; the SVG salt is the plot's id)."""
    import matplotlib as mpl  # noqa: PLC0415 -- lazily: a second or more to import

    mpl.use("Agg")
    return mpl.rc_context({**_RC, "svg.hashsalt": element_id})


def _figure(height: float) -> Figure:
    from matplotlib.figure import Figure  # noqa: PLC0415 -- lazily, see _style

    return Figure(figsize=(7.5, height))


def _xy(line: Series) -> tuple[list[float], list[float]]:
    ordered = sorted(line.points)
    return [x for x, _ in ordered], [y for _, y in ordered]


def _finish(ax: Axes, *, title: str, x_label: str, y_label: str) -> None:
    ax.set_title(title)
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415 -- lazily, see _style

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    lo, hi = ax.get_ylim()
    if lo > 0:
        ax.set_ylim(0, hi)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False, fontsize=8)


def _svg(fig: Figure, element_id: str, title: str) -> str:
    """The figure as one ``<svg>`` element with ``id=element_id`` and every inner id prefixed."""
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight", metadata=_METADATA)
    text = buffer.getvalue()
    text = text[text.index("<svg") :]
    prefix = f"{element_id}-"
    text = _ID.sub(lambda m: f'id="{prefix}{m.group(1)}"', text)
    text = text.replace("url(#", f"url(#{prefix}").replace('href="#', f'href="#{prefix}')
    # matplotlib's one style rule, scoped to this plot instead of the whole page
    text = text.replace("*{stroke-linejoin", f"#{element_id} *{{stroke-linejoin", 1)
    opening = f'<svg id="{element_id}" class="plot" role="img" aria-label="{html.escape(title)}" '
    text = text.replace("<svg ", opening, 1)
    end = text.index(">") + 1
    return f"{text[:end]}\n <title>{html.escape(title)}</title>{text[end:]}"
