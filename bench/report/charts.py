"""The charts that compare swept settings: optimizers and losses (per-seed boxes), learning
rate and L1 (mean over seeds with a 95% CI band), batch size (metric and time per epoch), and
the training curves of the best configurations.

Each chart function reads a `figures.Context` and returns a `figures.Chart` (PNG, SVG and the
CSV of its data under the report folder) or a `figures.Missing` saying which study would
provide the data.
"""

from __future__ import annotations

import warnings
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on report machines; set before seaborn imports pyplot

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from bench.report import tables
from bench.report.figures import (
    NEEDS,
    X_LABELS,
    Chart,
    Context,
    Missing,
    band,
    colors_for,
    diverged_marks,
    epoch_axis,
    facet_grid,
    facet_title,
    legend_outside,
    log_metric,
    log_ticks,
    metric_bounds,
    plain_log_ticks,
    save,
    style,
    wrap,
)
from bench.report.views import (
    StudyView,
    best_configs,
    ends_sentence,
    metric_label,
    winner_sentence,
)
from bench.stats import mean_ci


def chart_optimizers(ctx: Context) -> Chart | Missing:
    """SGD vs Adam per task: distribution over seeds and learning rates."""
    return _categorical_chart(ctx, "optimizer", "optimizers",
                              "Does Adam beat SGD on this task?", ("sgd", "adam", "adamw"))


def chart_losses(ctx: Context) -> Chart | Missing:
    """MSE vs BCE: distribution over seeds (and learning rates)."""
    return _categorical_chart(ctx, "loss", "losses",
                              "Is BCE better than MSE for a sigmoid output?", ("mse", "bce"))



def _categorical_chart(ctx: Context, factor: str, key: str, question: str,
                       levels: tuple[str, ...] | None = None) -> Chart | Missing:
    """Per-seed values of the study metric by level of `factor`, across every other setting."""
    views = [v for v in ctx.views if factor in v.varied and
             (levels is None or (v.runs[factor].isin(levels).sum() and
              v.runs[factor].nunique() >= 2))]
    if not views:
        return Missing(key, question, NEEDS[key])
    fig, facets = facet_grid(len(views), size=(4.8, 3.6))
    rows = []
    captions = []
    with style():
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
            if sentence := winner_sentence(v, factor):  # '' without two ranked levels
                captions.append(sentence)
    png, files = save(fig, ctx.folder, key)
    caption = ("Each dot is one seed of one setting, coloured by its learning rate (log colour "
               "scale) where the learning rate varies; boxes span all of them; diverged runs "
               "are left out and counted under the axis. " + " ".join(captions) + " "
               + " ".join(ends_sentence(v) for v in views))
    return Chart(key, f"{factor} comparison", question, caption, png, files,
                 ctx.write_table(pd.DataFrame(rows), key))


def _seed_dots(fig: Figure, ax: Any, v: StudyView, finite: pd.DataFrame, factor: str,
               order: list[str]) -> None:
    """One dot per seed, jittered within its box; coloured on a log scale by the learning rate
    when it varies, with one colour bar (its height does not grow with the number of rates)."""
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
        log_ticks(bar.ax, "y", norm.vmin, norm.vmax)
    else:
        ax.scatter(xs, ys, color="0.25", s=22, alpha=0.85, zorder=3)



def _line_chart(ctx: Context, x: str, key: str, question: str, min_levels: int,
                xscale: str) -> Chart | Missing:
    """Mean over seeds with a 95% CI band against a numeric parameter, one line per factor."""
    views = [v for v in ctx.views if x in v.varied and v.runs[x].nunique() >= min_levels]
    if not views:
        return Missing(key, question, NEEDS[key])
    fig, facets = facet_grid(len(views))
    rows = []
    with style():
        for v, (ax,) in zip(views, facets, strict=False):
            hue = v.hue
            groups = [(None, v.runs)] if hue is None else list(v.runs.groupby(hue))
            colors = colors_for([g for g, _ in groups])
            for level, g in groups:
                agg = tables.aggregate(g, [x], [v.metric])
                agg["study"], agg["line"] = v.name, level
                rows.append(agg)
                color = colors[level] if hue else "0.2"
                band(ax, agg[x].to_numpy(float), agg[f"{v.metric}_mean"].to_numpy(float),
                      agg[f"{v.metric}_ci95"].to_numpy(float), color,
                      str(level) if hue else None, bounds=metric_bounds(v.metric))
                all_div = agg.loc[agg[f"{v.metric}_n"] == 0, x].astype(float).tolist()
                diverged_marks(ax, all_div, color)
            _pruned_marks(ax, v, x, hue, colors)
            xs = v.runs[x].astype(float)
            if xscale == "symlog":
                positive = xs[xs > 0]
                ax.set_xscale("symlog", linthresh=float(positive.min()) if len(positive) else 1)
            else:
                ax.set_xscale(xscale)
                log_ticks(ax, "x", xs.min(), xs.max())
            log_y = log_metric(v.metric)
            if log_y:
                ax.set_yscale("log")
                plain_log_ticks(ax)
            ax.set_title(facet_title(v, (x, hue)), fontsize=10)
            ax.set_xlabel(f"{X_LABELS.get(x, x)} ({xscale} scale)")
            ax.set_ylabel(f"{metric_label(v.metric)}{' (log scale)' if log_y else ''}"
                          "\n(mean over seeds, 95% CI band)")
            if hue:
                legend_outside(ax, hue)
    png, files = save(fig, ctx.folder, key)
    caption = ("Lines join the mean over seeds; the band is the 95% CI (absent where a point "
               "has one finite seed; on a log axis a band that reaches zero runs off the "
               "bottom); an x on the axis marks a setting where every seed diverged. Where a "
               "study varies other settings too, each point pools them (named under the title). "
               "Hollow markers: trials the pruner stopped, at their value when stopped, with "
               "the epoch (e4 = stopped after epoch 4); they are not in the lines. "
               + " ".join(ends_sentence(v, x) for v in views))
    return Chart(key, f"{x} sensitivity", question, caption, png, files,
                 ctx.write_table(pd.concat(rows, ignore_index=True), key))



