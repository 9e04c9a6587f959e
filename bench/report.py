"""The report: pandas aggregation over seeds, seaborn charts, one HTML page and a Markdown twin.

`build_report` reads every study of an Optuna storage, the timing JSON files and the
reproduction table, and writes into one folder:

- `tables/*.csv`: tidy tables (`runs.csv` one row per trial x seed; `configs.csv` mean, std and
  95% CI over seeds per trial; `trials.csv`, `curves.csv`, `timing.csv`, and each chart's data);
- `charts/*.png` and `*.svg`: one chart per question the notebooks ask, drawn only when the
  data to answer it exists (otherwise the page says which study would provide it);
- `index.html` (self-contained: charts embedded as base64 PNG) and `report.md` (links the PNGs).

The whole folder is built next to its destination and swapped in at the end, so a report that
fails halfway leaves the previous one untouched. Figures are drawn on `matplotlib.figure.Figure`
objects (Agg canvas) inside seaborn style contexts, so nothing global is changed.

Statistics: a configuration's value is the mean over its seeds with a Student-t 95% CI
(`bench.stats.mean_ci`); one seed shows no CI. Two configurations differ beyond the
seed-to-seed spread when their 95% CIs do not overlap (Welch's t-test p is shown beside it).
"""

from __future__ import annotations

import base64
import html
import io
import math
import shutil
import tempfile
import warnings
from collections.abc import Callable
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

from bench import registry, tables
from bench.stats import mean_ci
from bench.store import write_text_atomic

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

