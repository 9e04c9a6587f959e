"""The drawing kit every chart shares: what a chart function reads (`Context`) and returns
(`Chart`, or `Missing` with what would provide its data), facet grids, CI bands, log axes with
plain-number ticks, and the PNG and SVG files of a figure.

Figures are `matplotlib.figure.Figure` objects (Agg canvas) drawn inside seaborn style contexts,
so nothing global is changed.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import re
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on report machines; set before seaborn imports pyplot

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import (
    FuncFormatter,
    LogLocator,
    MaxNLocator,
    NullFormatter,
    NullLocator,
)

from bench.numbers import fmt_num, is_fraction_metric
from bench.report import tables
from bench.report.views import StudyView

PALETTE = {"sgd": "#1f77b4", "adam": "#ff7f0e", "adamw": "#2ca02c",
           "mse": "#9467bd", "bce": "#17becf", "ce": "#8c564b",
           "cpu": "#1f77b4", "cuda": "#d62728"}
X_LABELS = {"lr": "learning rate", "l1": "L1 lambda", "batch_size": "batch size"}

# What each chart needs, said on the page when the data is absent.
NEEDS = {
    "optimizers": "a study that sweeps `optimizer` over sgd and adam with seeds, e.g. "
                  "`bench sweep studies/moons_optimizer.toml`",
    "lr_sensitivity": "a study that sweeps `lr` over at least 3 values, e.g. "
                      "`bench sweep studies/moons_lr.toml`",
    "losses": "a study that sweeps `loss` over mse and bce on a classification task, e.g. "
              "`bench sweep studies/moons_loss.toml`",
    "inits": "a study that sweeps `init` over at least 2 schemes, e.g. "
             "`bench sweep studies/sine_init.toml`",
    "l1": "a study that sweeps `l1` over at least 2 values (0 included), e.g. "
          "`bench sweep studies/sine_l1.toml`",
    "batch_size": "a study that sweeps `batch_size` over at least 2 values, e.g. "
                  "`bench sweep studies/circle_batch_size.toml`",
    "curves": "any study with completed trials (their per-epoch curves)",
    "timing": "timing files (`bench time`, written to results/timing/*.json)",
    "history": "any study with completed trials",
    "boundaries": "a study on a 2-D classification task (moons, circle, circles, linear, sine)",
}


@dataclass
class Chart:
    """One drawn figure: the question it answers, what it shows, its files."""

    key: str
    title: str
    question: str
    caption: str
    png: bytes = field(repr=False, default=b"")
    files: list[str] = field(default_factory=list)
    table: str | None = None  # the CSV of the chart's data, relative to the report folder


@dataclass
class Missing:
    """A chart that could not be drawn, and what would provide its data."""

    key: str
    question: str
    needs: str


@dataclass
class Skipped:
    """Part of a chart left out because it needs what is not available here (a task or model
    not registered, a data file gone): one line saying what and why, for the page and stderr."""

    key: str
    text: str


@dataclass
class Context:
    """What the chart functions read, and the folder they write into."""

    views: list[StudyView]
    studies: list[tables.StudyData]
    curves: pd.DataFrame
    timing: pd.DataFrame
    folder: Path
    boundaries: bool = True
    svg: bool = False  # also write each chart as SVG (`bench report --svg`)

    def write_table(self, df: pd.DataFrame, key: str) -> str:
        """Save a chart's data as tables/<key>.csv; return the relative path."""
        path = self.folder / "tables" / f"{key}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(path, index=False)
        return f"tables/{key}.csv"

    def study(self, name: str) -> tables.StudyData:
        """The stored study a view was made from."""
        return next(s for s in self.studies if s.name == name)


ChartFn = Callable[[Context], Chart | Missing | list[Chart | Missing | Skipped]]


# --- figures and their files ---------------------------------------------------------------------

def style() -> contextlib.ExitStack:
    """The seaborn style every chart is drawn in (whitegrid, notebook context), as a context."""
    stack = contextlib.ExitStack()
    stack.enter_context(sns.axes_style("whitegrid"))
    stack.enter_context(sns.plotting_context("notebook", font_scale=0.9))
    # Titles at a fixed height (no chart puts tick labels above its axes): matplotlib's
    # automatic title placement measures every axis's tick labels once more per draw.
    stack.enter_context(matplotlib.rc_context({"axes.titley": 1.0}))
    return stack


def facet_grid(n: int, ncols: int = 3, size: tuple[float, float] = (4.6, 3.6),
           nrows_per: int = 1) -> tuple[Figure, list[list[Any]]]:
    """A figure with `n` facet columns (wrapped), each `nrows_per` panels tall."""
    ncols = max(1, min(ncols, n))
    wraps = math.ceil(n / ncols)
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows_per * wraps), layout="constrained")
    grid = fig.subplots(wraps * nrows_per, ncols, squeeze=False)
    out = []
    for i in range(wraps * ncols):
        r, c = divmod(i, ncols)
        panels = [grid[r * nrows_per + j][c] for j in range(nrows_per)]
        if i >= n:
            for ax in panels:
                ax.set_visible(False)
        else:
            out.append(panels)
    return fig, out


