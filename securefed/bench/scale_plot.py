"""The plot of a ``securefed bench scale`` result: time per round against N, log-log, as SVG.

matplotlib is not a dependency of securefed: it is imported lazily, and :func:`write_plot`
raises :class:`~securefed.errors.ConfigError` with an install hint when it is missing. The SVG is
written with a fixed ``svg.hashsalt`` and no date, so the same result gives the same file.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from securefed.errors import ConfigError

__all__ = ["write_plot"]

_INSTALL_HINT = "the plot needs matplotlib: .venv/bin/pip install matplotlib==3.10.9"


def write_plot(result: dict[str, Any], path: Path) -> None:
    """Draw client and server time of securefed (and Flower's where it ran) against N to
    ``path`` (SVG). Raises ConfigError when matplotlib is not installed or the result has no
    rows."""
    rows = result.get("rows") or []
    if not rows:
        raise ConfigError("the scale result has no rows to plot")
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ImportError as exc:
        raise ConfigError(_INSTALL_HINT) from exc
    matplotlib.use("Agg")
    pyplot = importlib.import_module("matplotlib.pyplot")
    matplotlib.rcParams["svg.hashsalt"] = "securefed-bench-scale"
    sizes = [row["clients"] for row in rows]
    figure, axes = pyplot.subplots(figsize=(6.4, 4.2))
    axes.plot(sizes, [row["server_s"] for row in rows], "o-", label="securefed server")
    axes.plot(sizes, [row["client_s"] for row in rows], "s-", label="securefed client (median)")
    flower = [row for row in rows if row.get("flower_server_s") is not None]
    if flower:
        flower_sizes = [row["clients"] for row in flower]
        axes.plot(
            flower_sizes, [row["flower_server_s"] for row in flower], "o--", label="Flower server"
        )
        axes.plot(
            flower_sizes,
            [row["flower_client_s"] for row in flower],
            "s--",
            label="Flower client (median)",
        )
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xticks(sizes, [str(n) for n in sizes])
    axes.set_xlabel("N (parties)")
    axes.set_ylabel("seconds per round")
    exponent = result.get("server_exponent_50_200")
    note = "" if exponent is None else f"; server exponent N=50..200: {exponent:.2f}"
    axes.set_title(
        f"one round, d = {result['dim']}, {result['dropout_fraction']:.0%} dropped{note}"
    )
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, format="svg", metadata={"Date": None})
    pyplot.close(figure)