def fmt_ci(mean: float, half: float, digits: int = 3) -> str:
    """'0.962 ± 0.011', or '0.962 (1 seed, no CI)' when there is no interval."""
    if mean is None or not math.isfinite(mean):
        return "n/a"
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
    if isinstance(value, float):
        if math.isnan(value):
            return "full"
        return f"{value:g}"
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
    fig, facets = _facets(len(views))
    rows = []
    captions = []
    with _style():
        for v, (ax,) in zip(views, facets, strict=False):
            d = v.runs.copy()
            d[factor] = d[factor].astype(str)
            order = sorted(d[factor].unique())
            other = "lr" if "lr" in v.varied and factor != "lr" else None
            if other:
                d["setting"] = [_param_text(x) for x in d[other]]
                hue_order = [_param_text(x) for x in sorted(d[other].unique())]
            finite = d[d[v.metric].notna()]
            with warnings.catch_warnings():  # seaborn 0.13 passes matplotlib's old `vert`
                warnings.simplefilter("ignore", matplotlib.MatplotlibDeprecationWarning)
                sns.boxplot(data=finite, x=factor, y=v.metric, order=order, ax=ax,
                            color="0.92", fliersize=0, width=0.6)
            sns.stripplot(data=finite, x=factor, y=v.metric, order=order, ax=ax,
                          hue="setting" if other else None,
                          hue_order=hue_order if other else None,
                          palette=sns.color_palette("viridis", len(hue_order) + 1)[:len(
                              hue_order)] if other else None,
                          color=None if other else "0.25", dodge=bool(other), size=5,
                          alpha=0.85, jitter=0.12)
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
            if other:
                _legend_outside(ax, "learning rate")
            best = v.ranked()
            if not best.empty:
                captions.append(_winner_sentence(v, factor))
    png, files = _save(fig, ctx.folder, key)
    caption = ("Each dot is one seed of one setting (coloured by learning rate where it varies); "
               "boxes span all of them; diverged runs are left out and counted under the axis. "
               + " ".join(captions))
    return Chart(key, f"{factor} comparison", question, caption, png, files,
                 ctx.write_table(pd.DataFrame(rows), key))


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
            f"({v.config_label(a, (factor,))}) {a[m]:.3f} vs best "
            f"{factor}={_param_text(b[factor])} ({v.config_label(b, (factor,))}) "
            f"{b[m]:.3f}: {verdict}.")


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
            hue = next((h for h in v.varied if h in HUE_FACTORS), None)
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
            if xscale == "symlog":
                positive = v.runs[x][v.runs[x] > 0]
                ax.set_xscale("symlog", linthresh=float(positive.min()) if len(positive) else 1)
            else:
                ax.set_xscale(xscale)
            ax.set_title(v.label, fontsize=10)
            ax.set_xlabel(f"{X_LABELS.get(x, x)} ({xscale} scale)")
            ax.set_ylabel(f"{metric_label(v.metric)}\n(mean over seeds, 95% CI band)")
            if hue:
                _legend_outside(ax, hue)
    png, files = _save(fig, ctx.folder, key)
    caption = ("Lines join the mean over seeds; the band is the 95% CI (absent where a point "
               "has one finite seed); an x on the axis marks a setting where every seed "
               "diverged.")
    return Chart(key, f"{x} sensitivity", question, caption, png, files,
                 ctx.write_table(pd.concat(rows, ignore_index=True), key))


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
            ax_m.set_title(v.label, fontsize=10)
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
    fig, facets = _facets(len(views), nrows_per=2, size=(4.6, 3.0))
    rows = []
    with _style():
        for v, (ax_l, ax_m) in zip(views, facets, strict=False):
            best = best_configs(v)
            colors = _colors(list(range(len(best))))
            for i, (_, conf) in enumerate(best.iterrows()):
                label = v.config_label(conf)
                sel = ctx.curves[(ctx.curves["study"] == v.name) &
                                 (ctx.curves["trial"] == conf["trial"])]
                for ax, curve in ((ax_l, "train_loss"), (ax_m, v.metric)):
                    c = sel[sel["curve"] == curve]
                    if c.empty:
                        continue
                    agg = _curve_stats(c, log=curve == "train_loss")
                    agg["study"], agg["config"], agg["curve"] = v.name, label, curve
                    rows.append(agg)
                    ax.plot(agg["epoch"], agg["center"], color=colors[i], label=label, lw=1.8)
                    lo, hi = agg["low"].to_numpy(float), agg["high"].to_numpy(float)
                    if curve != "train_loss":
                        lo, hi = np.clip(lo, *metric_bounds(curve)), np.clip(hi, *metric_bounds(
                            curve))
                    ax.fill_between(agg["epoch"], lo, hi, color=colors[i], alpha=0.2, lw=0)
            ax_l.set_title(v.label, fontsize=10)
            ax_l.set_ylabel("training loss, " + (v.runs["loss"].iloc[0].upper()
                                                  if v.runs["loss"].nunique() == 1 else
                                                  "each its own") +
                             "\n(geometric mean, log scale)")
            ax_l.set_yscale("log")
            ax_m.set_ylabel(f"{metric_label(v.metric)}\n(mean, 95% CI band)")
            ax_m.set_xlabel("epoch")
            _legend_outside(ax_l)
    png, files = _save(fig, ctx.folder, key)
    caption = ("The best configuration per optimizer (or loss), else the three best. Top: "
               "training loss, geometric mean over seeds with a 95% CI computed on log10(loss) "
               "(losses span decades, and an arithmetic CI would reach below zero); losses of "
               "different kinds (MSE, BCE) are not comparable in height. Bottom: the metric, "
               "mean over seeds with a 95% CI band. Diverged seeds stop at the epoch they diverged "
               "(curves are never padded), so late epochs may average fewer seeds.")
    return Chart(key, "training curves", question, caption, png, files,
                 ctx.write_table(pd.concat(rows, ignore_index=True) if rows else
                                 pd.DataFrame(), key))


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
    """Label a log y axis at 1, 2, 5 x 10^k with plain numbers, so short ranges keep labels."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda y, _: ""))


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
    cross = crossovers(t)
    fig, facets = _facets(len(widths), ncols=3)
    colors = _colors(sorted(t["engine"].dropna().unique()))
    notes = []
    with _style():
        for w, (ax,) in zip(widths, facets, strict=False):
            sub = t if w is None else t[t["width"] == w]
            for (dev, engine, task, model, k), g in sub.groupby(
                    ["device", "engine", "task", "model", "k"], dropna=False):
                g = g.sort_values("batch_size")
                marker = "o" if dev == "cpu" else "s"
                label = f"{dev}, {engine}" + (f" (K={int(k)})" if k and k > 1 else "")
                if len(sub["task"].unique()) > 1 or len(sub["model"].unique()) > 1:
                    label += f", {task}/{model}"
                med = g["per_trial"] * 1e3
                iqr = g["iqr_over_median"].astype(float).fillna(0) * med
                ax.errorbar(g["batch_size"], med, yerr=[np.minimum(iqr / 2, med * 0.99),
                                                        iqr / 2],
                            marker=marker, color=colors[engine], label=label, lw=1.6,
                            capsize=3, ls="-" if dev == "cpu" else "--")
            cw = cross[(cross["width"] == w)] if w is not None else cross
            for _, c in cw[cw["status"] == "crossover"].iterrows():
                xc = math.sqrt(c["batch_size"] * c["previous_batch_size"])
                ax.axvline(xc, color="0.3", ls=":", lw=1.5)
                ax.text(xc, 0.97, f" CUDA faster\n from batch {int(c['batch_size'])}",
                        transform=ax.get_xaxis_transform(), va="top", fontsize=8)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            _plain_log_ticks(ax)
            ticks = sorted(sub["batch_size"].unique())
            ax.set_xticks(ticks, [f"{b:g}" for b in ticks])
            ax.minorticks_off()
            ax.set_title(f"hidden width {int(w)}" if w is not None else "all widths",
                         fontsize=10)
            ax.set_xlabel("batch size (examples, log scale)")
            ax.set_ylabel("time per epoch per trained model\n(ms, median, bar: IQR; log)")
            ax.legend(fontsize=7, loc="best")
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
               f"{hosts}. Colour: engine; solid line and circles: CPU, dashed line and squares: "
               "CUDA. " + ("Dotted vertical line: where CUDA becomes faster. "
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
        target = (lambda t: t.values[0]) if len(study.directions) > 1 else None
        return dict(optuna.importance.get_param_importances(study.study, target=target)), None
    except Exception as exc:  # optuna raises several types for degenerate studies
        return {}, f"optuna could not compute them ({type(exc).__name__}: {exc})"


def chart_history(ctx: Context) -> list[Chart | Missing]:
    """Per study: Optuna optimisation history (value and best so far) and param importances."""
    out: list[Chart | Missing] = []
    question = "How did the search progress, and which parameters mattered?"
    for s in ctx.studies:
        trials = [t for t in s.trials]
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
            ax_h.legend(fontsize=8, loc="best")
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
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def retrain_for_boundary(run_spec: dict[str, Any]) -> tuple[Any, Any, Any, Any]:
    """Retrain one stored run deterministically; return (model, head, RunResult, TaskData).

    Same spec and seed give identical weights with the reference engine, so the boundary drawn
    is the one of the stored run (up to engine and device rounding). Runs stored for CUDA are
    retrained on the CPU where CUDA is absent.
    """
    import torch

    from bench.models import build_module
    from bench.spec import RunSpec
    from bench.train import load_data, plan_run, train

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

    from bench.train import predict

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
        factor = next((f for f in ("optimizer", "loss") if f in v.varied), None)
        ranked = v.ranked()
        best = ranked.groupby(factor, sort=False).head(1) if factor else ranked.head(1)
        fig, facets = _facets(len(best), ncols=3, size=(4.4, 3.9))
        rows = []
        with _style():
            for (_, conf), (ax,) in zip(best.iterrows(), facets, strict=False):
                runs = v.runs[(v.runs["trial"] == conf["trial"])].dropna(subset=[v.metric])
                median = runs.sort_values(v.metric).iloc[(len(runs) - 1) // 2]
                stored = next(r for t in _study(ctx, v.name).trials if t.number == conf["trial"]
                              for r in t.user_attrs.get("runs") or []
                              if r.get("seed") == median["seed"])
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
                             f"{metric_label(v.metric)} {retrained:.3f}", fontsize=9)
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
        out.append(Chart(key, f"boundary: {v.name}", f"{v.name}: {question[0].lower()}"
                         f"{question[1:]}", caption, png, files,
                         ctx.write_table(table, key)))
    return out


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
    info["winner_score"] = fmt_ci(win[m], win[f"{v.metric}_ci95"])
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
        info["runner_up_score"] = fmt_ci(rival[m], rival[f"{v.metric}_ci95"])
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
padding:3px 7px;text-align:left} th{background:#f4f4f4} .scroll{overflow-x:auto}
.v-match,.v-reproduced{color:#1a7f37;font-weight:600} .v-differs,.v-mismatch{color:#b42318;
font-weight:600} nav a{margin-right:1em}
"""


