"""The charts that compare swept settings: optimizers and losses (per-seed boxes), learning
rate and L1 (mean over seeds with a 95% CI band), batch size (metric and time per epoch), and
the training curves of the best configurations.

Each chart function reads a `figures.Context` and returns a `figures.Chart` (PNG, SVG and the
CSV of its data under the report folder) or a `figures.Missing` saying which study would
provide the data.
"""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on report machines; set before seaborn imports pyplot

import numpy as np
import pandas as pd
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
    legend_outside,
    level_colors,
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
    higher_is_better,
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



def chart_inits(ctx: Context) -> Chart | Missing:
    """Weight initialisations compared, each at its best other settings (e.g. its scale)."""
    return _categorical_chart(ctx, "init", "inits", "Which weight initialisation trains best?")


def _categorical_chart(ctx: Context, factor: str, key: str, question: str,
                       levels: tuple[str, ...] | None = None) -> Chart | Missing:
    """Each level of `factor` at its own best other settings: the best configuration with that
    level (by the study's metric), its seeds as dots and its mean with the 95% CI over seeds."""
    views = [v for v in ctx.views if factor in v.varied and
             (levels is None or (v.runs[factor].isin(levels).sum() and
              v.runs[factor].nunique() >= 2))]
    if not views:
        return Missing(key, question, NEEDS[key])
    fig, facets = facet_grid(len(views), size=(4.8, 3.8))
    rows = []
    captions = []
    rng = np.random.default_rng(0)  # same jitter on every build
    with style():
        for v, (ax,) in zip(views, facets, strict=False):
            colors = level_colors(v, factor)
            best = v.ranked().groupby(factor, sort=False).head(1)
            best = best.sort_values(factor, key=lambda c: c.astype(str))
            ticks = []
            for i, (_, conf) in enumerate(best.iterrows()):
                level = conf[factor]
                ys = np.array(v.seed_values(conf["trial"]), float)
                ys = ys[np.isfinite(ys)]
                mean, half = mean_ci(ys.tolist())
                ax.scatter(i + rng.uniform(-0.15, 0.15, len(ys)), ys, s=22, alpha=0.85,
                           color=colors[level], zorder=3)
                bar = half if np.isfinite(half) else 0.0
                lo_b, hi_b = metric_bounds(v.metric)  # a CI drawn within what the metric can be
                ax.errorbar([i + 0.28], [mean], yerr=[[min(bar, mean - lo_b)],
                                                      [min(bar, hi_b - mean)]],
                            fmt="D", color="0.15", ms=5, capsize=4, lw=1.5, zorder=4)
                others = v.config_label(conf, (factor,))
                g = v.runs[v.runs[factor] == level]
                rows.append({"study": v.name, factor: str(level), "best_settings": others,
                             "trial": conf["trial"], "n_seeds": len(ys), "mean": mean,
                             "ci95": half, "runs_all_settings": len(g),
                             "diverged_all_settings": int(g["diverged"].sum())})
                ticks.append(f"{level}\n{wrap(others, 22)}")
            ax.set_xticks(range(len(ticks)), ticks, fontsize=8)
            ax.set_xlim(-0.6, len(ticks) - 0.4)
            ax.set_title(f"{v.label}\neach {factor} at its best other settings", fontsize=10)
            ax.set_xlabel("")
            ax.set_ylabel(f"{metric_label(v.metric)}\n(seeds; mean, 95% CI)")
            if sentence := winner_sentence(v, factor):  # '' without two ranked levels
                captions.append(sentence)
    png, files = save(fig, ctx.folder, key, svg=ctx.svg)
    caption = (f"Each {factor} at its own best other settings (the best configuration with "
               f"that {factor} by the study's metric, named under the axis), not pooled over "
               "them: dots are its seeds, the diamond and bar their mean and 95% CI. "
               + " ".join(captions) + " " + " ".join(ends_sentence(v) for v in views))
    return Chart(key, f"{factor} comparison", question, caption, png, files,
                 ctx.write_table(pd.DataFrame(rows), key))


