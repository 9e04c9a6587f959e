"""The sentences a study's summary answers its question with, beyond the winner rule.

Each rule reads a configurations frame (one row per configuration: the swept settings and the
metric's `<metric>_mean` and `<metric>_ci95` over seeds, as `views.StudyView.configs` holds
them) and returns one sentence, or '' when it has nothing to say:

- `threshold_sentence` ("how much?"): the largest value of a numeric setting (l1, lr, ...)
  whose best configuration scores within the best configuration's 95% CI over seeds, and the
  smallest larger value where it collapses (fails against the best by the rule below);
- `collapse_sentence` ("which option holds up?"): the range of a numeric setting where one
  option fails (worse by more than `COLLAPSE_MARGIN` for accuracy-like metrics, twice as bad
  for losses, beyond both CIs, or every seed diverged) while another does not;
- `ceiling_sentence`: several options at or above `CEILING` of a metric bounded by 1
  (accuracy, R²), where the task is too easy to tell them apart.

Each setting is compared at its own best other settings: for every value the best
configuration with that value counts, never a mean pooled over the others.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from bench.numbers import fmt_ci, fmt_param, fmt_score, is_fraction_metric

HOW_MUCH = ("l1", "weight_decay", "lr", "init_scale", "momentum")  # "how much can it take?"
CEILING = 0.995  # accuracy or R² at which a task no longer tells options apart
_ROUNDING = 1e-9  # a mean of five 0.995s is 0.99499...: it still reaches the ceiling
COLLAPSE_MARGIN = 0.1  # accuracy-like metrics: worse by this much (absolute) counts as failing
COLLAPSE_RATIO = 2.0  # losses and errors: this many times worse counts as failing


def _cols(metric: str) -> tuple[str, str]:
    return f"{metric}_mean", f"{metric}_ci95"


def best_per(configs: pd.DataFrame, by: list[str], metric: str, higher: bool) -> pd.DataFrame:
    """The best configuration (finite mean) for every combination of the `by` settings."""
    m, _ = _cols(metric)
    ok = configs[np.isfinite(configs[m].astype(float))]
    return ok.sort_values(m, ascending=not higher, kind="stable").groupby(
        by, sort=False, dropna=False).head(1)


def _within(value: float, best: float, half: float, higher: bool) -> bool:
    return value >= best - half if higher else value <= best + half


def threshold_sentence(configs: pd.DataFrame, factor: str, metric: str, higher: bool) -> str:
    """'How much l1: the largest l1 within the best's seed spread is l1=0.0003 (0.912 ± 0.010;
    best l1=1e-05, 0.925 ± 0.015, 95% CI down to 0.910). From l1=0.01 on it collapses: 0.600 ±
    0.050 at best.' ('' with fewer than two values; see `_breaking_point` for the last part)."""
    m, c = _cols(metric)
    per = best_per(configs, [factor], metric, higher)
    if per[factor].nunique() < 2:
        return ""
    best = per.iloc[0]
    half = float(best[c])
    best_text = f"best {factor}={fmt_param(best[factor])}, {fmt_ci(best[m], half, metric=metric)}"
    if not math.isfinite(half):
        return (f"How much {factor}: one seed only, so the best's seed spread is unknown and no "
                f"threshold is drawn ({best_text}).")
    inside = per[[_within(float(x), float(best[m]), half, higher) for x in per[m]]]
    top = inside.loc[inside[factor].astype(float).idxmax()]
    bound = float(best[m]) - half if higher else float(best[m]) + half
    edge = "down to" if higher else "up to"
    breaks = _breaking_point(configs, factor, float(top[factor]), best, metric, higher)
    if top[factor] == best[factor]:
        return (f"How much {factor}: no larger {factor} scores within the best's 95% CI "
                f"({best_text}, CI {edge} {fmt_score(bound, metric)}).{breaks}")
    return (f"How much {factor}: the largest {factor} within the best's seed spread is "
            f"{factor}={fmt_param(top[factor])} ({fmt_ci(top[m], top[c], metric=metric)}; "
            f"{best_text}, 95% CI {edge} {fmt_score(bound, metric)}).{breaks}")


def _breaking_point(configs: pd.DataFrame, factor: str, above: float, best: pd.Series,
                    metric: str, higher: bool) -> str:
    """' From l1=0.01 on it collapses: 0.600 ± 0.050 at best.': the smallest value of `factor`
    above `above` whose best configuration fails against `best` (`_fails`: every configuration
    diverged, or worse by the collapse margin beyond both CIs); 'From ... on' when every larger
    value fails too, 'first collapses at' when a larger one is not shown to fail (it holds
    again, or its CI is too wide to tell); a note when none of the larger values tried fails
    ('' when there is none larger)."""
    m, c = _cols(metric)
    grid = configs.sort_values(m, ascending=not higher, na_position="last", kind="stable") \
        .groupby(factor, sort=False).head(1)
    grid = grid[grid[factor].astype(float) > above]
    grid = grid.iloc[np.argsort(grid[factor].astype(float).to_numpy(), kind="stable")]
    if grid.empty:
        return ""
    failed = [_fails(float(r[m]), float(r[c]), float(best[m]), float(best[c]), metric, higher)
              for _, r in grid.iterrows()]
    if not any(failed):
        return (f" No larger {factor} tried collapses (up to {factor}="
                f"{fmt_param(grid[factor].iloc[-1])}).")
    first = failed.index(True)
    row = grid.iloc[first]
    at = f"{factor}={fmt_param(row[factor])}"
    if not math.isfinite(float(row[m])):
        where = f"From {at} on" if all(failed[first:]) else f"At {at}"
        return f" {where} every configuration diverges."
    what = f"{fmt_ci(row[m], row[c], metric=metric)} at best"
    if all(failed[first:]):
        return f" From {at} on it collapses: {what}."
    return f" It first collapses at {at}: {what}."