def _html_table(df: pd.DataFrame, max_rows: int = 60) -> str:
    shown = df.head(max_rows).copy()
    for c in shown.select_dtypes(include=["object", "string"]).columns:
        shown[c] = shown[c].where(shown[c].notna(), "")
    body = shown.to_html(index=False, na_rep="", escape=True, float_format=lambda x: f"{x:.4g}",
                         border=0)
    more = f"<p class='meta'>{len(df) - max_rows} more rows in the CSV.</p>" \
        if len(df) > max_rows else ""
    return f"<div class='scroll'>{body}</div>{more}"


def _md_table(df: pd.DataFrame, max_rows: int = 40) -> str:
    def cell(x: Any) -> str:
        if isinstance(x, float):
            return "" if math.isnan(x) else f"{x:.4g}"
        return "" if x is None or x is pd.NA else str(x).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(map(str, df.columns)) + " |",
             "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(x) for x in row) + " |"
              for row in df.head(max_rows).itertuples(index=False)]
    if len(df) > max_rows:
        lines.append(f"\n{len(df) - max_rows} more rows in the CSV.")
    return "\n".join(lines)


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
             f"<code>{e(storage or 'none')}</code>. Tables (CSV) and charts (PNG, SVG) are in "
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
        parts.append(_html_table(pd.DataFrame(summaries).reindex(
            columns=list(SUMMARY_COLUMNS)).dropna(axis=1, how="all")))
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
        table = _html_table(repro)
        for verdict in repro.get("verdict", pd.Series(dtype=str)).dropna().unique():
            table = table.replace(f"<td>{e(str(verdict))}</td>",
                                  f"<td class='v-{e(str(verdict))}'>{e(str(verdict))}</td>")
        parts.append(table)
    parts.append("<h2 id='timing'>Timing measurements</h2>")
    timing = extra.get("timing")
    if timing is None or timing.empty:
        parts.append("<p class='missing'>No timing files (results/timing/*.json, "
                     "results/baselines/timing*.json): run <code>bench time</code>.</p>")
    else:
        cols = ["host", "gpu_name", "task", "model", "width", "batch_size", "engine", "k",
                "device", "epoch_seconds_median", "iqr_over_median", "noisy",
                "samples_per_second_median"]
        parts.append(_html_table(timing[[c for c in cols if c in timing.columns]]))
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
             f"Generated {datetime.now():%Y-%m-%d %H:%M} from storage `{storage or 'none'}`. "
             "The self-contained page is `index.html`.", ""]
    if result.notes or result.missing:
        lines += ["## Missing data", ""]
        lines += [f"- {n}" for n in result.notes]
        lines += [f"- **{m.question}** not answered: needs {m.needs}." for m in result.missing]
        lines.append("")
    lines += ["## Studies", "", f"> **Rule.** {SIGNIFICANCE_RULE}", ""]
    if summaries:
        lines += [_md_table(pd.DataFrame(summaries).reindex(
            columns=list(SUMMARY_COLUMNS)).dropna(axis=1, how="all")), ""]
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
    lines.append(_md_table(repro) if repro is not None else
                 "No reproduction table (results/reproduce.csv): run `bench reproduce`.")
    lines += ["", "## Tables", ""]
    lines += [f"- [{f}]({f})" for f in result.files if str(f).endswith(".csv")]
    return "\n".join(lines) + "\n"


