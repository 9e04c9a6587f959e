"""The report: pandas aggregation over seeds, seaborn charts, one HTML page and a Markdown twin.

`build_report` reads every study of an Optuna storage, the timing JSON files and the
reproduction table, and writes into one folder:

- `tables/*.csv`: tidy tables (`runs.csv` one row per trial x seed; `configs.csv` mean, std and
  95% CI over seeds per trial; `trials.csv`, `curves.csv`, `timing.csv`, and each chart's data);
- `charts/*.png` and `*.svg`: one chart per question the notebooks ask, drawn only when the
  data to answer it exists (otherwise the page says which study would provide it);
- `index.html` (self-contained: charts embedded as base64 PNG) and `report.md` (links the PNGs).

The whole folder is built next to its destination and swapped in at the end, so a report that
fails halfway (a full disk, Ctrl-C, SIGTERM) leaves the previous one untouched and no temporary
folder behind. The destination may only be new, empty or an earlier report (its
`.nnbench-report` marker lists the files it wrote); any other folder or file is refused with
one line (exit 2) and left as it is. File names are unique per study name (`_slug`), and the
storage URL is shown with its password masked (`bench.sweeps.storage.display_url`).

Figures are drawn on `matplotlib.figure.Figure` objects (Agg canvas) inside seaborn style
contexts, so nothing global is changed.

Statistics: a configuration's value is the mean over its seeds with a Student-t 95% CI
(`bench.stats.mean_ci`); one seed shows no CI. Two configurations differ beyond the
seed-to-seed spread when their 95% CIs do not overlap (Welch's t-test p is shown beside it).
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import math
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on report machines; set before seaborn imports pyplot

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from bench.catalog import registry
from bench.errors import UsageError
from bench.report import tables
from bench.stats import mean_ci
from bench.store import umask_mode, write_json_atomic, write_text_atomic
from bench.sweeps.storage import display_url

SIGNIFICANCE_RULE = (
    "A difference counts as beyond the seed-to-seed spread when the two 95% confidence "
    "intervals over seeds (Student t, mean ± t(0.975, n-1)·s/√n) do not overlap; Welch's "
    "t-test p-value is shown beside it. A configuration with a single seed has no interval, "
    "so no such claim is made. The winner is picked as the best of many configurations, so "
    "its margin is optimistic (winner's curse): confirm it on fresh seeds.")

PALETTE = {"sgd": "#1f77b4", "adam": "#ff7f0e", "adamw": "#2ca02c",
           "mse": "#9467bd", "bce": "#17becf", "ce": "#8c564b",
           "cpu": "#1f77b4", "cuda": "#d62728"}
HUE_FACTORS = ("optimizer", "loss", "model", "activation", "init", "batch_norm")
METRIC_LABELS = {"accuracy": "accuracy", "mse": "MSE", "r2": "R²", "loss": "loss"}
SPLIT_LABELS = {"val": "validation", "test": "test", "train": "training"}

# What each chart needs, said on the page when the data is absent.
NEEDS = {
    "optimizers": "a study that sweeps `optimizer` over sgd and adam with seeds, e.g. "
                  "`bench sweep studies/moons_optimizer.toml`",
    "lr_sensitivity": "a study that sweeps `lr` over at least 3 values, e.g. "
                      "`bench sweep studies/moons_lr.toml`",
    "losses": "a study that sweeps `loss` over mse and bce on a classification task, e.g. "
              "`bench sweep studies/moons_loss.toml`",
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
class ReportResult:
    """What `build_report` wrote and what it could not show."""

    out: Path
    charts: list[Chart]
    missing: list[Missing]
    notes: list[str]
    files: list[Path]


# --- formatting ------------------------------------------------------------------------------

def fmt_num(x: Any, sig: int = 3) -> str:
    """A number as a reader wants it: `sig` significant digits ('0.0207', '1.81e-06'),
    thousands separated ('13,900'), integers as integers, missing values as ''."""
    if x is None or x is pd.NA or isinstance(x, bool | np.bool_):
        return "" if x is None or x is pd.NA else str(x)
    if isinstance(x, int | np.integer):
        return f"{int(x):,}" if abs(int(x)) >= 10_000 else str(int(x))
    x = float(x)
    if math.isnan(x):
        return ""
    if math.isinf(x) or x == 0:
        return f"{x:g}"
    rounded = float(f"{x:.{sig}g}")
    if 1e3 <= abs(x) < 1e9:
        return f"{rounded:,.0f}"
    if rounded != x and 1e-4 <= abs(x) < 1e3:  # keep the digits rounding kept: 0.999709 -> 1.00
        return f"{x:#.{sig}g}".rstrip(".")
    return f"{rounded:g}"  # plain '300', '0.5'; scientific below 1e-4 ('1.81e-06')


def is_fraction_metric(metric: str) -> bool:
    """Accuracy-like metrics (in [0, 1]) are shown with 3 decimals, everything else with 3
    significant digits."""
    return metric.rsplit("_", 1)[-1] in ("accuracy", "r2")


def fmt_score(x: float, metric: str) -> str:
    """One metric value: 3 decimals for accuracy-like metrics, else 3 significant digits."""
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{x:.3f}" if is_fraction_metric(metric) else fmt_num(x)


def fmt_ci(mean: float, half: float, digits: int = 3, metric: str | None = None) -> str:
    """'0.962 ± 0.011', or '0.962 (no CI)' when there is no interval.

    With a `metric` that is not accuracy-like (a loss, an MSE), the mean gets `digits`
    significant digits and the half width as many decimals, so '0.00712 ± 0.00113' instead of
    '0.007 ± 0.001'.
    """
    if mean is None or not math.isfinite(mean):
        return "n/a"
    if metric is not None and not is_fraction_metric(metric) and mean != 0:
        decimals = max(0, digits - 1 - math.floor(math.log10(abs(mean))))
        if decimals > 8:  # tiny values: scientific notation, CI likewise
            text = f"{mean:.{digits}g}"
            return text + (" (no CI)" if half is None or not math.isfinite(half)
                           else f" ± {half:.{digits}g}")
        if half is not None and 0 < half < 0.5 * 10 ** -decimals:  # would read '± 0.00'
            return f"{mean:.{decimals}f} ± {fmt_num(half, 2)}"
        digits = decimals
    if half is None or not math.isfinite(half):
        return f"{mean:.{digits}g} (no CI)" if abs(mean) >= 1e3 else f"{mean:.{digits}f} (no CI)"
    return f"{mean:.{digits}f} ± {half:.{digits}f}"


def metric_label(metric: str) -> str:
    """'val_accuracy' -> 'validation accuracy'."""
    split, _, base = metric.partition("_")
    if split in SPLIT_LABELS:
        return f"{SPLIT_LABELS[split]} {METRIC_LABELS.get(base, base)}"
    return metric.replace("_", " ")


def higher_is_better(metric: str) -> bool:
    """True for accuracy and R²; False for losses and MSE."""
    from bench.results import metric_direction

    return metric_direction(metric) == "maximize"


def _param_text(value: Any) -> str:
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            return "full"
        return fmt_num(value) if value != int(value) or abs(value) >= 1e4 else f"{value:g}"
    return str(value)


# --- statistics --------------------------------------------------------------------------------

def compare(a: list[float], b: list[float]) -> dict[str, Any]:
    """CI overlap and Welch's t-test between two sets of per-seed values."""
    from scipy import stats as st

    xa = [x for x in a if math.isfinite(x)]
    xb = [x for x in b if math.isfinite(x)]
    ma, ha = mean_ci(xa)
    mb, hb = mean_ci(xb)
    if len(xa) < 2 or len(xb) < 2:
        return {"decidable": False, "overlap": None, "p": math.nan}
    overlap = (ma - ha) <= (mb + hb) and (mb - hb) <= (ma + ha)
    if np.std(xa) == 0 and np.std(xb) == 0:
        p = 0.0 if ma != mb else 1.0
    else:
        p = float(st.ttest_ind(xa, xb, equal_var=False).pvalue)
    return {"decidable": True, "overlap": bool(overlap), "p": p}


# --- per-study views ---------------------------------------------------------------------------

@dataclass
class StudyView:
    """One study's runs with what varies in it and the metric it is judged by."""

    name: str
    task: str
    model: str
    metric: str
    runs: pd.DataFrame
    varied: list[str]
    configs: pd.DataFrame  # one row per trial: varied params + metric mean/ci/n + n_diverged

    @property
    def label(self) -> str:
        """'name (task, model)' for facet titles."""
        return f"{self.name} ({self.task}, {self.model})"

    @property
    def hue(self) -> str | None:
        """The categorical factor lines are coloured by (optimizer first), if one varies."""
        return next((f for f in HUE_FACTORS if f in self.varied), None)

    def config_label(self, row: pd.Series, skip: tuple[str, ...] = ()) -> str:
        """'optimizer=adam, lr=0.01' from the varied parameters of a config row."""
        parts = [f"{k}={_param_text(row[k])}" for k in self.varied if k not in skip]
        return ", ".join(parts) or f"trial {row['trial']}"

    def ranked(self) -> pd.DataFrame:
        """Configs best first (configs without a diverged seed before the others)."""
        m = f"{self.metric}_mean"
        c = self.configs.dropna(subset=[m])
        return c.assign(_div=c["n_diverged"] > 0).sort_values(
            ["_div", m], ascending=[True, not higher_is_better(self.metric)]).drop(columns="_div")

    def seed_values(self, trial: int) -> list[float]:
        """The per-seed metric values of one trial."""
        return self.runs.loc[self.runs["trial"] == trial, self.metric].astype(float).tolist()