def _fails(a_mean: float, a_half: float, b_mean: float, b_half: float, metric: str,
           higher: bool) -> bool:
    """Whether `a` fails where `b` holds: every seed diverged, or worse by the margin and
    beyond both CIs (a missing CI counts as zero width)."""
    if not math.isfinite(b_mean):
        return False
    if not math.isfinite(a_mean):
        return True
    ha = a_half if math.isfinite(a_half) else 0.0
    hb = b_half if math.isfinite(b_half) else 0.0
    if higher:
        gap = b_mean - a_mean
        apart = a_mean + ha < b_mean - hb
    else:
        gap = a_mean - b_mean
        apart = a_mean - ha > b_mean + hb
    big = gap >= COLLAPSE_MARGIN if is_fraction_metric(metric) else (
        gap > 0 and (a_mean >= COLLAPSE_RATIO * b_mean if not higher else
                     b_mean >= COLLAPSE_RATIO * a_mean))
    return bool(big and apart)


def collapse_sentence(configs: pd.DataFrame, option: str, x: str, metric: str,
                      higher: bool) -> str:
    """'MSE collapses to 0.580 at lr >= 3 while BCE keeps 0.910.': for each option and each
    value of `x`, its best configuration; the runs of `x` values where one option fails and
    another holds, one clause each ('' when no option fails where another holds)."""
    m, c = _cols(metric)
    # every (option, x) pair, NaN where all its configurations diverged
    grid = configs.sort_values(m, ascending=not higher, na_position="last", kind="stable") \
        .groupby([option, x], sort=False).head(1)
    xs = sorted(grid[x].dropna().astype(float).unique())
    levels = sorted(grid[option].dropna().unique(), key=str)
    if len(xs) < 2 or len(levels) < 2:
        return ""
    cell = {(o, float(v)): (float(r[m]), float(r[c])) for o, v, r in
            zip(grid[option], grid[x], (r for _, r in grid.iterrows()), strict=True)}
    clauses = []
    for a in levels:
        for b in levels:
            if a == b:
                continue
            bad = [v for v in xs if (a, v) in cell and (b, v) in cell
                   and _fails(*cell[(a, v)], *cell[(b, v)], metric, higher)]
            for run in _runs(bad, xs):
                a_vals = [cell[(a, v)][0] for v in run]
                b_vals = [cell[(b, v)][0] for v in run]
                finite = [y for y in a_vals if math.isfinite(y)]
                what = ("diverges" if not finite else
                        f"collapses to {fmt_score(float(np.mean(finite)), metric)}")
                clauses.append(f"{fmt_param(a).upper() if option == 'loss' else fmt_param(a)} "
                               f"{what} at {_where(x, run, xs)} while "
                               f"{fmt_param(b).upper() if option == 'loss' else fmt_param(b)} "
                               f"keeps {fmt_score(float(np.mean(b_vals)), metric)}")
    return ("; ".join(clauses) + ".") if clauses else ""


def _runs(bad: list[float], xs: list[float]) -> list[list[float]]:
    """Consecutive stretches (in the order of `xs`) of the values in `bad`."""
    runs: list[list[float]] = []
    for v in xs:
        if v in bad:
            if runs and xs.index(v) == xs.index(runs[-1][-1]) + 1:
                runs[-1].append(v)
            else:
                runs.append([v])
    return runs


def _where(x: str, run: list[float], xs: list[float]) -> str:
    lo, hi = fmt_param(run[0]), fmt_param(run[-1])
    if len(run) == 1 and run[0] not in (xs[0], xs[-1]):
        return f"{x} = {lo}"
    if run[-1] == xs[-1]:
        return f"{x} >= {lo}"
    if run[0] == xs[0]:
        return f"{x} <= {hi}"
    return f"{lo} <= {x} <= {hi}"


def ceiling_sentence(configs: pd.DataFrame, option: str | None, metric: str,
                     label: str) -> str:
    """'Ceiling: adam (0.999) and sgd (0.998) both reach 0.995 validation accuracy or more:
    the task is too easy to tell them apart.' ('' for metrics not bounded by 1, or when fewer
    than two options, or configurations without options, reach it)."""
    if not is_fraction_metric(metric):
        return ""
    m, _ = _cols(metric)
    if option:
        top = best_per(configs, [option], metric, True)
        top = top[top[m] >= CEILING - _ROUNDING]
        names = [f"{fmt_param(o)} ({fmt_score(s, metric)})" for o, s in zip(top[option], top[m],
                                                                             strict=True)]
    else:
        top = configs[configs[m] >= CEILING - _ROUNDING]
        names = [f"{len(top)} configurations"] if len(top) >= 2 else []
    if len(top) < 2:
        return ""
    who = (" and ".join([", ".join(names[:-1]), names[-1]]) + " all" if len(names) > 2 else
           " and ".join(names) + " both") if option else names[0]
    return (f"Ceiling: {who} reach {fmt_score(CEILING, metric)} {label} or more: the task is "
            "too easy to tell them apart.")


def numeric(configs: pd.DataFrame, factor: str) -> bool:
    """Whether a swept setting has numbers for values (l1, lr), not names."""
    values: Any = configs[factor].dropna()
    return len(values) > 0 and all(isinstance(v, int | float | np.number) and
                                   not isinstance(v, bool) for v in values)