# --- the build ----------------------------------------------------------------------------------

def build_report(storage: str | None, out: str | Path, *, timing_paths: list[Path] | None = None,
                 reproduce_path: str | Path | None = None, boundaries: bool = True,
                 ) -> ReportResult:
    """Read studies, timings and the reproduction table; write tables, charts and pages to `out`.

    Missing inputs are listed on the page, never an error. The folder is built beside `out` and
    swapped in at the end, so a failure keeps the previous report intact.
    """
    out = Path(out)
    notes: list[str] = []
    studies: list[tables.StudyData] = []
    if storage is None:
        notes.append("No Optuna storage found (results/optuna.db or results/optuna.journal): "
                     "run `make sweep` or pass --storage URL.")
    elif tables.missing_storage_reason(storage):
        notes.append(f"{tables.missing_storage_reason(storage)}: run `make sweep` or pass "
                     "--storage URL.")
    else:
        studies = tables.load_studies(storage)
        if not studies:
            notes.append(f"The storage {storage} holds no study yet: run `make sweep`.")
    runs = tables.runs_table(studies)
    for s in studies:
        if not any(t.user_attrs.get("runs") for t in s.trials):
            notes.append(f"Study {s.name} has no trial with stored runs yet.")
    timing_paths = tables.timing_files() if timing_paths is None else timing_paths
    timing, timing_notes = tables.timing_table(timing_paths)
    notes += timing_notes
    reproduce_path = tables.DEFAULT_REPRODUCE if reproduce_path is None else reproduce_path
    repro = tables.reproduce_table(reproduce_path)
    if repro is None:
        notes.append(f"No reproduction table at {reproduce_path}: run `bench reproduce`.")

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.building-"))
    try:
        result = _write_all(tmp, out, studies, runs, timing, repro, notes, storage, boundaries)
        _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
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
        made = fn(ctx)
        for item in made if isinstance(made, list) else [made]:
            (charts if isinstance(item, Chart) else missing).append(item)
    if not timing.empty and "cuda" not in set(timing["device"].dropna()):
        notes.append("Timing files hold CPU measurements only: the CPU/CUDA crossover is not "
                     "measured yet (run `bench time` on a CUDA machine).")
    summaries = [study_summary(v, _study(ctx, v.name)) for v in views]
    files = sorted(p.relative_to(tmp) for p in tmp.rglob("*") if p.is_file())
    result = ReportResult(out, charts, missing, notes, files)
    extra = {"reproduce": repro, "timing": timing}
    if summaries:
        pd.DataFrame(summaries).to_csv(tmp / "tables" / "summary.csv", index=False)
        files.append(Path("tables/summary.csv"))
    write_text_atomic(tmp / "index.html", render_html(result, summaries, extra, storage))
    write_text_atomic(tmp / "report.md", render_markdown(result, summaries, extra, storage))
    result.files = sorted([*files, Path("index.html"), Path("report.md")])
    return result


def _swap_in(tmp: Path, out: Path) -> None:
    """Replace `out` by the finished folder `tmp`; the old report is removed only afterwards."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{datetime.now():%Y%m%d%H%M%S%f}"
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