def study_views(runs: pd.DataFrame, studies: list[tables.StudyData]) -> list[StudyView]:
    """A view per study that has runs; its metric is the study objective (or task default)."""
    views = []
    # Pruned trials stopped early: their scores are not comparable with finished ones.
    ran = runs[runs["seed"].notna() & runs["state"].isin(["COMPLETE", "FAIL"])] \
        if not runs.empty else runs
    for s in studies:
        sub = ran[ran["study"] == s.name].copy()
        if sub.empty:
            continue
        task = str(sub["task"].iloc[0])
        metric = s.objective if s.objective in sub.columns else \
            f"val_{registry.get_task(task).default_metric}"
        if metric not in sub.columns:  # no stored run has the metric: nothing to compare
            continue
        sub = _fill_full_batch(sub)
        varied = [c for c in tables.config_columns(sub) if sub[c].nunique(dropna=False) > 1]
        conf = tables.aggregate(sub, ["trial", *varied], [metric, "epoch_seconds"])
        div = sub.groupby("trial")["diverged"].sum().rename("n_diverged").reset_index()
        views.append(StudyView(s.name, task, str(sub["model"].iloc[0]), metric, sub, varied,
                               conf.merge(div, on="trial")))
    return views


def _fill_full_batch(sub: pd.DataFrame) -> pd.DataFrame:
    """Full-batch runs (batch_size missing) get the training-set size, so they plot on an axis."""
    if "batch_size" not in sub.columns or not sub["batch_size"].isna().any():
        return sub
    sizes = [(int(n) if pd.notna(n) else registry.get_task(t).default_n_samples or np.nan)
             for t, n in zip(sub["task"], sub["n_samples"], strict=True)]
    sub = sub.copy()
    sub["batch_size"] = sub["batch_size"].astype(float).fillna(pd.Series(sizes, index=sub.index))
    return sub


# --- figure helpers ------------------------------------------------------------------------------

def _style():
    import contextlib

    stack = contextlib.ExitStack()
    stack.enter_context(sns.axes_style("whitegrid"))
    stack.enter_context(sns.plotting_context("notebook", font_scale=0.9))
    return stack


def _facets(n: int, ncols: int = 3, size: tuple[float, float] = (4.6, 3.6),
            nrows_per: int = 1) -> tuple[Figure, list[list[Any]]]:
    """A figure with `n` facet columns (wrapped), each `nrows_per` panels tall."""
    ncols = max(1, min(ncols, n))
    wraps = math.ceil(n / ncols)
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows_per * wraps), layout="constrained")
    grid = fig.subplots(wraps * nrows_per, ncols, squeeze=False)
    facets = []
    for i in range(wraps * ncols):
        r, c = divmod(i, ncols)
        panels = [grid[r * nrows_per + j][c] for j in range(nrows_per)]
        if i >= n:
            for ax in panels:
                ax.set_visible(False)
        else:
            facets.append(panels)
    return fig, facets


def _save(fig: Figure, folder: Path, key: str) -> tuple[bytes, list[str]]:
    """Write PNG and SVG of `fig` under folder/charts; return the PNG bytes and relative paths."""
    charts = folder / "charts"
    charts.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    (charts / f"{key}.png").write_bytes(buf.getvalue())
    fig.savefig(charts / f"{key}.svg", format="svg")
    return buf.getvalue(), [f"charts/{key}.png", f"charts/{key}.svg"]


def _colors(values: list[Any]) -> dict[Any, Any]:
    fallback = sns.color_palette("tab10", max(len(values), 1))
    return {v: PALETTE.get(str(v), fallback[i % 10]) for i, v in enumerate(values)}