# Thousands of trials: a line draws at most this many points (binned beyond), at most this many
# pruned-trial markers are drawn (evenly spaced), and only this few get their epoch written.
MAX_LINE_POINTS = 60
MAX_MARKS = 300
MAX_ANNOTATED = 40


def _line_chart(ctx: Context, x: str, key: str, question: str, min_levels: int,
                xscale: str) -> Chart | Missing:
    """Mean over seeds with a 95% CI band against a numeric parameter, one line per factor."""
    views = [v for v in ctx.views if x in v.varied and v.runs[x].nunique() >= min_levels]
    if not views:
        return Missing(key, question, NEEDS[key])
    fig, facets = facet_grid(len(views))
    rows = []
    binned = []
    with style():
        for v, (ax,) in zip(views, facets, strict=False):
            hue = v.hue
            colors = level_colors(v, hue) if hue else {None: "0.2"}
            summarised = 0
            for level, agg in _best_per_x(v, x, hue):
                agg["study"], agg["line"] = v.name, level
                rows.append(agg)
                if "bin_configs" in agg:
                    summarised += int(agg["bin_configs"].sum())
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
            others = [p for p in v.varied if p not in (x, hue)]
            if summarised:
                binned.append(f"{v.name}: {summarised:,} configurations in {MAX_LINE_POINTS} "
                              f"{x} bins per line")
            ax.set_title(v.label + (f"\neach point at its best {', '.join(others)}"
                                    if others else "")
                         + (f"\n{summarised:,} configurations binned: the best of each "
                            f"of {MAX_LINE_POINTS} {x} bins" if summarised else ""),
                         fontsize=10)
            ax.set_xlabel(f"{X_LABELS.get(x, x)} ({xscale} scale)")
            ax.set_ylabel(f"{metric_label(v.metric)}{' (log scale)' if log_y else ''}"
                          "\n(mean over seeds, 95% CI band)")
            if hue:
                legend_outside(ax, hue)
    png, files = save(fig, ctx.folder, key, svg=ctx.svg)
    caption = ("Lines join the mean over seeds; the band is the 95% CI (absent where a point "
               "has one finite seed; on a log axis a band that reaches zero runs off the "
               "bottom); an x on the axis marks a setting where every seed diverged. Where a "
               "study varies other settings too, each point is the best configuration at that "
               "value (its other settings named under the title and in the CSV), not a pool. "
               "Hollow markers: trials the pruner stopped, at their value when stopped, with "
               "the epoch (e4 = stopped after epoch 4); they are not in the lines. "
               + (f"Thousands of trials are aggregated, not drawn one by one: a line with more "
                  f"than {MAX_LINE_POINTS} values of {x} is cut into {MAX_LINE_POINTS} "
                  f"log-spaced bins, each point the best configuration of its bin at its own "
                  f"{x} ({'; '.join(binned)}; every configuration is in configs.csv). "
                  if binned else "")
               + " ".join(ends_sentence(v, x) for v in views))
    return Chart(key, f"{x} sensitivity", question, caption, png, files,
                 ctx.write_table(pd.concat(rows, ignore_index=True), key))



def _best_per_x(v: StudyView, x: str, hue: str | None) -> list[tuple[Any, pd.DataFrame]]:
    """Per line (hue value): at each value of `x` the best configuration (no diverged seed
    first), with its mean, CI and other settings; NaN where every seed of every one diverged.

    A line with more than `MAX_LINE_POINTS` values of `x` (a continuous search over thousands
    of trials) gets one point per bin instead: `x` cut into that many log-spaced bins (zero its
    own), each point the best configuration of its bin, at its own `x` (`bin_configs` counts
    the configurations of the bin; the CSV says so)."""
    m = f"{v.metric}_mean"
    conf = v.configs.assign(_div=v.configs["n_diverged"] > 0)
    conf = conf.sort_values(["_div", m], ascending=[True, not higher_is_better(v.metric)],
                            na_position="last", kind="stable")
    out = []
    for level, g in ([(None, conf)] if hue is None else list(conf.groupby(hue, sort=True))):
        if g[x].nunique() > MAX_LINE_POINTS:
            g = g.assign(_bin=log_bins(g[x], MAX_LINE_POINTS))
            counts = g.groupby("_bin")["_bin"].transform("size")
            best = g.assign(bin_configs=counts).groupby("_bin", sort=True).head(1)
            best = best.drop(columns="_bin").sort_values(x)
        else:
            best = g.groupby(x, sort=True).head(1).sort_values(x)
        best = best.assign(best_settings=[v.config_label(r, (x, hue or "")) for _, r in
                                          best.iterrows()]).drop(columns="_div")
        out.append((level, best))
    return out


