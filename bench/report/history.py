"""How each Optuna search went: the optimisation history (every completed trial's value and the
best so far, failed and pruned trials marked) beside the parameter importances.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.textpath import text_to_path
from matplotlib.ticker import MaxNLocator

from bench.report import tables
from bench.report.figures import NEEDS, Chart, Context, Missing, save, slug, style, wrap
from bench.report.views import ends_counts, metric_label

# How each kind of end is drawn in the history: marker, colour, legend label.
END_MARKS = {"diverged": ("x", "#d62728", "diverged (no value)"),
             "cannot_run": ("s", "0.45", "cannot run here"),
             "failed": ("+", "0.1", "failed (other)")}


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


# More completed trials than this: the history shows their spread per bin, not every dot.
MAX_POINTS = 1000
BINS = 100
MAX_MARKS = 300  # markers per kind of end (evenly spaced beyond)


def _binned_history(ax: Any, xs: np.ndarray, ys: np.ndarray) -> None:
    """Completed trials' values as the median and 10-90% band of `BINS` bins of consecutive
    trial numbers, each drawn at its bin's middle trial number."""
    edges = np.linspace(xs.min(), xs.max() + 1, BINS + 1)
    which = np.clip(np.searchsorted(edges, xs, side="right") - 1, 0, BINS - 1)
    mid, med, lo, hi = [], [], [], []
    for b in range(BINS):
        vals = ys[(which == b) & np.isfinite(ys)]
        if len(vals):
            mid.append((edges[b] + edges[b + 1]) / 2)
            q10, q50, q90 = np.percentile(vals, [10, 50, 90])
            med.append(q50)
            lo.append(q10)
            hi.append(q90)
    ax.fill_between(mid, lo, hi, color="#1f77b4", alpha=0.25, lw=0,
                    label="completed trials: 10-90% of a bin")
    ax.plot(mid, med, color="#1f77b4", lw=1.5, label="completed trials: median of a bin")


# The history figure's layout, fixed in inches: every figure has the same parts, and the
# constrained layout solver was about a third of this chart's drawing time (a figure per study).
WIDTH, HEIGHT = 10.0, 3.4
LEGEND_COLUMNS = 4
MAX_NAME_INCHES = 2.5  # longer parameter names are cut (a plain Optuna study's may be long)


def _inches(text: str, size: Any) -> float:
    """The width of `text` in inches at font size `size` (points or a name like 'medium')."""
    prop = FontProperties(size=size)
    return text_to_path.get_text_width_height_descent(text, prop, ismath=False)[0] / 72


def _fit(name: str, most: float) -> str:
    """`name`, cut with an ellipsis to at most `most` inches at the tick label size."""
    size = matplotlib.rcParams["ytick.labelsize"]
    if _inches(name, size) <= most:
        return name
    while len(name) > 1 and _inches(name + "…", size) > most:
        name = name[:-1]
    return name + "…"


def _legend_columns(labels: list[str]) -> int:
    """The most columns (up to `LEGEND_COLUMNS`) whose row fits the figure's width: entries
    fill columns top to bottom, each as wide as its widest label plus the marker."""
    for cols in range(min(LEGEND_COLUMNS, len(labels)), 1, -1):
        rows = math.ceil(len(labels) / cols)
        widths = [max(_inches(t, 8) for t in labels[c * rows:(c + 1) * rows]) + 0.31
                  for c in range(math.ceil(len(labels) / rows))]
        if sum(widths) + 0.22 * (len(widths) - 1) <= WIDTH - 0.3:
            return cols
    return 1


def _place(fig: Figure, ax_h: Any, ax_i: Any, names: list[str], title_lines: int) -> None:
    """Lay the history (left) and importance (right) panels out in inches: room for the
    title's lines, the two-line y label and the widest y tick label, the x label and the
    legend's rows below the history, and the longest parameter name left of the importance
    bars (tick labels and names measured, not guessed)."""
    handles, labels = ax_h.get_legend_handles_labels()
    cols = _legend_columns(labels) if labels else 1
    rows = math.ceil(len(labels) / cols)
    top = 0.1 + 0.2 * title_lines
    bottom = 0.62 + 0.2 * rows
    size = matplotlib.rcParams["ytick.labelsize"]
    low, high = sorted(ax_h.get_ylim())
    ticks = [v for v in ax_h.yaxis.get_majorticklocs() if low <= v <= high]
    tick_w = max((_inches(t, size) for t in ax_h.yaxis.get_major_formatter().format_ticks(ticks)),
                 default=0.0)
    names_w = max((_inches(n, size) for n in names), default=0.0)
    left = max(0.95, 0.65 + tick_w)  # the y label's two lines, the ticks, a margin
    right, gap = 0.3, 0.35
    free = WIDTH - left - right - gap - names_w - 0.1
    hist_w, imp_w = 0.6 * free, 0.4 * free
    height = HEIGHT - top - bottom
    ax_h.set_position([left / WIDTH, bottom / HEIGHT, hist_w / WIDTH, height / HEIGHT])
    ax_i.set_position([(WIDTH - right - imp_w) / WIDTH, bottom / HEIGHT, imp_w / WIDTH,
                       height / HEIGHT])
    if handles:  # across the figure's foot (a row of long labels is wider than the panel)
        ax_h.legend(handles, labels, fontsize=8, loc="lower center", ncols=cols,
                    frameon=False, bbox_to_anchor=(0.5, 0.02), bbox_transform=fig.transFigure)