def _band(ax: Any, x: np.ndarray, mean: np.ndarray, half: np.ndarray, color: Any,
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


def _legend_outside(ax: Any, title: str | None = None) -> None:
    """Legend to the right of the axes, so it never hides data."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(title=title, fontsize=8, title_fontsize=8, loc="upper left",
                  bbox_to_anchor=(1.01, 1.0), frameon=False)


def _diverged_marks(ax: Any, x: list[float], color: Any) -> None:
    """Mark x positions where every seed diverged with an x on the bottom axis."""
    if x:
        ax.plot(x, [0.02] * len(x), "x", color=color, ms=8, mew=2,
                transform=ax.get_xaxis_transform(), clip_on=False)


# --- charts ---------------------------------------------------------------------------------------

ChartFn = Callable[["Context"], Chart | Missing | list[Chart | Missing]]


@dataclass
class Context:
    """What the chart functions read, and the folder they write into."""

    views: list[StudyView]
    studies: list[tables.StudyData]
    curves: pd.DataFrame
    timing: pd.DataFrame
    folder: Path
    boundaries: bool = True

    def write_table(self, df: pd.DataFrame, key: str) -> str:
        """Save a chart's data as tables/<key>.csv; return the relative path."""
        path = self.folder / "tables" / f"{key}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(path, index=False)
        return f"tables/{key}.csv"


def _categorical_chart(ctx: Context, factor: str, key: str, question: str,
                       levels: tuple[str, ...] | None = None) -> Chart | Missing:
    """Per-seed values of the study metric by level of `factor`, across every other setting."""
    views = [v for v in ctx.views if factor in v.varied and
             (levels is None or (v.runs[factor].isin(levels).sum() and
              v.runs[factor].nunique() >= 2))]
    if not views:
        return Missing(key, question, NEEDS[key])
    fig, facets = _facets(len(views), size=(4.8, 3.6))
    rows = []
    captions = []
    with _style():
        for v, (ax,) in zip(views, facets, strict=False):
            d = v.runs.copy()
            d[factor] = d[factor].astype(str)
            order = sorted(d[factor].unique())
            finite = d[d[v.metric].notna()]
            with warnings.catch_warnings():  # seaborn 0.13 passes matplotlib's old `vert`
                warnings.simplefilter("ignore", matplotlib.MatplotlibDeprecationWarning)
                sns.boxplot(data=finite, x=factor, y=v.metric, order=order, ax=ax,
                            color="0.92", fliersize=0, width=0.6)
            _seed_dots(fig, ax, v, finite, factor, order)
            ticks = []
            for level in order:
                g = d[d[factor] == level]
                n_div = int(g["diverged"].sum())
                mean, half = mean_ci(g[v.metric].astype(float).tolist())
                rows.append({"study": v.name, factor: level, "n_runs": len(g),
                             "n_diverged": n_div, "mean": mean, "ci95": half})
                ticks.append(f"{level}\n({n_div} of {len(g)} diverged)" if n_div else level)
            ax.set_xticks(range(len(order)), ticks)
            ax.set_title(v.label, fontsize=10)
            ax.set_xlabel(factor)
            ax.set_ylabel(metric_label(v.metric))
            if sentence := _winner_sentence(v, factor):  # '' without two ranked levels
                captions.append(sentence)
    png, files = _save(fig, ctx.folder, key)
    caption = ("Each dot is one seed of one setting, coloured by its learning rate (log colour "
               "scale) where the learning rate varies; boxes span all of them; diverged runs "
               "are left out and counted under the axis. " + " ".join(captions))
    return Chart(key, f"{factor} comparison", question, caption, png, files,
                 ctx.write_table(pd.DataFrame(rows), key))


def _seed_dots(fig: Figure, ax: Any, v: StudyView, finite: pd.DataFrame, factor: str,
               order: list[str]) -> None:
    """One dot per seed, jittered within its box; coloured on a log scale by the learning rate
    when it varies, with one colour bar (its height does not grow with the number of rates)."""
    from matplotlib.colors import LogNorm

    rng = np.random.default_rng(0)  # same jitter on every build
    xs = np.array([order.index(x) for x in finite[factor]], float)
    xs += rng.uniform(-0.18, 0.18, len(xs))
    ys = finite[v.metric].to_numpy(float)
    if "lr" in v.varied and factor != "lr" and (finite["lr"].astype(float) > 0).all():
        lr = finite["lr"].to_numpy(float)
        norm = LogNorm(vmin=v.runs["lr"].astype(float).min(), vmax=v.runs["lr"].astype(float).max())
        dots = ax.scatter(xs, ys, c=lr, cmap="viridis", norm=norm, s=22, alpha=0.9,
                          edgecolor="white", linewidth=0.3, zorder=3)
        bar = fig.colorbar(dots, ax=ax, pad=0.02, fraction=0.06, aspect=25)
        bar.set_label("learning rate (log scale)")
        _log_ticks(bar.ax, "y", norm.vmin, norm.vmax)
    else:
        ax.scatter(xs, ys, color="0.25", s=22, alpha=0.85, zorder=3)


def _winner_sentence(v: StudyView, factor: str) -> str:
    """Best configuration of each level of `factor` compared: the sentence a reader wants."""
    ranked = v.ranked()
    m = f"{v.metric}_mean"
    best_per = ranked.groupby(factor, sort=False).head(1)
    if len(best_per) < 2:
        return ""
    a, b = best_per.iloc[0], best_per.iloc[1]
    verdict = _verdict(v.seed_values(a["trial"]), v.seed_values(b["trial"]))
    return (f"{v.name}: best {factor}={_param_text(a[factor])} "
            f"({v.config_label(a, (factor,))}) {fmt_score(a[m], v.metric)} vs best "
            f"{factor}={_param_text(b[factor])} ({v.config_label(b, (factor,))}) "
            f"{fmt_score(b[m], v.metric)}: {verdict}.")


def _verdict(a: list[float], b: list[float]) -> str:
    fa, fb = [x for x in a if math.isfinite(x)], [x for x in b if math.isfinite(x)]
    if fa and fb and sorted(fa) == sorted(fb):
        return "a tie (identical scores on every seed)"
    c = compare(a, b)
    if not c["decidable"]:
        return "one seed only, so the seed-to-seed spread is unknown (no CI)"
    if c["overlap"]:
        return f"within the seed-to-seed spread (95% CIs overlap, Welch p={c['p']:.2g})"
    return f"beyond the seed-to-seed spread (95% CIs do not overlap, Welch p={c['p']:.2g})"


def chart_optimizers(ctx: Context) -> Chart | Missing:
    """SGD vs Adam per task: distribution over seeds and learning rates."""
    return _categorical_chart(ctx, "optimizer", "optimizers",
                              "Does Adam beat SGD on this task?", ("sgd", "adam", "adamw"))


def chart_losses(ctx: Context) -> Chart | Missing:
    """MSE vs BCE: distribution over seeds (and learning rates)."""
    return _categorical_chart(ctx, "loss", "losses",
                              "Is BCE better than MSE for a sigmoid output?", ("mse", "bce"))


def _line_chart(ctx: Context, x: str, key: str, question: str, min_levels: int,
                xscale: str) -> Chart | Missing:
    """Mean over seeds with a 95% CI band against a numeric parameter, one line per factor."""
    views = [v for v in ctx.views if x in v.varied and v.runs[x].nunique() >= min_levels]
    if not views:
        return Missing(key, question, NEEDS[key])
    fig, facets = _facets(len(views))
    rows = []
    with _style():
        for v, (ax,) in zip(views, facets, strict=False):
            hue = v.hue
            groups = [(None, v.runs)] if hue is None else list(v.runs.groupby(hue))
            colors = _colors([g for g, _ in groups])
            for level, g in groups:
                agg = tables.aggregate(g, [x], [v.metric])
                agg["study"], agg["line"] = v.name, level
                rows.append(agg)
                color = colors[level] if hue else "0.2"
                _band(ax, agg[x].to_numpy(float), agg[f"{v.metric}_mean"].to_numpy(float),
                      agg[f"{v.metric}_ci95"].to_numpy(float), color,
                      str(level) if hue else None, bounds=metric_bounds(v.metric))
                all_div = agg.loc[agg[f"{v.metric}_n"] == 0, x].astype(float).tolist()
                _diverged_marks(ax, all_div, color)
            xs = v.runs[x].astype(float)
            if xscale == "symlog":
                positive = xs[xs > 0]
                ax.set_xscale("symlog", linthresh=float(positive.min()) if len(positive) else 1)
            else:
                ax.set_xscale(xscale)
                _log_ticks(ax, "x", xs.min(), xs.max())
            log_y = _log_metric(v.metric)
            if log_y:
                ax.set_yscale("log")
                _plain_log_ticks(ax)
            ax.set_title(_facet_title(v, (x, hue)), fontsize=10)
            ax.set_xlabel(f"{X_LABELS.get(x, x)} ({xscale} scale)")
            ax.set_ylabel(f"{metric_label(v.metric)}{' (log scale)' if log_y else ''}"
                          "\n(mean over seeds, 95% CI band)")
            if hue:
                _legend_outside(ax, hue)
    png, files = _save(fig, ctx.folder, key)
    caption = ("Lines join the mean over seeds; the band is the 95% CI (absent where a point "
               "has one finite seed; on a log axis a band that reaches zero runs off the "
               "bottom); an x on the axis marks a setting where every seed diverged. Where a "
               "study varies other settings too, each point pools them (named under the title).")
    return Chart(key, f"{x} sensitivity", question, caption, png, files,
                 ctx.write_table(pd.concat(rows, ignore_index=True), key))


def _log_metric(metric: str) -> bool:
    """Losses and MSEs span decades: plot them on a log axis (accuracy and R² stay linear)."""
    return not is_fraction_metric(metric)


def _facet_title(v: StudyView, shown: tuple[str | None, ...]) -> str:
    """The study label, and on a second line the varied settings a panel pools over."""
    pooled = [p for p in v.varied if p not in shown]
    return v.label + (f"\npooled over {', '.join(pooled)}" if pooled else "")


X_LABELS = {"lr": "learning rate", "l1": "L1 lambda", "batch_size": "batch size"}


def chart_lr(ctx: Context) -> Chart | Missing:
    """Learning-rate sensitivity: log x, mean with CI band, one line per optimizer."""
    return _line_chart(ctx, "lr", "lr_sensitivity", "Which learning rate, for which optimizer?",
                       3, "log")


def chart_l1(ctx: Context) -> Chart | Missing:
    """L1 lambda vs accuracy (symmetric log x so that lambda = 0 has a place)."""
    return _line_chart(ctx, "l1", "l1", "How much L1 regularisation helps or hurts?", 2,
                       "symlog")


def chart_batch_size(ctx: Context) -> Chart | Missing:
    """Batch size vs the metric and vs training time per epoch."""
    key, question = "batch_size", "Which batch size: what it costs per epoch, what it gives?"
    views = [v for v in ctx.views if "batch_size" in v.varied]
    if not views:
        return Missing(key, question, NEEDS[key])
    fig, facets = _facets(len(views), nrows_per=2, size=(4.6, 3.0))
    rows = []
    with _style():
        for v, (ax_m, ax_t) in zip(views, facets, strict=False):
            hue = v.hue
            groups = [(None, v.runs)] if hue is None else list(v.runs.groupby(hue))
            colors = _colors([g for g, _ in groups])
            for level, g in groups:
                agg = tables.aggregate(g, ["batch_size"], [v.metric, "epoch_seconds"])
                spread = g.groupby("batch_size")["epoch_seconds"].agg(
                    epoch_seconds_median="median", epoch_seconds_min="min",
                    epoch_seconds_max="max").reset_index()
                agg = agg.merge(spread, on="batch_size")
                agg["study"], agg["line"] = v.name, level
                rows.append(agg)
                xs = agg["batch_size"].to_numpy(float)
                color = colors[level] if hue else "0.2"
                label = str(level) if hue else None
                _band(ax_m, xs, agg[f"{v.metric}_mean"].to_numpy(float),
                      agg[f"{v.metric}_ci95"].to_numpy(float), color, label,
                      bounds=metric_bounds(v.metric))
                ax_t.plot(xs, agg["epoch_seconds_median"] * 1e3, "o-", color=color, lw=1.8,
                          ms=5, label=label)
                ax_t.fill_between(xs, agg["epoch_seconds_min"] * 1e3,
                                  agg["epoch_seconds_max"] * 1e3, color=color, alpha=0.2, lw=0)
            for ax in (ax_m, ax_t):
                ax.set_xscale("log", base=2)
                ticks = sorted(v.runs["batch_size"].astype(float).unique())
                ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
                ax.minorticks_off()
            ax_m.set_title(_facet_title(v, ("batch_size", hue)), fontsize=10)
            ax_m.set_xlabel("")
            ax_m.set_ylabel(f"{metric_label(v.metric)}\n(mean, 95% CI band)")
            ax_t.set_yscale("log")
            _plain_log_ticks(ax_t)
            ax_t.set_xlabel("batch size (examples, log scale)")
            ax_t.set_ylabel("training time per epoch\n(ms, median, min-max band)")
            if hue:
                _legend_outside(ax_m, hue)
    png, files = _save(fig, ctx.folder, key)
    caption = ("Top: the metric (mean over seeds, 95% CI band). Bottom: wall-clock training "
               "time per epoch measured inside the sweep (median over seeds, band from the "
               "fastest to the slowest seed; log scale). Sweep "
               "timings share the machine with other work: for clean speed figures use the "
               "timing chart below.")
    return Chart(key, "batch size", question, caption, png, files,
                 ctx.write_table(pd.concat(rows, ignore_index=True), key))


def best_configs(v: StudyView, per_level: int = 1, top: int = 3) -> pd.DataFrame:
    """The best configuration per level of the study's hue factor, else its `top` best."""
    ranked = v.ranked()
    if v.hue:
        return ranked.groupby(v.hue, sort=False).head(per_level)
    return ranked.head(top)


def chart_curves(ctx: Context) -> Chart | Missing:
    """Training loss and validation metric per epoch of the best configurations, CI bands."""
    key, question = "curves", "How do the best configurations train, epoch by epoch?"
    views = [v for v in ctx.views if not v.ranked().empty]
    if not views or ctx.curves.empty:
        return Missing(key, question, NEEDS[key])
    fig = Figure(figsize=(12.5, 2.9 * len(views)), layout="constrained")
    rows = []
    with _style():
        subfigs = fig.subfigures(len(views), 1, squeeze=False)[:, 0]
        for v, sub in zip(views, subfigs, strict=True):
            ax_l, ax_m, ax_key = sub.subplots(1, 3, width_ratios=[1, 1, 0.72])
            best = best_configs(v)
            colors = _colors(list(range(len(best))))
            log_metric = _log_metric(v.metric)
            for i, (_, conf) in enumerate(best.iterrows()):
                label = _wrap(v.config_label(conf), 40)
                sel = ctx.curves[(ctx.curves["study"] == v.name) &
                                 (ctx.curves["trial"] == conf["trial"])]
                for ax, curve in ((ax_l, "train_loss"), (ax_m, v.metric)):
                    c = sel[sel["curve"] == curve]
                    if c.empty:
                        continue
                    log = curve == "train_loss" or log_metric
                    agg = _curve_stats(c, log=log)
                    agg["study"], agg["config"], agg["curve"] = v.name, label, curve
                    rows.append(agg)
                    ax.plot(agg["epoch"], agg["center"], color=colors[i], label=label, lw=1.8)
                    lo, hi = agg["low"].to_numpy(float), agg["high"].to_numpy(float)
                    if not log:
                        lo, hi = np.clip(lo, *metric_bounds(curve)), np.clip(hi, *metric_bounds(
                            curve))
                    ax.fill_between(agg["epoch"], lo, hi, color=colors[i], alpha=0.2, lw=0)
            sub.suptitle(v.label, x=0.01, ha="left", fontsize=10, fontweight="bold")
            kind = (v.runs["loss"].iloc[0].upper() if v.runs["loss"].nunique() == 1 else
                    "each its own")
            ax_l.set_title(f"training loss ({kind})", fontsize=9)
            ax_l.set_ylabel("geometric mean\n(log scale)")
            ax_l.set_yscale("log")
            ax_m.set_title(metric_label(v.metric), fontsize=9)
            ax_m.set_ylabel("geometric mean\n(log scale)" if log_metric else
                            "mean, 95% CI band")
            if log_metric:
                ax_m.set_yscale("log")
            for ax in (ax_l, ax_m):
                if ax.get_yscale() == "log":
                    _plain_log_ticks(ax)
                _epoch_axis(ax)
            ax_key.axis("off")
            handles, labels = ax_l.get_legend_handles_labels()
            if handles:
                ax_key.legend(handles, labels, loc="center left", fontsize=8, frameon=False,
                              title="configuration (best first)", title_fontsize=8)
    png, files = _save(fig, ctx.folder, key)
    caption = ("One row per study: the best configuration per optimizer (or loss), else the "
               "three best. Left: training loss, geometric mean over seeds with a 95% CI "
               "computed on log10(loss) (losses span decades, and an arithmetic CI would reach "
               "below zero); losses of different kinds (MSE, BCE) are not comparable in height. "
               "Right: the study's metric per epoch, mean over seeds with a 95% CI band (a loss "
               "metric like the training loss, on a log scale). Diverged seeds stop at the "
               "epoch they diverged (curves are never padded), so late epochs may average "
               "fewer seeds.")
    return Chart(key, "training curves", question, caption, png, files,
                 ctx.write_table(pd.concat(rows, ignore_index=True) if rows else
                                 pd.DataFrame(), key))


def _epoch_axis(ax: Any) -> None:
    """Whole-number epoch ticks (1, 5, 10, ...) with an 'epoch' label."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True, min_n_ticks=2))
    ax.set_xlabel("epoch")


def _curve_stats(c: pd.DataFrame, log: bool) -> pd.DataFrame:
    """Per epoch: center and 95% CI bounds over seeds (in log10 space when `log`)."""
    values = c.assign(value=np.log10(c["value"].where(c["value"] > 0))) if log else c
    agg = tables.aggregate(values, ["epoch"], ["value"])
    half = agg["value_ci95"].to_numpy(float)
    center = agg["value_mean"].to_numpy(float)
    lo, hi = center - half, center + half
    if log:
        center, lo, hi = 10 ** center, 10 ** lo, 10 ** hi
    return pd.DataFrame({"epoch": agg["epoch"], "center": center, "low": lo, "high": hi,
                         "n": agg["value_n"], "scale": "log10" if log else "linear"})


def _plain_log_ticks(ax: Any) -> None:
    """Label a log y axis with plain numbers at 1, 2, 5 x 10^k (fewer over many decades)."""
    lo, hi = ax.get_ylim()
    _log_ticks(ax, "y", lo, hi)


def _log_ticks(ax: Any, axis: str, lo: float, hi: float) -> None:
    """Plain-number labels on a log axis ('0.001', '0.02', '10'): at 1, 2, 5 x 10^k over up to
    two decades, 1 and 3 over up to three, else powers of ten only, so labels never collide."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    decades = math.log10(hi / lo) if lo > 0 and hi > lo else 1.0
    subs = (1.0, 2.0, 5.0) if decades <= 2.2 else (1.0, 3.0) if decades <= 3.2 else (1.0,)
    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_locator(LogLocator(base=10, subs=subs))
    target.set_major_formatter(FuncFormatter(lambda t, _: fmt_num(float(f"{t:.2g}"), 2)))
    target.set_minor_formatter(NullFormatter())


def crossovers(timing: pd.DataFrame) -> pd.DataFrame:
    """Where CUDA starts beating the CPU per (task, model, width, engine, k, dtype).

    Columns: the group keys, `status` ('crossover', 'cpu_faster', 'cuda_faster' or
    'cpu_only'/'cuda_only'), and `batch_size` (the first size at which CUDA is faster after one
    at which the CPU is) for a crossover.
    """
    keys = ["task", "model", "width", "engine", "k", "dtype"]
    rows = []
    for key, g in timing.groupby(keys, dropna=False):
        piv = g.pivot_table(index="batch_size", columns="device",
                            values="epoch_seconds_median", aggfunc="median")
        row = dict(zip(keys, key, strict=True))
        if not {"cpu", "cuda"} <= set(piv.columns):
            row["status"] = "cpu_only" if "cpu" in piv.columns else "cuda_only"
        else:
            both = piv.dropna(subset=["cpu", "cuda"]).sort_index()
            faster = (both["cuda"] < both["cpu"]).tolist()
            sizes = both.index.tolist()
            row["status"] = "cuda_faster" if all(faster) else (
                "cpu_faster" if not any(faster) else "crossover")
            for i in range(1, len(faster)):
                if faster[i] and not faster[i - 1]:
                    row["batch_size"] = sizes[i]
                    row["previous_batch_size"] = sizes[i - 1]
                    break
        rows.append(row)
    return pd.DataFrame(rows)


def latest_timing(timing: pd.DataFrame) -> pd.DataFrame:
    """One measurement per setting: the newest file wins where several measured the same."""
    keys = ["task", "model", "width", "batch_size", "engine", "k", "device", "dtype"]
    return timing.sort_values("created", na_position="first").drop_duplicates(keys, keep="last")


def _timing_panel(ax: Any, sub: pd.DataFrame, cross: pd.DataFrame, task: str, model: str,
                  w: Any, colors: dict[Any, Any], legend: dict[str, Any]) -> None:
    """One workload at one width: a line per (device, engine, K), crossover marked, log axes."""
    for (dev, engine, k), g in sub.groupby(["device", "engine", "k"], dropna=False):
        g = g.sort_values("batch_size")
        label = f"{dev}, {engine} engine" + (f" (K={int(k)} models at once)"
                                             if k and k > 1 else "")
        med = g["per_trial"] * 1e3
        iqr = g["iqr_over_median"].astype(float).fillna(0) * med
        line = ax.errorbar(g["batch_size"], med, yerr=[np.minimum(iqr / 2, med * 0.99), iqr / 2],
                           marker="o" if dev == "cpu" else "s", color=colors[engine], lw=1.6,
                           capsize=3, ls="-" if dev == "cpu" else "--")
        legend.setdefault(label, line)
    cw = cross[(cross["task"].astype(str) == task) & (cross["model"].astype(str) == model)]
    cw = cw[cw["width"] == w] if w is not None else cw
    for _, c in cw[cw["status"] == "crossover"].iterrows():
        xc = math.sqrt(c["batch_size"] * c["previous_batch_size"])
        ax.axvline(xc, color="0.3", ls=":", lw=1.5)
        ax.text(xc, 0.97, f" CUDA faster\n from batch {int(c['batch_size'])}",
                transform=ax.get_xaxis_transform(), va="top", fontsize=8)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    if not sub.empty:
        _plain_log_ticks(ax)
        ticks = sorted(sub["batch_size"].unique())
        ax.set_xticks(ticks, [f"{b:g}" for b in ticks])
    ax.minorticks_off()


def chart_timing(ctx: Context) -> Chart | Missing:
    """CPU vs CUDA time per epoch by batch size and width, with the crossover marked."""
    key, question = "timing", "Is the GPU worth it for a model this small, and from which batch?"
    t = ctx.timing
    if t.empty or t["epoch_seconds_median"].isna().all():
        return Missing(key, question, NEEDS[key])
    t = latest_timing(t.dropna(subset=["epoch_seconds_median", "batch_size"]))
    # Per-trial time, so a batched group of K runs compares with one reference run.
    t["per_trial"] = t["per_trial_epoch_seconds_median"].astype(float).fillna(
        t["epoch_seconds_median"].astype(float) / t["k"].fillna(1).astype(float))
    widths = sorted(t["width"].dropna().unique().tolist()) or [None]
    workloads = sorted({(str(a), str(b)) for a, b in zip(t["task"], t["model"], strict=True)})
    cross = crossovers(t)
    fig = Figure(figsize=(4.6 * len(widths), 3.3 * len(workloads) + 0.8), layout="constrained")
    grid = fig.subplots(len(workloads), len(widths), squeeze=False)
    colors = _colors(sorted(t["engine"].dropna().unique()))
    notes = []
    legend: dict[str, Any] = {}
    with _style():
        for (task, model), axes in zip(workloads, grid, strict=True):
            for w, ax in zip(widths, axes, strict=True):
                sub = t[(t["task"].astype(str) == task) & (t["model"].astype(str) == model)]
                sub = sub if w is None else sub[sub["width"] == w]
                _timing_panel(ax, sub, cross, task, model, w, colors, legend)
                ax.set_title(f"{task}/{model}, hidden width {int(w)}" if w is not None else
                             f"{task}/{model}", fontsize=10)
                ax.set_xlabel("batch size (examples)")
                ax.set_ylabel("ms per epoch per model\n(median; bar: IQR)")
        order = sorted(legend)
        fig.legend([legend[k] for k in order], order, loc="outside lower center",
                   ncols=min(len(legend), 4), fontsize=8, frameon=False)
    if "cuda" not in set(t["device"]):
        fig.suptitle("CPU only: no CUDA timings were found, so there is no CPU/CUDA crossover "
                     "to mark", fontsize=10, color="#8a6d00",
                     bbox={"boxstyle": "round", "fc": "#fff3cd", "ec": "#d4a017"})
    for status, text in (("cpu_only", "only CPU timings exist: the CPU/CUDA crossover is not "
                                      "measured (run `bench time --device cuda` on a GPU)"),
                         ("cpu_faster", "the CPU is faster at every batch size measured"),
                         ("cuda_faster", "CUDA is faster at every batch size measured")):
        if (cross["status"] == status).any():
            notes.append(text)
    noisy = int(t["noisy"].fillna(False).astype(bool).sum())
    if noisy:
        notes.append(f"{noisy} of {len(t)} measurements are flagged noisy (IQR/median high)")
    png, files = _save(fig, ctx.folder, key)
    hosts = ", ".join(sorted({f"{h} ({g or 'no GPU'})" for h, g in
                              zip(t["host"], t["gpu_name"], strict=True)}))
    caption = (f"Median time per training epoch and per trained model (a batched group's "
               f"time divided by its K models) over repeats, measured by `bench time` on "
               f"{hosts}; both axes on a log scale. Colour: engine; solid line and circles: CPU, "
               "dashed line and squares: CUDA. " + ("Dotted vertical line: where CUDA becomes faster. "
                           if (cross["status"] == "crossover").any() else "") +
               ("; ".join(n[0].upper() + n[1:] for n in notes) + "." if notes else ""))
    caption = caption[0].upper() + caption[1:]
    ctx.write_table(cross, "timing_crossover")
    return Chart(key, "CPU vs CUDA", question, caption, png, files,
                 ctx.write_table(t, "timing_latest"))


def importances(study: tables.StudyData) -> tuple[dict[str, float], str | None]:
    """Optuna parameter importances, or an empty dict and the reason they cannot be computed."""
    import optuna

    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    if len(complete) < 2:
        return {}, f"{len(complete)} completed trial(s): importances need at least 2"
    varying = {k for k in complete[0].params
               if len({str(t.params.get(k)) for t in complete}) > 1}
    if not varying:
        return {}, "no parameter varies across the completed trials"
    try:
        if len(study.directions) > 1:
            # PED-ANOVA ranks by "lower is better" for a custom target: negate a maximised one.
            sign = -1.0 if study.direction == "maximize" else 1.0
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*computes the importances of params")
                return dict(optuna.importance.get_param_importances(
                    study.study, target=lambda t: sign * t.values[0])), None
        return dict(optuna.importance.get_param_importances(study.study)), None
    except Exception as exc:  # optuna raises several types for degenerate studies
        return {}, f"optuna could not compute them ({type(exc).__name__}: {exc})"


def chart_history(ctx: Context) -> list[Chart | Missing]:
    """Per study: Optuna optimisation history (value and best so far) and param importances."""
    out: list[Chart | Missing] = []
    question = "How did the search progress, and which parameters mattered?"
    for s in ctx.studies:
        trials = s.trials
        done = [t for t in trials if t.state.name == "COMPLETE" and t.values]
        if not done:
            continue
        imp, why = importances(s)
        fig = Figure(figsize=(10, 3.4), layout="constrained")
        ax_h, ax_i = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
        maximize = s.direction == "maximize"
        with _style():
            xs = [t.number for t in done]
            ys = [t.values[0] for t in done]
            ax_h.plot(xs, ys, "o", color="#1f77b4", label="completed trial", ms=5)
            best = np.maximum.accumulate(ys) if maximize else np.minimum.accumulate(ys)
            ax_h.step(xs, best, where="post", color="#d62728", label="best so far")
            failed = [t.number for t in trials if t.state.name in ("FAIL", "PRUNED")]
            if failed:
                _diverged_marks(ax_h, failed, "0.3")
                ax_h.plot([], [], "x", color="0.3", label="failed/pruned (e.g. diverged)")
            from matplotlib.ticker import MaxNLocator

            ax_h.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax_h.set_xlabel("trial number")
            ax_h.set_ylabel(f"{metric_label(s.objective)}\n(objective, mean over seeds)")
            ax_h.set_title(f"{s.name}: optimisation history", fontsize=10)
            ax_h.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22),
                        ncols=3, frameon=False)
            if imp:
                names = list(imp)[::-1]
                ax_i.barh(names, [imp[n] for n in names], color="#4c72b0", height=0.5)
                ax_i.set_xlim(0, 1)
                ax_i.set_xlabel("importance (PED-ANOVA, sums to 1)")
                ax_i.set_title("parameter importances", fontsize=10)
            else:
                ax_i.axis("off")
                ax_i.text(0.5, 0.5, f"parameter importances unavailable:\n{_wrap(why, 40)}",
                          ha="center", va="center", fontsize=9, transform=ax_i.transAxes)
        key = f"history_{_slug(s.name)}"
        png, files = _save(fig, ctx.folder, key)
        table = pd.DataFrame({"param": list(imp), "importance": list(imp.values())})
        caption = (f"{len(done)} completed, {len(trials) - len(done)} failed or pruned trials. "
                   + (f"Importances not shown: {why}." if why else
                      "Importances: " + ", ".join(f"{k} {v:.2f}" for k, v in imp.items()) + "."))
        out.append(Chart(key, f"search: {s.name}", f"{s.name}: {question[0].lower()}"
                         f"{question[1:]}", caption, png, files,
                         ctx.write_table(table, f"importances_{_slug(s.name)}")))
    if not out:
        out.append(Missing("history", question, NEEDS["history"]))
    return out