def log_bins(values: pd.Series, n: int) -> np.ndarray:
    """Each value's bin among `n` equal bins of log10 over the positive values' range; zero
    and below get bin -1 (their own)."""
    xs = values.astype(float).to_numpy()
    positive = xs > 0
    if not positive.any():
        return np.full(len(xs), -1)
    logs = np.log10(np.where(positive, xs, 1.0))
    lo, hi = logs[positive].min(), logs[positive].max()
    width = (hi - lo) / n if hi > lo else 1.0
    return np.where(positive, np.minimum(((logs - lo) / width).astype(int), n - 1), -1)


def _pruned_marks(ax: Any, v: StudyView, x: str, hue: str | None,
                  colors: dict[Any, Any]) -> None:
    """Pruned trials as hollow markers at their value when stopped, each with its epoch
    (thousands of them: an evenly spaced `MAX_MARKS` of them, without epochs, and the legend
    says how many are drawn)."""
    pruned = v.ends[(v.ends["end"] == "pruned") & v.ends[v.metric].notna()] \
        if not v.ends.empty else v.ends
    total = len(pruned)
    if total > MAX_MARKS:
        pruned = pruned.iloc[np.linspace(0, total - 1, MAX_MARKS).round().astype(int)]
    for _, r in pruned.iterrows():
        color = colors.get(r[hue], "0.3") if hue else "0.3"
        ax.plot([float(r[x])], [float(r[v.metric])], "o", mfc="none", mec=color, mew=1.5,
                ms=7)
        if np.isfinite(r["end_epoch"]) and total <= MAX_ANNOTATED:
            ax.annotate(f"e{int(r['end_epoch'])}", (float(r[x]), float(r[v.metric])),
                        xytext=(4, -8), textcoords="offset points", fontsize=7, color=color)
    if total:
        what = "eN: at epoch N" if total <= MAX_ANNOTATED else \
            (f"{len(pruned)} of {total:,} drawn" if total > len(pruned) else f"{total}")
        ax.plot([], [], "o", mfc="none", mec="0.3", mew=1.5, label=f"pruned ({what})")


def chart_lr(ctx: Context) -> Chart | Missing:
    """Learning-rate sensitivity: log x, mean with CI band, one line per optimizer."""
    return _line_chart(ctx, "lr", "lr_sensitivity", "Which learning rate, for which optimizer?",
                       3, "log")


def chart_l1(ctx: Context) -> Chart | Missing:
    """L1 lambda vs accuracy (symmetric log x so that lambda = 0 has a place)."""
    return _line_chart(ctx, "l1", "l1", "How much L1 regularisation helps or hurts?", 2,
                       "symlog")


