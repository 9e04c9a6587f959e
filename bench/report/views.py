"""Each study as the report reads it: its runs, what varies, the metric it is judged by, and the
sentences that compare its configurations (winner, runner-up, beyond or within the seed spread).

Statistics come from `bench.stats` (mean and Student-t 95% CI over seeds; one seed gives no
interval) through `tables.aggregate`; two configurations differ beyond the seed-to-seed spread
when their 95% CIs do not overlap (`SIGNIFICANCE_RULE`), Welch's t-test p shown beside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from bench.catalog import registry
from bench.errors import UsageError
from bench.numbers import fmt_ci, fmt_param, fmt_score
from bench.report import answers, tables
from bench.results import metric_direction
from bench.stats import mean_ci, welch_p

SIGNIFICANCE_RULE = (
    "A difference counts as beyond the seed-to-seed spread when the two 95% confidence "
    "intervals over seeds (Student t, mean ± t(0.975, n-1)·s/√n) do not overlap; Welch's "
    "t-test p-value is shown beside it. A configuration with a single seed has no interval, "
    "so no such claim is made. The winner is picked as the best of many configurations, so "
    "its margin is optimistic (winner's curse): confirm it on fresh seeds.")

HUE_FACTORS = ("optimizer", "loss", "model", "activation", "init", "batch_norm")
METRIC_LABELS = {"accuracy": "accuracy", "mse": "MSE", "r2": "R²", "loss": "loss"}
SPLIT_LABELS = {"val": "validation", "test": "test", "train": "training"}


# --- words for metrics and parameters --------------------------------------------------------

def metric_label(metric: str) -> str:
    """'val_accuracy' -> 'validation accuracy', for axis labels and sentences."""
    split, _, base = metric.partition("_")
    if split in SPLIT_LABELS:
        return f"{SPLIT_LABELS[split]} {METRIC_LABELS.get(base, base)}"
    return metric.replace("_", " ")


def higher_is_better(metric: str) -> bool:
    """True for accuracy and R²; False for losses and MSE (the ranking's direction)."""
    return metric_direction(metric) == "maximize"


def param_text(value: Any) -> str:
    """A swept value as it reads in a configuration label; a missing batch size is 'full'."""
    if isinstance(value, float | np.floating) and math.isnan(value):
        return "full"
    return fmt_param(value)


# --- comparing two configurations ------------------------------------------------------------

def compare(a: list[float], b: list[float]) -> dict[str, Any]:
    """CI overlap (`bench.stats.mean_ci`) and Welch's t-test between two sets of per-seed
    values; not decidable when either has fewer than two finite values (no interval)."""
    xa = [x for x in a if math.isfinite(x)]
    xb = [x for x in b if math.isfinite(x)]
    ma, ha = mean_ci(xa)
    mb, hb = mean_ci(xb)
    if len(xa) < 2 or len(xb) < 2:
        return {"decidable": False, "overlap": None, "p": math.nan}
    overlap = (ma - ha) <= (mb + hb) and (mb - hb) <= (ma + ha)
    return {"decidable": True, "overlap": bool(overlap), "p": welch_p(xa, xb)}


def verdict(a: list[float], b: list[float]) -> str:
    """The words for how two configurations' per-seed values compare: a tie, no CI (one seed),
    or within / beyond the seed-to-seed spread with Welch's p."""
    fa, fb = [x for x in a if math.isfinite(x)], [x for x in b if math.isfinite(x)]
    if fa and fb and sorted(fa) == sorted(fb):
        return "a tie (identical scores on every seed)"
    c = compare(a, b)
    if not c["decidable"]:
        return "one seed only, so the seed-to-seed spread is unknown (no CI)"
    if c["overlap"]:
        return f"within the seed-to-seed spread (95% CIs overlap, Welch p={c['p']:.2g})"
    return f"beyond the seed-to-seed spread (95% CIs do not overlap, Welch p={c['p']:.2g})"


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
    # One row per trial however it ended: trial, varied params, end, end_detail, end_epoch and
    # the metric's mean over seeds where it has runs (a pruned trial's value when it stopped).
    ends: pd.DataFrame = field(default_factory=pd.DataFrame)
    # Conditional spaces: per trial, the searched parameters that did not apply to it (momentum
    # of an Adam trial); labels leave them out, since the run only holds the default there.
    not_applied: dict[int, set[str]] = field(default_factory=dict)

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
        left_out = self.not_applied.get(int(row["trial"]), set()) if "trial" in row else set()
        parts = [f"{k}={param_text(row[k])}" for k in self.varied
                 if k not in skip and k not in left_out]
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
        metric = s.objective if s.objective in sub.columns else _default_metric(task, sub)
        if metric not in sub.columns:  # no stored run has the metric: nothing to compare
            continue
        sub = _fill_full_batch(sub)
        varied = [c for c in tables.config_columns(sub) if sub[c].nunique(dropna=False) > 1]
        conf = tables.aggregate(sub, ["trial", *varied], [metric, "epoch_seconds"])
        div = sub.groupby("trial")["diverged"].sum().rename("n_diverged").reset_index()
        conditional = s.searched & set(varied)
        not_applied = {t.number: conditional - set(t.params) for t in s.trials
                       if t.params and conditional - set(t.params)}
        views.append(StudyView(s.name, task, str(sub["model"].iloc[0]), metric, sub, varied,
                               conf.merge(div, on="trial"),
                               _ends(runs[runs["study"] == s.name], task, metric, varied),
                               not_applied))
    return views


def _ends(rows: pd.DataFrame, task: str, metric: str, varied: list[str]) -> pd.DataFrame:
    """One row per trial of a study's runs table: how it ended and its mean metric."""
    rows = _fill_full_batch(rows.assign(task=rows["task"].fillna(task)))
    first = rows.groupby("trial", sort=True)[["end", "end_detail", *varied]].first()
    first[metric] = rows.groupby("trial")[metric].mean()
    first["end_epoch"] = [_end_epoch(d) for d in first["end_detail"]]
    return first.reset_index()


def _default_metric(task: str, runs: pd.DataFrame) -> str:
    """The task's default validation metric; for a task not registered here (a plugin not
    loaded), the first validation metric its stored runs have."""
    try:
        return f"val_{registry.get_task(task).default_metric}"
    except UsageError:
        stored = [c for c in tables.metric_columns(runs) if c.startswith("val_")]
        return stored[0] if stored else "val_accuracy"


def _default_size(task: Any) -> float:
    """The task's default training-set size (for full-batch runs); NaN when it is unknown here
    (a task not registered here) or has none."""
    try:
        return registry.get_task(str(task)).default_n_samples or np.nan
    except UsageError:
        return np.nan


def _end_epoch(detail: Any) -> float:
    text = str(detail)
    if " at epoch " not in text:
        return math.nan
    word = text.split(" at epoch ", 1)[1].split(" ", 1)[0]
    return float(word) if word.isdigit() else math.nan


def ends_sentence(v: StudyView, x: str | None = None) -> str:
    """The trials the lines leave out, in words: how many were pruned and where, how many
    cannot run here and why ('' when every trial completed or diverged)."""
    if v.ends.empty:
        return ""
    parts = []
    pruned = v.ends[v.ends["end"] == "pruned"]
    if len(pruned):
        epochs = pruned["end_epoch"].dropna().astype(int).value_counts().sort_index()
        when = ", ".join(f"{n} at epoch {e}" for e, n in epochs.items()) or "epoch unknown"
        shown = pruned.sort_values("end_epoch").head(4)
        where = "; ".join(f"{x}={param_text(r[x])}" if x else v.config_label(r)
                          for _, r in shown.iterrows())
        more = ", ..." if len(pruned) > len(shown) else ""
        parts.append(f"{len(pruned)} trial(s) of {v.name} were pruned ({when}; e.g. "
                     f"{where}{more})" if more else
                     f"{len(pruned)} trial(s) of {v.name} were pruned ({when}: {where})")
    cannot = v.ends[v.ends["end"] == "cannot_run"]
    if len(cannot):
        why = sorted({str(d).partition(": ")[2] or "no reason recorded"
                      for d in cannot["end_detail"]})
        parts.append(f"{len(cannot)} trial(s) of {v.name} cannot run here "
                     f"({'; '.join(why[:3])})")
    failed = v.ends[v.ends["end"] == "failed"]
    if len(failed):
        parts.append(f"{len(failed)} trial(s) of {v.name} failed for another reason")
    return ". ".join(parts) + "." if parts else ""


def _fill_full_batch(sub: pd.DataFrame) -> pd.DataFrame:
    """Full-batch runs (batch_size missing) get the training-set size, so they plot on an axis."""
    if "batch_size" not in sub.columns or not sub["batch_size"].isna().any():
        return sub
    sizes = [(int(n) if pd.notna(n) else _default_size(t))
             for t, n in zip(sub["task"], sub["n_samples"], strict=True)]
    sub = sub.copy()
    sub["full_batch"] = sub["batch_size"].isna()
    sub["batch_size"] = sub["batch_size"].astype(float).fillna(pd.Series(sizes, index=sub.index))
    return sub


def best_configs(v: StudyView, per_level: int = 1, top: int = 3) -> pd.DataFrame:
    """The best configuration per level of the study's hue factor, else its `top` best."""
    ranked = v.ranked()
    if v.hue:
        return ranked.groupby(v.hue, sort=False).head(per_level)
    return ranked.head(top)


def winner_sentence(v: StudyView, factor: str) -> str:
    """Best configuration of each level of `factor` compared: the sentence a reader wants
    ('' without two ranked levels)."""
    ranked = v.ranked()
    m = f"{v.metric}_mean"
    best_per = ranked.groupby(factor, sort=False).head(1)
    if len(best_per) < 2:
        return ""
    a, b = best_per.iloc[0], best_per.iloc[1]
    said = verdict(v.seed_values(a["trial"]), v.seed_values(b["trial"]))
    return (f"{v.name}: best {factor}={param_text(a[factor])} "
            f"({v.config_label(a, (factor,))}) {fmt_score(a[m], v.metric)} vs best "
            f"{factor}={param_text(b[factor])} ({v.config_label(b, (factor,))}) "
            f"{fmt_score(b[m], v.metric)}: {said}.")


# --- summaries ------------------------------------------------------------------------------------

def study_summary(v: StudyView, s: tables.StudyData) -> dict[str, Any]:
    """Winner, runner-up and whether the gap is beyond the seed spread, as text and numbers."""
    states = pd.Series([t.state.name for t in s.trials]).value_counts().to_dict()
    seeds = v.runs.groupby("trial")["seed"].nunique()
    ranked = v.ranked()
    m = f"{v.metric}_mean"
    info: dict[str, Any] = {
        "study": v.name, "description": s.description, "task": v.task, "model": v.model,
        "metric": v.metric, "trials": len(s.trials), "complete": states.get("COMPLETE", 0),
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
        said = verdict(v.seed_values(win["trial"]), v.seed_values(rival["trial"]))
        info["verdict"] = said
        what = f"best with another {factor}" if factor else "runner-up"
        text += f" The {what}, {info['runner_up']}, scores {info['runner_up_score']}: {said}."
    info["answers"] = " ".join(a for a in answer_sentences(v) if a)
    if info["answers"]:
        text += " " + info["answers"]
    info["ended"] = ends_counts(s)
    if ended := info["ended"]:
        text += f" Trials: {ended}."
    info["text"] = text
    return info


def ends_counts(s: tables.StudyData) -> str:
    """'12 complete, 3 pruned (epochs 2-4, median pruner), 1 diverged (epoch 3), 1 cannot run
    here (device 'cuda' is not available on h)': each way the study's trials ended, counted."""
    ends = [tables.trial_end(t) for t in s.trials]
    parts = []
    for kind in tables.END_KINDS:
        these = [e for e in ends if e["kind"] == kind]
        if not these:
            continue
        epochs = sorted({e["epoch"] for e in these if isinstance(e.get("epoch"), int)})
        notes = []
        if epochs:
            span = f"{epochs[0]}" if len(epochs) == 1 else f"{epochs[0]}-{epochs[-1]}"
            notes.append(f"epoch{'s' if len(epochs) > 1 else ''} {span}")
        pruners = sorted({str(e["pruner"]) for e in these if e.get("pruner")})
        if pruners:
            notes.append(f"{', '.join(pruners)} pruner")
        whys = sorted({str(e["why"]) for e in these if e.get("why")})
        if whys:
            notes.append("; ".join(whys[:2]))
        parts.append(f"{len(these)} {tables.END_LABELS[kind]}"
                     + (f" ({', '.join(notes)})" if notes else ""))
    return ", ".join(parts) if any(e["kind"] != "complete" for e in ends) else ""


def answer_sentences(v: StudyView) -> list[str]:
    """The study's question answered in numbers (`answers`): how much of each numeric setting
    it can take, where one option collapses while another holds, and a ceiling warning.
    Configurations with a diverged seed count as failing (no score)."""
    m = f"{v.metric}_mean"
    clean = v.configs.assign(**{m: v.configs[m].where(v.configs["n_diverged"] == 0)})
    higher = higher_is_better(v.metric)
    numeric = [f for f in v.varied if f != "batch_size" and answers.numeric(clean, f)]
    out = [answers.threshold_sentence(clean, f, v.metric, higher)
           for f in numeric if f in answers.HOW_MUCH]
    if v.hue:
        out += [answers.collapse_sentence(clean, v.hue, x, v.metric, higher) for x in numeric]
    out.append(answers.ceiling_sentence(clean, v.hue, v.metric, metric_label(v.metric)))
    return out