def _wrap(text: str | None, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text or "", width))


def _slug(name: str) -> str:
    """A file-name part unique per study name: the name itself when it is short and plain
    (lower-case letters, digits, - and _), else its first 40 safe characters and a hash of the
    whole name, so 'a b' and 'a_b' (or 'A' and 'a' on a case-insensitive disk) never share a file.
    """
    if re.fullmatch(r"[a-z0-9_-]{1,60}", name):
        return name
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "_" for c in name)[:40]
    return f"{safe}-{hashlib.sha256(name.encode('utf-8', 'surrogatepass')).hexdigest()[:10]}"


def retrain_for_boundary(run_spec: dict[str, Any]) -> tuple[Any, Any, Any, Any]:
    """Retrain one stored run deterministically; return (model, head, RunResult, TaskData).

    Same spec and seed give identical weights with the reference engine, so the boundary drawn
    is the one of the stored run (up to engine and device rounding). Runs stored for CUDA are
    retrained on the CPU where CUDA is absent.
    """
    import torch

    from bench.catalog.models import build_module
    from bench.engines.reference import train
    from bench.engines.setup import load_data, plan_run
    from bench.spec import RunSpec

    spec = RunSpec.from_dict(run_spec)
    if spec.device != "cpu" and not torch.cuda.is_available():
        spec = spec.replace(device="cpu")
    result = train(spec, keep_params=True)
    data = load_data(spec, "cpu")
    plan = plan_run(spec, data.n_train)
    model = build_module(plan.arch).to(dtype=plan.dtype)
    model.load_state_dict(result.params)
    return model, plan.head, result, data