def save(fig: Figure, folder: Path, key: str, svg: bool = False) -> tuple[bytes, list[str]]:
    """Write the PNG of `fig` under folder/charts (and its SVG with `svg`); return the PNG bytes
    and the relative paths.

    PNG is what both pages show; drawing the SVG too cost about 40% of a report's time, so it
    is written only on request (`bench report --svg`), laid out once: the SVG reuses the
    positions the PNG's constrained layout found instead of solving them again.
    """
    charts = folder / "charts"
    charts.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    (charts / f"{key}.png").write_bytes(buf.getvalue())
    if not svg:
        return buf.getvalue(), [f"charts/{key}.png"]
    fig.set_layout_engine("none")  # keep the layout the PNG drew with
    fig.savefig(charts / f"{key}.svg", format="svg")
    return buf.getvalue(), [f"charts/{key}.png", f"charts/{key}.svg"]


def colors_for(values: list[Any]) -> dict[Any, Any]:
    """A colour per value: the fixed palette for optimizers, losses and devices, else tab10."""
    fallback = sns.color_palette("tab10", max(len(values), 1))
    return {v: PALETTE.get(str(v), fallback[i % 10]) for i, v in enumerate(values)}


def level_colors(v: StudyView, factor: str) -> dict[Any, Any]:
    """One colour per value of `factor` in a study, the same in every chart of it: the fixed
    palette for optimizers, losses and devices, else tab10 in the values' sorted order."""
    values = sorted(v.runs[factor].dropna().unique(), key=str) if factor in v.runs else []
    return colors_for(values)


def slug(name: str) -> str:
    """A file-name part unique per study name: the name itself when it is short and plain
    (lower-case letters, digits, - and _), else its first 40 safe characters and a hash of the
    whole name, so 'a b' and 'a_b' (or 'A' and 'a' on a case-insensitive disk) never share a file.
    """
    if re.fullmatch(r"[a-z0-9_-]{1,60}", name):
        return name
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "_" for c in name)[:40]
    return f"{safe}-{hashlib.sha256(name.encode('utf-8', 'surrogatepass')).hexdigest()[:10]}"


def wrap(text: str | None, width: int) -> str:
    """`text` broken into lines of at most `width` characters (titles, panel notes)."""
    return "\n".join(textwrap.wrap(text or "", width))


# --- what a panel shows ----------------------------------------------------------------------------

def band(ax: Any, x: np.ndarray, mean: np.ndarray, half: np.ndarray, color: Any,
         label: str | None, marker: str = "o",
         bounds: tuple[float, float] = (-math.inf, math.inf)) -> None:
    """Mean line with markers and a shaded 95% CI band where the CI exists.

    The band is drawn clipped to the metric's possible range (an accuracy CI can reach past 1
    with three seeds; the CSV keeps the unclipped half-width).
    """
    ax.plot(x, mean, marker=marker, color=color, label=label, lw=1.8, ms=5)
    ok = np.isfinite(half)
    if ok.any():
        lo = np.clip(np.where(ok, mean - half, np.nan), *bounds)
        hi = np.clip(np.where(ok, mean + half, np.nan), *bounds)
        ax.fill_between(x, lo, hi, color=color, alpha=0.2, lw=0)


def metric_bounds(metric: str) -> tuple[float, float]:
    """The range a metric can take: [0, 1] for accuracy, (-inf, 1] for R², [0, inf) else."""
    base = metric.rsplit("_", 1)[-1]
    if base == "accuracy":
        return 0.0, 1.0
    if base == "r2":
        return -math.inf, 1.0
    return 0.0, math.inf


def log_metric(metric: str) -> bool:
    """Losses and MSEs span decades: plot them on a log axis (accuracy and R² stay linear)."""
    return not is_fraction_metric(metric)


def legend_outside(ax: Any, title: str | None = None) -> None:
    """Legend to the right of the axes, so it never hides data."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(title=title, fontsize=8, title_fontsize=8, loc="upper left",
                  bbox_to_anchor=(1.01, 1.0), frameon=False)


def diverged_marks(ax: Any, x: list[float], color: Any) -> None:
    """Mark x positions where every seed diverged with an x on the bottom axis."""
    if x:
        ax.plot(x, [0.02] * len(x), "x", color=color, ms=8, mew=2,
                transform=ax.get_xaxis_transform(), clip_on=False)


def epoch_axis(ax: Any) -> None:
    """Whole-number epoch ticks (1, 5, 10, ...) with an 'epoch' label."""
    ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True, min_n_ticks=2))
    ax.set_xlabel("epoch")


def plain_log_ticks(ax: Any) -> None:
    """Label a log y axis with plain numbers at 1, 2, 5 x 10^k (fewer over many decades)."""
    lo, hi = ax.get_ylim()
    log_ticks(ax, "y", lo, hi)


def log_ticks(ax: Any, axis: str, lo: float, hi: float) -> None:
    """Plain-number labels on a log axis ('0.001', '0.02', '10'): at 1, 2, 5 x 10^k over up to
    about one decade, 1 and 3 over up to two, else powers of ten only, so labels never collide
    in a panel a third of a page wide. No minor ticks: the style draws no tick marks, and
    matplotlib would lay out eight invisible ones per decade on every draw."""
    decades = math.log10(hi / lo) if lo > 0 and hi > lo else 1.0
    subs = (1.0, 2.0, 5.0) if decades <= 1.3 else (1.0, 3.0) if decades <= 2.3 else (1.0,)
    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_locator(LogLocator(base=10, subs=subs))
    target.set_major_formatter(FuncFormatter(lambda t, _: fmt_num(float(f"{t:.2g}"), 2)))
    target.set_minor_locator(NullLocator())
    target.set_minor_formatter(NullFormatter())