def chart_batch_size(ctx: Context) -> Chart | Missing:
    """Batch size vs the metric (each batch size at its best other settings) and vs training
    time per epoch and per model, as the sweep trained it and, where `bench time` measured it,
    for one model alone."""
    key, question = "batch_size", "Which batch size: what it costs per epoch, what it gives?"
    views = [v for v in ctx.views if "batch_size" in v.varied]
    if not views:
        return Missing(key, question, NEEDS[key])
    fig, facets = facet_grid(len(views), nrows_per=2, size=(5.0, 3.3))
    rows = []
    alone_shown = False
    with style():
        for v, (ax_m, ax_t) in zip(views, facets, strict=False):
            hue = v.hue
            colors = level_colors(v, hue) if hue else {None: "0.2"}
            ranked = v.ranked()
            groups = [(None, ranked)] if hue is None else list(ranked.groupby(hue, sort=True))
            for level, g in groups:
                best = g.groupby("batch_size", sort=True).head(1).sort_values("batch_size")
                agg = best[["batch_size", "trial", f"{v.metric}_mean", f"{v.metric}_ci95"]].copy()
                runs = v.runs[v.runs["trial"].isin(best["trial"])]
                spread = runs.groupby("trial")["epoch_seconds"].agg(
                    epoch_seconds_median="median", epoch_seconds_min="min",
                    epoch_seconds_max="max").reset_index()
                agg = agg.merge(spread, on="trial")
                agg["best_settings"] = [v.config_label(r, ("batch_size", hue or ""))
                                        for _, r in best.iterrows()]
                agg["engine"] = [", ".join(sorted(set(runs.loc[runs["trial"] == t, "engine"]
                                                      .dropna().astype(str))))
                                 for t in agg["trial"]]
                agg["study"], agg["line"] = v.name, level
                rows.append(agg)
                xs = agg["batch_size"].to_numpy(float)
                label = str(level) if hue else None
                band(ax_m, xs, agg[f"{v.metric}_mean"].to_numpy(float),
                      agg[f"{v.metric}_ci95"].to_numpy(float), colors[level], label,
                      bounds=metric_bounds(v.metric))
                ax_t.plot(xs, agg["epoch_seconds_median"] * 1e3, "o-", color=colors[level],
                          lw=1.8, ms=5,
                          label=f"{label + ': ' if label else ''}in the sweep "
                                f"({agg['engine'].iloc[0] or 'engine unknown'})")
                if (agg["epoch_seconds_max"] > agg["epoch_seconds_min"]).any():
                    ax_t.fill_between(xs, agg["epoch_seconds_min"] * 1e3,
                                      agg["epoch_seconds_max"] * 1e3, color=colors[level],
                                      alpha=0.2, lw=0)
            alone_shown |= _alone_timing(ax_t, ctx.timing, v)
            ticks = sorted(v.runs["batch_size"].astype(float).unique())
            full = set(v.runs.loc[v.runs["full_batch"], "batch_size"].astype(float)) \
                if "full_batch" in v.runs else set()
            for ax in (ax_m, ax_t):
                ax.set_xscale("log", base=2)
                ax.set_xticks(ticks, [f"full\n({t:g})" if t in full else f"{t:g}"
                                      for t in ticks])
                ax.minorticks_off()
            ax_m.set_title(f"{wrap(v.label, 34)}\neach batch size at\nits best other settings",
                           fontsize=10)
            ax_m.set_xlabel("")
            ax_m.set_ylabel(f"{metric_label(v.metric)}\n(mean, 95% CI band)")
            ax_t.set_yscale("log")
            plain_log_ticks(ax_t)
            ax_t.set_xlabel("batch size (examples, log scale)")
            ax_t.set_ylabel("training ms per epoch\nper model (median)")
            if hue:
                legend_outside(ax_m, hue)
            ax_t.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.42),
                        frameon=False)
    png, files = save(fig, ctx.folder, key, svg=ctx.svg)
    table = pd.concat(rows, ignore_index=True)
    engines = ", ".join(sorted({e for x in table["engine"] for e in str(x).split(", ") if e}))
    caption = ("Top: each batch size at its own best other settings (e.g. its best learning "
               "rate, named in the CSV), mean over seeds with a 95% CI band; 'full' is "
               "full-batch training (the training-set size). Bottom: wall-clock training time "
               "per epoch and per model of those configurations as the sweep trained them "
               f"(engine: {engines or 'unknown'}; a batched group's time is shared by its "
               "models, so it is the group's time divided by their number, and every seed of "
               "a group gets the same value; band: fastest to slowest seed where they differ). "
               + ("Dashed: one model alone, measured by `bench time` (K=1). " if alone_shown
                  else "No `bench time` measurement of one model alone matches these "
                       "settings, so only the sweep's time is shown. ")
               + "Sweep timings share the machine with other work: for clean speed figures "
               "use the timing chart below. "
               + " ".join(ends_sentence(v, "batch_size") for v in views))
    return Chart(key, "batch size", question, caption, png, files, ctx.write_table(table, key))