def boundary_grid(model: Any, head: Any, x: np.ndarray, steps: int = 200
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """P(class 1) of `model` on a grid spanning the data with a 10% margin."""
    import torch

    from bench.engines.setup import predict

    lo, hi = x.min(axis=0), x.max(axis=0)
    pad = 0.1 * (hi - lo)
    g0 = np.linspace(lo[0] - pad[0], hi[0] + pad[0], steps)
    g1 = np.linspace(lo[1] - pad[1], hi[1] + pad[1], steps)
    xx, yy = np.meshgrid(g0, g1)
    dtype = next(model.parameters()).dtype
    pts = torch.tensor(np.c_[xx.ravel(), yy.ravel()], dtype=dtype)
    out = predict(model, pts, head).numpy()
    if out.shape[1] == 1:
        p = (out[:, 0] + 1) / 2 if head.activation == "tanh" else out[:, 0]
    else:
        p = out[:, 1] / np.clip(out.sum(axis=1), 1e-12, None)
    return xx, yy, p.reshape(xx.shape)


def chart_boundaries(ctx: Context) -> list[Chart | Missing]:
    """Decision boundary of the best model per optimizer on each 2-D task, data overlaid."""
    question = "What did the best model learn? (decision boundary, as the notebooks draw it)"
    views = [v for v in ctx.views
             if registry.get_task(v.task).input_dim == 2
             and registry.get_task(v.task).kind != "regression" and not v.ranked().empty]
    if not views:
        return [Missing("boundaries", question, NEEDS["boundaries"])]
    if not ctx.boundaries:
        return [Missing("boundaries", question, "a report run without --no-boundaries")]
    out: list[Chart | Missing] = []
    for v in views:
        try:
            out.append(_boundary_chart(ctx, v, question))
        except (UsageError, ValueError, TypeError, KeyError, RuntimeError, StopIteration) as exc:
            out.append(Missing(f"boundary_{_slug(v.name)}", f"{v.name}: {question}",
                               f"stored runs that retrain ({type(exc).__name__}: {exc})"))
    return out


def _boundary_chart(ctx: Context, v: StudyView, question: str) -> Chart:
    """The decision-boundary chart of one study (raises when its best runs cannot retrain)."""
    factor = next((f for f in ("optimizer", "loss") if f in v.varied), None)
    ranked = v.ranked()
    best = ranked.groupby(factor, sort=False).head(1) if factor else ranked.head(1)
    fig, facets = _facets(len(best), ncols=3, size=(4.4, 3.9))
    rows = []
    with _style():
        for (_, conf), (ax,) in zip(best.iterrows(), facets, strict=False):
            runs = v.runs[(v.runs["trial"] == conf["trial"])].dropna(subset=[v.metric])
            median = runs.sort_values(v.metric).iloc[(len(runs) - 1) // 2]
            s = _study(ctx, v.name)
            stored = next(r for t in s.trials if t.number == conf["trial"]
                          for r in s.runs(t) if r.get("seed") == median["seed"])
            model, head, result, data = retrain_for_boundary(stored["spec"])
            xv = data.x_val.numpy()
            yv = data.y_val.numpy()
            xx, yy, p = boundary_grid(model, head, xv)
            ax.contourf(xx, yy, p, levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.55)
            ax.contour(xx, yy, p, levels=[0.5], colors="k", linewidths=1.2)
            for cls, color in ((0, "#2166ac"), (1, "#b2182b")):
                m = yv == cls
                ax.scatter(xv[m, 0], xv[m, 1], s=9, color=color, edgecolor="white",
                           linewidth=0.3, label=f"class {cls}")
            retrained = result.metrics.get(v.metric, math.nan)
            title = (f"{factor}={conf[factor]}, " if factor else "") + \
                v.config_label(conf, (factor,) if factor else ())
            ax.set_title(f"{_wrap(title, 44)}\nseed {int(median['seed'])}: "
                         f"{metric_label(v.metric)} {fmt_score(retrained, v.metric)}", fontsize=9)
            ax.set_xlabel("x₀")
            ax.set_ylabel("x₁")
            rows.append({"study": v.name, "trial": conf["trial"], "seed": median["seed"],
                         "config": title, "stored_metric": median[v.metric],
                         "retrained_metric": retrained})
        facets[0][0].legend(fontsize=7, loc="lower right", framealpha=0.8)
    fig.suptitle(_wrap(f"{v.label}: decision boundary of the best model"
                       + (f" per {factor}" if factor else ""), 48 * len(best)), fontsize=10)
    key = f"boundary_{_slug(v.name)}"
    png, files = _save(fig, ctx.folder, key)
    table = pd.DataFrame(rows)
    same = bool(np.allclose(table["stored_metric"], table["retrained_metric"], atol=1e-6))
    caption = ("Shading: predicted probability of class 1 (black line: 0.5, the decision "
               "boundary); dots: the validation set. Each panel retrains the seed with the "
               "median score of the best configuration, deterministically; the retrained "
               + ("score equals the stored one." if same else
                  "score differs slightly from the stored one (another engine or device "
                  "ran the sweep)."))
    return Chart(key, f"boundary: {v.name}", f"{v.name}: {question[0].lower()}"
                 f"{question[1:]}", caption, png, files, ctx.write_table(table, key))


def _study(ctx: Context, name: str) -> tables.StudyData:
    return next(s for s in ctx.studies if s.name == name)


CHARTS: tuple[ChartFn, ...] = (chart_optimizers, chart_lr, chart_losses, chart_l1,
                               chart_batch_size, chart_curves, chart_timing, chart_history,
                               chart_boundaries)


# --- summaries ------------------------------------------------------------------------------------

def study_summary(v: StudyView, s: tables.StudyData) -> dict[str, Any]:
    """Winner, runner-up and whether the gap is beyond the seed spread, as text and numbers."""
    states = pd.Series([t.state.name for t in s.trials]).value_counts().to_dict()
    seeds = v.runs.groupby("trial")["seed"].nunique()
    ranked = v.ranked()
    m = f"{v.metric}_mean"
    info: dict[str, Any] = {
        "study": v.name, "task": v.task, "model": v.model, "metric": v.metric,
        "trials": len(s.trials), "complete": states.get("COMPLETE", 0),
        "failed": states.get("FAIL", 0) + states.get("PRUNED", 0),
        "seeds": f"{seeds.min()}" if seeds.min() == seeds.max() else
                 f"{seeds.min()}-{seeds.max()}",
        "varied": ", ".join(v.varied) or "nothing"}
    if ranked.empty:
        info["text"] = "No configuration produced a finite score (every run diverged)."
        return info
    win = ranked.iloc[0]
    info["winner"] = v.config_label(win)
    info["winner_score"] = fmt_ci(win[m], win[f"{v.metric}_ci95"], metric=v.metric)
    better = "higher" if higher_is_better(v.metric) else "lower"
    text = (f"Winner by {metric_label(v.metric)} ({better} is better): {info['winner']} with "
            f"{info['winner_score']} over {int(win[f'{v.metric}_n'])} seed(s).")
    factor = v.hue
    rival = None
    if factor:
        others = ranked[ranked[factor] != win[factor]]
        if not others.empty:
            rival = others.iloc[0]
    elif len(ranked) > 1:
        rival = ranked.iloc[1]
    if rival is not None:
        info["runner_up"] = v.config_label(rival)
        info["runner_up_score"] = fmt_ci(rival[m], rival[f"{v.metric}_ci95"], metric=v.metric)
        verdict = _verdict(v.seed_values(win["trial"]), v.seed_values(rival["trial"]))
        info["verdict"] = verdict
        what = f"best with another {factor}" if factor else "runner-up"
        text += f" The {what}, {info['runner_up']}, scores {info['runner_up_score']}: {verdict}."
    if info["failed"]:
        text += f" {info['failed']} trial(s) failed or were pruned (e.g. diverged)."
    info["text"] = text
    return info


# --- page -----------------------------------------------------------------------------------------

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1280px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{margin-bottom:.2em} h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
.meta{color:#666;font-size:.9em} .missing{background:#fff3cd;border-left:4px solid #d4a017;
padding:.6em 1em;margin:1em 0} .rule{background:#eef4fb;border-left:4px solid #4c72b0;
padding:.6em 1em} figure{margin:1em 0 2em} figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.9em;color:#444;max-width:1100px} .q{font-weight:600;color:#333}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0} td,th{border:1px solid #ddd;
padding:3px 7px;text-align:left;vertical-align:top} th{background:#f4f4f4} td.num{text-align:right;
font-variant-numeric:tabular-nums;white-space:nowrap} td.long{min-width:18em}
.scroll{overflow-x:auto}
.v-match,.v-reproduced{color:#1a7f37;font-weight:600} .v-differs,.v-mismatch{color:#b42318;
font-weight:600} nav a{margin-right:1em}
"""


def display_frame(df: pd.DataFrame, fraction_columns: tuple[str, ...] = ()) -> pd.DataFrame:
    """The table as the page shows it: strings, floats with 3 significant digits (accuracy
    columns, and `fraction_columns`, with 3 decimals), missing values blank."""
    out = pd.DataFrame(index=df.index)
    for c in df.columns:
        frac = c in fraction_columns or is_fraction_metric(str(c).removesuffix("_mean")
                                                           .removesuffix("_ci95"))
        out[c] = [_cell_text(x, frac) for x in df[c]]
    return out


def _cell_text(x: Any, fraction: bool = False) -> str:
    if x is None or x is pd.NA or (isinstance(x, float) and math.isnan(x)):
        return ""
    if fraction and isinstance(x, float | np.floating):
        return f"{x:.3f}"
    if isinstance(x, float | np.floating | int | np.integer) and not isinstance(x, bool):
        return fmt_num(x)
    return str(x)


def _html_table(df: pd.DataFrame, max_rows: int = 60, cell_class: Callable[[str, str], str]
                | None = None) -> str:
    """An HTML table of `display_frame(df)`: readable headers (no underscores), numbers right
    aligned, long text cells wide enough to read."""
    e = html.escape
    shown = display_frame(df.head(max_rows))
    numeric = {c for c in df.columns if pd.api.types.is_numeric_dtype(df[c])
               and not pd.api.types.is_bool_dtype(df[c])}
    head = "".join(f"<th>{e(str(c).replace('_', ' '))}</th>" for c in shown.columns)
    rows = []
    for row in shown.itertuples(index=False):
        cells = []
        for c, text in zip(shown.columns, row, strict=True):
            cls = [*(["num"] if c in numeric else []), *(["long"] if len(text) > 80 else []),
                   *([cell_class(c, text)] if cell_class and cell_class(c, text) else [])]
            attr = f" class='{' '.join(cls)}'" if cls else ""
            cells.append(f"<td{attr}>{e(text)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    more = f"<p class='meta'>{len(df) - max_rows} more rows in the CSV.</p>" \
        if len(df) > max_rows else ""
    return (f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>"
            + "".join(rows) + f"</tbody></table></div>{more}")


def _md_table(df: pd.DataFrame, max_rows: int = 40) -> str:
    shown = display_frame(df.head(max_rows))

    def cell(x: str) -> str:
        return x.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(str(c).replace("_", " ") for c in df.columns) + " |",
             "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(x) for x in row) + " |"
              for row in shown.itertuples(index=False)]
    if len(df) > max_rows:
        lines.append(f"\n{len(df) - max_rows} more rows in the CSV.")
    return "\n".join(lines)


def reproduce_display(repro: pd.DataFrame) -> pd.DataFrame:
    """The reproduction table with each row's numbers formatted for its own metric."""
    out = repro.copy()
    values = [c for c in ("notebook_figure", "mean", "ci95", "val_metric_mean") if c in out]
    if "metric" in out and values:
        for c in values:
            out[c] = [fmt_score(x, str(m)) if pd.notna(x) else ""
                      for x, m in zip(out[c], out["metric"], strict=True)]
    return out


TIMING_DISPLAY = {"epoch_seconds_median": ("epoch ms (median)", 1e3),
                  "iqr_over_median": ("IQR / median (%)", 100.0),
                  "samples_per_second_median": ("samples/s (median)", 1.0)}


def timing_display(timing: pd.DataFrame) -> pd.DataFrame:
    """The timing table with units a reader can use: ms per epoch, spread in %, samples/s."""
    cols = ["host", "gpu_name", "task", "model", "width", "batch_size", "engine", "k",
            "device", "epoch_seconds_median", "iqr_over_median", "noisy",
            "samples_per_second_median"]
    t = timing[[c for c in cols if c in timing.columns]].copy()
    if "gpu_name" in t and t["gpu_name"].isna().all():
        t = t.drop(columns="gpu_name")
    for c, (_name, scale) in TIMING_DISPLAY.items():
        if c in t:
            t[c] = pd.to_numeric(t[c], errors="coerce") * scale
    for c in ("width", "batch_size", "k"):
        if c in t:
            t[c] = pd.to_numeric(t[c], errors="coerce").astype("Int64")
    if "noisy" in t:
        t["noisy"] = t["noisy"].map({True: "yes", False: ""}).fillna("")
    return t.rename(columns={**{c: n for c, (n, _) in TIMING_DISPLAY.items()},
                             "k": "K (models per run)"})


def summary_display(summaries: list[dict[str, Any]]) -> pd.DataFrame:
    """The per-study summary as the page shows it: few, readable columns."""
    df = pd.DataFrame(summaries).reindex(columns=list(SUMMARY_COLUMNS))
    out = pd.DataFrame({
        "study": df["study"], "task / model": df["task"] + " / " + df["model"],
        "metric": [metric_label(m) for m in df["metric"]], "varied": df["varied"],
        "trials (failed or pruned)": [f"{t} ({f})" if f else str(t)
                   for t, f in zip(df["trials"], df["failed"], strict=True)],
        "seeds": df["seeds"], "winner": df["winner"], "winner score": df["winner_score"],
        "runner-up": df["runner_up"], "runner-up score": df["runner_up_score"]})
    return out.dropna(axis=1, how="all")


SUMMARY_COLUMNS = ("study", "task", "model", "metric", "varied", "trials", "complete", "failed",
                   "seeds", "winner", "winner_score", "runner_up", "runner_up_score")


def render_html(result: ReportResult, summaries: list[dict[str, Any]],
                extra: dict[str, pd.DataFrame], storage: str | None) -> str:
    """The self-contained page: summary per study, charts (base64 PNG), tables, gaps."""
    e = html.escape
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
             f"<title>nnbench report</title><style>{CSS}</style></head><body>",
             "<h1>nnbench report</h1>",
             f"<p class='meta'>Generated {datetime.now():%Y-%m-%d %H:%M} from storage "
             f"<code>{e(display_url(storage) if storage else 'none')}</code>. "
             "Tables (CSV) and charts (PNG, SVG) are in "
             "the same folder as this page.</p>"]
    parts.append("<nav>" + "".join(f"<a href='#{a}'>{t}</a>" for a, t in (
        ("studies", "Studies"), ("charts", "Charts"), ("reproduction", "Reproduction"),
        ("timing", "Timing"), ("tables", "Tables"))) + "</nav>")
    if result.notes or result.missing:
        items = [f"<li>{_md_code_html(n)}</li>" for n in result.notes]
        items += [f"<li><b>{e(m.question)}</b> not answered: needs {_md_code_html(m.needs)}.</li>"
                  for m in result.missing]
        parts.append("<div class='missing'><b>Missing data</b><ul>" + "".join(items) +
                     "</ul></div>")
    parts.append("<h2 id='studies'>Studies</h2>")
    parts.append(f"<p class='rule'><b>Rule.</b> {e(SIGNIFICANCE_RULE)}</p>")
    if summaries:
        parts.append(_html_table(summary_display(summaries), cell_class=lambda c, text: (
            "num" if c.endswith("score") else "")))
        parts += [f"<p><b>{e(s['study'])}</b>: {e(s['text'])}</p>" for s in summaries]
    else:
        parts.append("<p>No study with runs to summarise.</p>")
    parts.append("<h2 id='charts'>Charts</h2>")
    for c in result.charts:
        img = base64.b64encode(c.png).decode("ascii")
        links = " · ".join(f"<a href='{e(f)}'>{e(Path(f).suffix[1:].upper())}</a>"
                           for f in [*c.files, *([c.table] if c.table else [])])
        parts.append(f"<figure id='{e(c.key)}'><h3>{e(c.question)}</h3>"
                     f"<img alt='{e(c.title)}' src='data:image/png;base64,{img}'>"
                     f"<figcaption>{e(c.caption)} <span class='meta'>[{links}]</span>"
                     "</figcaption></figure>")
    parts.append("<h2 id='reproduction'>Reproduction of the notebooks</h2>")
    repro = extra.get("reproduce")
    if repro is None:
        parts.append("<p class='missing'>No reproduction table (results/reproduce.csv): run "
                     "<code>bench reproduce</code>.</p>")
    else:
        numbers = ("notebook_figure", "mean", "ci95", "val_metric_mean")
        parts.append(_html_table(reproduce_display(repro), cell_class=lambda c, text: (
            f"v-{text}" if c == "verdict" and text.replace("-", "").isalnum() else
            "num" if c in numbers else "")))
    parts.append("<h2 id='timing'>Timing measurements</h2>")
    timing = extra.get("timing")
    if timing is None or timing.empty:
        parts.append("<p class='missing'>No timing files (results/timing/*.json, "
                     "results/baselines/timing*.json): run <code>bench time</code>.</p>")
    else:
        parts.append(_html_table(timing_display(timing)))
    parts.append("<h2 id='tables'>Tables</h2><ul>")
    parts += [f"<li><a href='{e(str(f))}'>{e(str(f))}</a></li>" for f in result.files
              if str(f).endswith(".csv")]
    parts.append("</ul></body></html>")
    return "\n".join(parts)