def _spaced(items: list[Any]) -> list[Any]:
    """At most `MAX_MARKS` of `items`, evenly spaced (all of them when fewer)."""
    if len(items) <= MAX_MARKS:
        return items
    return [items[i] for i in np.linspace(0, len(items) - 1, MAX_MARKS).round().astype(int)]


def _drawn(n_drawn: int, total: int) -> str:
    """'1,234' or '300 of 1,234 drawn' for a legend label."""
    return f"{total:,}" if n_drawn == total else f"{n_drawn} of {total:,} drawn"


def _ends(ax: Any, trials: list[Any]) -> None:
    """Each way a non-complete trial ended with its own marker and legend entry: pruned at the
    last value it reported, the others (no value) on the bottom axis; at most `MAX_MARKS` of
    each kind, evenly spaced, the legend saying how many are drawn."""
    by_kind: dict[str, list[Any]] = {}
    for t in trials:
        by_kind.setdefault(tables.trial_end(t)["kind"], []).append(t)
    pruned = by_kind.get("pruned", [])
    if pruned:
        shown = [(t.number, t.intermediate_values[t.last_step]) for t in _spaced(pruned)
                 if t.last_step is not None]
        label = (f"pruned ({_drawn(len(shown), len(pruned))}, at last reported value)"
                 if len(pruned) > MAX_MARKS else
                 f"pruned ({len(pruned)}, at last reported value)")
        ax.plot([n for n, _ in shown], [y for _, y in shown], "o", mfc="none", mec="#ff7f0e",
                mew=1.5, ms=6, label=label)
        unshown = [t.number for t in pruned if t.last_step is None]
        if unshown:
            ax.plot(unshown, [0.02] * len(unshown), "o", mfc="none", mec="#ff7f0e", ms=6,
                    transform=ax.get_xaxis_transform(), clip_on=False)
    for kind, (marker, color, label) in END_MARKS.items():
        these = by_kind.get(kind, [])
        xs = [t.number for t in _spaced(these)]
        if xs:
            ax.plot(xs, [0.02] * len(xs), marker, color=color, ms=7, mew=2,
                    transform=ax.get_xaxis_transform(), clip_on=False,
                    label=f"{label} ({_drawn(len(xs), len(these))})")


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
        fig = Figure(figsize=(WIDTH, HEIGHT))
        ax_h, ax_i = fig.subplots(1, 2)
        maximize = s.direction == "maximize"
        binned = len(done) > MAX_POINTS
        with style():
            xs = [t.number for t in done]
            ys = [t.values[0] for t in done]
            if binned:  # thousands of dots hide each other: their spread per bin of trials
                _binned_history(ax_h, np.array(xs, float), np.array(ys, float))
            else:
                ax_h.plot(xs, ys, "o", color="#1f77b4", label="completed trial", ms=5)
            best = np.maximum.accumulate(ys) if maximize else np.minimum.accumulate(ys)
            ax_h.step(xs, best, where="post", color="#d62728", label="best so far")
            _ends(ax_h, trials)
            ax_h.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax_h.set_xlabel("trial number")
            ax_h.set_ylabel(f"{metric_label(s.objective)}\n(objective, mean over seeds)")
            ax_h.set_title(f"{s.name}: optimisation history" + (
                f"\n{len(done):,} completed trials in {BINS} bins: median and 10-90% band"
                if binned else ""), fontsize=10)
            shown = {n: _fit(n, MAX_NAME_INCHES) for n in imp}  # names as the bars show them
            if imp:
                names = list(imp)[::-1]
                ax_i.barh(range(len(names)), [imp[n] for n in names], color="#4c72b0",
                          height=0.5)
                ax_i.set_yticks(range(len(names)), [shown[n] for n in names])
                ax_i.set_xlim(0, 1)
                ax_i.set_xlabel("importance (PED-ANOVA, sums to 1)")
                ax_i.set_title("parameter importances", fontsize=10)
            else:
                ax_i.axis("off")
                ax_i.text(0.5, 0.5, f"parameter importances unavailable:\n{wrap(why, 40)}",
                          ha="center", va="center", fontsize=9, transform=ax_i.transAxes)
            _place(fig, ax_h, ax_i, list(shown.values()), title_lines=2 if binned else 1)
        key = f"history_{slug(s.name)}"
        png, files = save(fig, ctx.folder, key, svg=ctx.svg)
        table = pd.DataFrame({"param": list(imp), "importance": list(imp.values())})
        caption = (f"Trials: {ends_counts(s) or f'{len(done)} complete'}. "
                   + (f"Too many to draw one by one: completed trials are aggregated in "
                      f"{BINS} bins of consecutive trial numbers (line: the median value of a "
                      "bin, band: its 10th to 90th percentile); the best so far is over every "
                      f"trial; at most {MAX_MARKS} markers of each other end are drawn, evenly "
                      "spaced (the legend gives how many). " if binned else "")
                   + "Pruned trials are "
                   "hollow circles at the last value they reported (the mean over seeds at the "
                   "epoch they were stopped); diverged, cannot-run and failed trials have no "
                   "value and are marked on the bottom axis. "
                   + (f"Importances not shown: {why}." if why else
                      "Importances: " + ", ".join(f"{k} {v:.2f}" for k, v in imp.items()) + "."))
        out.append(Chart(key, f"search: {s.name}", f"{s.name}: {question[0].lower()}"
                         f"{question[1:]}", caption, png, files,
                         ctx.write_table(table, f"importances_{slug(s.name)}")))
    if not out:
        out.append(Missing("history", question, NEEDS["history"]))
    return out