def _alone_timing(ax: Any, timing: pd.DataFrame, v: StudyView) -> bool:
    """`bench time`'s per-epoch time of one model alone (K=1, CPU) on the study's task and
    model, dashed; False when there is no such measurement."""
    if timing.empty:
        return False
    hidden = str(v.runs["hidden"].iloc[0]) if v.runs["hidden"].nunique() == 1 else ""
    width, _, second = hidden.partition("-")
    if not (width.isdigit() and second == width):  # bench time's MLP: two layers of one width
        return False
    t = timing[(timing["task"] == v.task) & (timing["model"] == v.model) &
               (timing["k"].fillna(1) == 1) & (timing["device"] == "cpu") &
               (timing["width"] == int(width))]
    t = t.dropna(subset=["batch_size", "epoch_seconds_median"])
    if t.empty:
        return False
    for engine, g in t.groupby("engine"):
        g = g.groupby("batch_size")["epoch_seconds_median"].median()
        ax.plot(g.index.to_numpy(float), g.to_numpy(float) * 1e3, "s--", color="0.4", lw=1.4,
                ms=4, label=f"one model alone ({engine}, bench time, width {width})")
    return True


def chart_curves(ctx: Context) -> Chart | Missing:
    """Training loss and validation metric per epoch of the best configurations, CI bands."""
    key, question = "curves", "How do the best configurations train, epoch by epoch?"
    views = [v for v in ctx.views if not v.ranked().empty]
    if not views or ctx.curves.empty:
        return Missing(key, question, NEEDS[key])
    # Every row has the same parts, so the layout is fixed in inches (margins for two-line
    # axis labels, the row title and the axes titles): the constrained layout solver took
    # about 60% of this chart's time (a row of three panels per study, dozens of studies).
    width, height = 12.5, 2.9
    fig = Figure(figsize=(width, height * len(views)))
    # columns in inches: loss panel, room for the next panel's axis labels, metric panel, a
    # gap, the key (configurations wrapped at 40 characters)
    grid = {"left": 1.15 / width, "right": 12.45 / width, "bottom": 0.55 / height,
            "top": 1 - 0.6 / height, "wspace": 0, "width_ratios": [3.3, 1.15, 3.3, 0.25, 3.3]}
    rows = []
    with style():
        subfigs = fig.subfigures(len(views), 1, squeeze=False)[:, 0]
        for v, sub in zip(views, subfigs, strict=True):
            gs = sub.add_gridspec(1, 5, **grid)
            ax_l, ax_m, ax_key = (sub.add_subplot(gs[0, i]) for i in (0, 2, 4))
            best = best_configs(v)
            # one colour per hue value across the study's charts (Adam the same everywhere)
            hue_colors = level_colors(v, v.hue) if v.hue else {}
            rank = colors_for(list(range(len(best))))
            colors = [hue_colors.get(c[v.hue], rank[i]) if v.hue else rank[i]
                      for i, (_, c) in enumerate(best.iterrows())]
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
    png, files = save(fig, ctx.folder, key, svg=ctx.svg)
    caption = ("One row per study: the best configuration per optimizer (or loss), else the "
               "three best. Left: training loss, geometric mean over seeds with a 95% CI "
               "computed on log10(loss) (losses span decades, and an arithmetic CI would reach "
               "below zero); losses of different kinds (MSE, BCE) are not comparable in height. "
               "Right: the study's metric per epoch, mean over seeds with a 95% CI band (a loss "
               "metric like the training loss, on a log scale). Diverged seeds stop at the "
               "epoch they diverged (curves are never padded), so late epochs may average "
               "fewer seeds.")
    return Chart(key, "training curves", question, caption, png, files,
                 # not tables/curves.csv: that is the tidy long table of every run's curves
                 ctx.write_table(pd.concat(rows, ignore_index=True) if rows else
                                 pd.DataFrame(), "curves_best"))



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