def _md_code_html(text: str) -> str:
    """Turn `code` spans of a NEEDS sentence into <code> for the HTML page."""
    pieces = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(pieces))


def render_markdown(result: ReportResult, summaries: list[dict[str, Any]],
                    extra: dict[str, pd.DataFrame], storage: str | None) -> str:
    """The Markdown twin of the page, linking the PNG files."""
    lines = ["# nnbench report", "",
             f"Generated {datetime.now():%Y-%m-%d %H:%M} from storage "
             f"`{display_url(storage) if storage else 'none'}`. "
             "The self-contained page is `index.html`.", ""]
    if result.notes or result.missing:
        lines += ["## Missing data", ""]
        lines += [f"- {n}" for n in result.notes]
        lines += [f"- **{m.question}** not answered: needs {m.needs}." for m in result.missing]
        lines.append("")
    lines += ["## Studies", "", f"> **Rule.** {SIGNIFICANCE_RULE}", ""]
    if summaries:
        lines += [_md_table(summary_display(summaries)), ""]
        lines += [f"- **{s['study']}**: {s['text']}" for s in summaries]
    else:
        lines.append("No study with runs to summarise.")
    lines += ["", "## Charts", ""]
    for c in result.charts:
        lines += [f"### {c.question}", "", f"![{c.title}]({c.files[0]})", "", c.caption,
                  f"Files: {', '.join(f'[{Path(f).name}]({f})' for f in c.files)}"
                  + (f", data [{Path(c.table).name}]({c.table})" if c.table else ""), ""]
    lines += ["## Reproduction of the notebooks", ""]
    repro = extra.get("reproduce")
    lines.append(_md_table(reproduce_display(repro)) if repro is not None else
                 "No reproduction table (results/reproduce.csv): run `bench reproduce`.")
    lines += ["", "## Tables", ""]
    lines += [f"- [{f}]({f})" for f in result.files if str(f).endswith(".csv")]
    return "\n".join(lines) + "\n"