def _pruned_marks(ax: Any, v: StudyView, x: str, hue: str | None,
                  colors: dict[Any, Any]) -> None:
    """Pruned trials as hollow markers at their value when stopped, each with its epoch."""
    pruned = v.ends[(v.ends["end"] == "pruned") & v.ends[v.metric].notna()] \
        if not v.ends.empty else v.ends
    for _, r in pruned.iterrows():
        color = colors.get(r[hue], "0.3") if hue else "0.3"
        ax.plot([float(r[x])], [float(r[v.metric])], "o", mfc="none", mec=color, mew=1.5,
                ms=7)
        if np.isfinite(r["end_epoch"]):
            ax.annotate(f"e{int(r['end_epoch'])}", (float(r[x]), float(r[v.metric])),
                        xytext=(4, -8), textcoords="offset points", fontsize=7, color=color)
    if len(pruned):
        ax.plot([], [], "o", mfc="none", mec="0.3", mew=1.5, label="pruned (eN: at epoch N)")


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
    fig, facets = facet_grid(len(views), nrows_per=2, size=(4.6, 3.0))
    rows = []
    with style():
        for v, (ax_m, ax_t) in zip(views, facets, strict=False):
            hue = v.hue
            groups = [(None, v.runs)] if hue is None else list(v.runs.groupby(hue))
            colors = colors_for([g for g, _ in groups])
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
                band(ax_m, xs, agg[f"{v.metric}_mean"].to_numpy(float),
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
            ax_m.set_title(facet_title(v, ("batch_size", hue)), fontsize=10)
            ax_m.set_xlabel("")
            ax_m.set_ylabel(f"{metric_label(v.metric)}\n(mean, 95% CI band)")
            ax_t.set_yscale("log")
            plain_log_ticks(ax_t)
            ax_t.set_xlabel("batch size (examples, log scale)")
            ax_t.set_ylabel("training time per epoch\n(ms, median, min-max band)")
            if hue:
                legend_outside(ax_m, hue)
    png, files = save(fig, ctx.folder, key)
    caption = ("Top: the metric (mean over seeds, 95% CI band). Bottom: wall-clock training "
               "time per epoch measured inside the sweep (median over seeds, band from the "
               "fastest to the slowest seed; log scale). Sweep "
               "timings share the machine with other work: for clean speed figures use the "
               "timing chart below. " + " ".join(ends_sentence(v, "batch_size") for v in views))
    return Chart(key, "batch size", question, caption, png, files,
                 ctx.write_table(pd.concat(rows, ignore_index=True), key))



def chart_curves(ctx: Context) -> Chart | Missing:
    """Training loss and validation metric per epoch of the best configurations, CI bands."""
    key, question = "curves", "How do the best configurations train, epoch by epoch?"
    views = [v for v in ctx.views if not v.ranked().empty]
    if not views or ctx.curves.empty:
        return Missing(key, question, NEEDS[key])
    fig = Figure(figsize=(12.5, 2.9 * len(views)), layout="constrained")
    rows = []
    with style():
        subfigs = fig.subfigures(len(views), 1, squeeze=False)[:, 0]
        for v, sub in zip(views, subfigs, strict=True):
            ax_l, ax_m, ax_key = sub.subplots(1, 3, width_ratios=[1, 1, 0.72])
            best = best_configs(v)
            colors = colors_for(list(range(len(best))))
            log_scale = log_metric(v.metric)
            for i, (_, conf) in enumerate(best.iterrows()):
                label = wrap(v.config_label(conf), 40)
                sel = ctx.curves[(ctx.curves["study"] == v.name) &
                                 (ctx.curves["trial"] == conf["trial"])]
                for ax, curve in ((ax_l, "train_loss"), (ax_m, v.metric)):
                    c = sel[sel["curve"] == curve]
                    if c.empty:
                        continue
                    log = curve == "train_loss" or log_scale
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
            ax_m.set_ylabel("geometric mean\n(log scale)" if log_scale else
                            "mean, 95% CI band")
            if log_scale:
                ax_m.set_yscale("log")
            for ax in (ax_l, ax_m):
                if ax.get_yscale() == "log":
                    plain_log_ticks(ax)
                epoch_axis(ax)
            ax_key.axis("off")
            handles, labels = ax_l.get_legend_handles_labels()
            if handles:
                ax_key.legend(handles, labels, loc="center left", fontsize=8, frameon=False,
                              title="configuration (best first)", title_fontsize=8)
    png, files = save(fig, ctx.folder, key)
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