# --- the build ----------------------------------------------------------------------------------

REPORT_MARKER = ".nnbench-report"
MARKER_SCHEMA = "nnbench.report/1"
# What a report written before the marker existed holds: it may be replaced too.
_LEGACY_FILE = re.compile(r"(index\.html|report\.md|tables/[^/]+\.csv|charts/[^/]+\.(png|svg))")


def _entries(folder: Path) -> Iterator[str]:
    """Every file, link and folder under `folder` (not followed into links), relative, lazily:
    a check can stop at the first foreign entry instead of walking a whole disk."""
    for root, dirs, files in os.walk(folder):
        rel = Path(root).relative_to(folder)
        yield from ((rel / n).as_posix() for n in files)
        yield from ((rel / n).as_posix() for n in dirs if (Path(root) / n).is_symlink())


def replace_refusal(out: str | Path) -> str | None:
    """Why the report may not replace `out`, or None when it may.

    It may create `out`, or replace an empty folder or one of its own earlier reports: a folder
    with the `.nnbench-report` marker holding only the files the marker lists (or, from before
    the marker, only index.html, report.md, tables/*.csv and charts/*.png|svg). Anything else,
    a file, a link, the working folder or a folder above it, is refused.
    """
    out = Path(out)
    if out.is_symlink():
        return "is a symbolic link"
    if not out.exists():
        return None
    if not out.is_dir():
        return "is a file, not a report folder"
    here, target = Path.cwd().resolve(), out.resolve()
    if target == here or target in here.parents:
        return "is the working folder or holds it"
    with os.scandir(out) as it:
        if next(it, None) is None:
            return None
    marker = out / REPORT_MARKER
    if marker.is_file() and not marker.is_symlink():
        try:
            data = json.loads(marker.read_text(encoding="utf-8"))
            listed = set(data["files"]) if data.get("schema") == MARKER_SCHEMA else None
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            listed = None
        if listed is None:
            return f"has an unreadable {REPORT_MARKER} marker"
        def ours(entry: str) -> bool:
            return entry == REPORT_MARKER or entry in listed
    elif not (out / "index.html").is_file():
        return "is not an nnbench report (no index.html, no .nnbench-report marker)"
    else:
        ours = _LEGACY_FILE.fullmatch
    foreign = next((e for e in _entries(out) if not ours(e)), None)
    return f"holds {foreign!r}, which no earlier report wrote" if foreign else None


def check_out(out: str | Path) -> Path:
    """`out` if the report may write there (see `replace_refusal`); else a one-line UsageError."""
    out = Path(out)
    reason = replace_refusal(out)
    if reason:
        raise UsageError(f"--out {out} {reason}; the report replaces only an empty folder or its "
                         "own earlier report: pass a new folder, e.g. --out results/report")
    parent = out.parent
    if parent.exists() and not parent.is_dir():
        raise UsageError(f"--out {out}: {parent} is a file, not a folder; pass another --out")
    return out


def build_report(storage: str | None, out: str | Path, *, timing_paths: list[Path] | None = None,
                 reproduce_path: str | Path | None = None, boundaries: bool = True,
                 ) -> ReportResult:
    """Read studies, timings and the reproduction table; write tables, charts and pages to `out`.

    Missing inputs are listed on the page, never an error. `out` must be new, empty or an
    earlier report (`check_out`), else nothing is read or written. The folder is built beside
    `out` and swapped in at the end, so a failure (a full disk, an interrupt) keeps the previous
    report intact and leaves no temporary folder behind.
    """
    out = check_out(out)
    shown = display_url(storage) if storage is not None else None
    notes: list[str] = []
    studies: list[tables.StudyData] = []
    if storage is None:
        notes.append("No Optuna storage found (results/optuna.db or results/optuna.journal): "
                     "run `make sweep` or pass --storage URL.")
    elif reason := tables.missing_storage_reason(storage):
        notes.append(f"{reason}: run `make sweep` or pass --storage URL.")
    else:
        studies = tables.load_studies(storage, notes)
        if not studies and not notes:
            notes.append(f"The storage {shown} holds no study yet: run `make sweep`.")
    for s in studies:
        if s.skipped:
            notes.append(f"Skipped {len(s.skipped)} malformed stored record(s) of study "
                         f"{s.name!r}, e.g. {s.skipped[0]}.")
        if not any(s.runs(t) for t in s.trials):
            notes.append(f"Study {s.name} has no trial with stored nnbench runs"
                         + (" (a plain Optuna study: only its history is shown)."
                            if any(t.values for t in s.trials) else "."))
    runs = tables.runs_table(studies)
    timing_paths = tables.timing_files() if timing_paths is None else timing_paths
    timing, timing_notes = tables.timing_table(timing_paths)
    notes += timing_notes
    reproduce_path = tables.DEFAULT_REPRODUCE if reproduce_path is None else reproduce_path
    repro = tables.reproduce_table(reproduce_path, notes)

    tmp: Path | None = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.building-"))
        tmp.chmod(umask_mode(0o777))  # readable like any folder, not owner-only as mkdtemp makes
        _write_marker(tmp, [])  # first, so a build killed with -9 is recognisably ours
        _remove_stale(out)
        result = _write_all(tmp, out, studies, runs, timing, repro, notes, shown, boundaries)
        _write_marker(tmp, [f.as_posix() for f in result.files])
        check_out(out)  # again: a file put into the old report meanwhile is not deleted
        _swap_in(tmp, out)
    except OSError as exc:  # a full disk, a read-only folder: nothing half-written is kept
        raise UsageError(f"cannot write the report to {out} ({exc.strerror or exc}); "
                         "the previous report is kept: free space or pass another --out") from exc
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return result


def _write_all(tmp: Path, out: Path, studies: list[tables.StudyData], runs: pd.DataFrame,
               timing: pd.DataFrame, repro: pd.DataFrame | None, notes: list[str],
               storage: str | None, boundaries: bool) -> ReportResult:
    curves = tables.curves_table(studies)
    tidy = {"runs": runs, "configs": tables.configs_table(runs),
            "trials": tables.trials_table(studies), "curves": curves, "timing": timing}
    (tmp / "tables").mkdir()
    for name, df in tidy.items():
        df.to_csv(tmp / "tables" / f"{name}.csv", index=False)
    views = study_views(runs, studies)
    ctx = Context(views, studies, curves, timing, tmp, boundaries)
    charts: list[Chart] = []
    missing: list[Missing] = []
    for fn in CHARTS:
        try:
            made = fn(ctx)
        except (ValueError, TypeError, ArithmeticError, IndexError, KeyError) as exc:
            # Stored values no sweep writes (a negative loss on a log axis, ...): that chart is
            # left out, the rest of the report stands.
            key = fn.__name__.removeprefix("chart_")
            made = Missing(key, f"chart {key}", "stored values it can draw "
                           f"({type(exc).__name__}: {str(exc)[:120]})")
        for item in made if isinstance(made, list) else [made]:
            (charts if isinstance(item, Chart) else missing).append(item)
    if not timing.empty and "cuda" not in set(timing["device"].dropna()):
        notes.append("Timing files hold CPU measurements only: the CPU/CUDA crossover is not "
                     "measured yet (run `bench time` on a CUDA machine).")
    summaries = [study_summary(v, _study(ctx, v.name)) for v in views]
    if summaries:
        pd.DataFrame(summaries).to_csv(tmp / "tables" / "summary.csv", index=False)
    files = sorted(p.relative_to(tmp) for p in tmp.rglob("*") if p.is_file())
    result = ReportResult(out, charts, missing, notes, files)
    extra = {"reproduce": repro, "timing": timing}
    write_text_atomic(tmp / "index.html", render_html(result, summaries, extra, storage))
    write_text_atomic(tmp / "report.md", render_markdown(result, summaries, extra, storage))
    result.files = sorted([*files, Path("index.html"), Path("report.md")])
    return result


def _write_marker(folder: Path, files: list[str]) -> None:
    write_json_atomic(folder / REPORT_MARKER, {
        "schema": MARKER_SCHEMA, "written_by": "bench report", "pid": os.getpid(),
        "created": datetime.now().isoformat(timespec="seconds"), "files": files})


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


def _remove_stale(out: Path) -> None:
    """Remove the `.NAME.building-*` and `.NAME.old-*` folders a report killed with -9 left
    beside `out`: only those holding the report's marker, written by a process no longer
    running, and nothing the marker does not list."""
    for folder in [*out.parent.glob(f".{out.name}.building-*"),
                   *out.parent.glob(f".{out.name}.old-*")]:
        marker = folder / REPORT_MARKER
        try:
            data = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if (folder.is_symlink() or not isinstance(data, dict) or _alive(data.get("pid"))
                or data.get("schema") != MARKER_SCHEMA):
            continue
        listed = set(data.get("files") or []) if isinstance(data.get("files"), list) else set()
        building = ".building-" in folder.name
        if building or all(e in listed or e == REPORT_MARKER for e in _entries(folder)):
            shutil.rmtree(folder, ignore_errors=True)


def _swap_in(tmp: Path, out: Path) -> None:
    """Replace `out` by the finished folder `tmp`; the old report is removed only afterwards.

    On any error or interrupt between the two renames the old report is put back.
    """
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{datetime.now():%Y%m%d%H%M%S%f}-{os.getpid()}"
        out.rename(old)
    try:
        tmp.rename(out)
    except BaseException:
        if old is not None and not out.exists():
            old.rename(out)
        raise
    finally:
        if old is not None and old.exists() and out.exists():
            shutil.rmtree(old, ignore_errors=True)
