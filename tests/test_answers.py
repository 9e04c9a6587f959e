"""The summary's answers (bench.report.answers) on the shipped studies' own numbers.

The per-seed validation accuracies below were measured by `bench sweep` on
studies/sine_loss.toml and studies/moons_weight_decay.toml (2026-12-02); they go through the
report's own aggregation (`tables.aggregate`: mean and 95% t-CI over seeds), so these tests pin
what the shipped studies' summaries say, and the rules on the cases around them.
"""

from __future__ import annotations

import math

import pandas as pd

from bench.report import answers, tables

NAN = math.nan

# studies/sine_loss.toml: Adam, batches of 32, 50 epochs, 5 seeds
SINE_LOSS = {
    ("mse", 0.1): [0.986, 0.986, 0.986, 0.988, 0.976],
    ("mse", 1.0): [0.954, 0.632, 0.942, 0.94, 0.936],
    ("mse", 3.0): [0.368, 0.632, 0.632, 0.632, 0.632],
    ("mse", 10.0): [0.368, 0.632, 0.632, 0.632, 0.632],
    ("mse", 30.0): [0.368, 0.632, 0.632, 0.632, 0.632],
    ("bce", 0.1): [0.986, 0.988, 0.986, 0.99, 0.978],
    ("bce", 1.0): [0.954, 0.966, 0.95, 0.968, 0.948],
    ("bce", 3.0): [0.922, 0.802, 0.95, 0.946, 0.952],
    ("bce", 10.0): [0.886, 0.826, 0.876, 0.604, 0.748],
    ("bce", 30.0): [0.368, 0.652, 0.858, 0.786, 0.472],
}

# studies/moons_weight_decay.toml: SGD lr 0.5, 200 moons, 5 seeds
MOONS_WD = {
    0.0: [1.0, 0.995, 1.0, 0.995, 1.0],
    1e-3: [1.0, 0.995, 0.995, 0.995, 0.995],
    3e-3: [0.995, 0.995, 0.995, 0.995, 0.995],
    0.01: [0.95, 0.995, 0.995, 0.98, 0.99],
    0.02: [0.92, 0.94, 0.935, 0.925, 0.94],
    0.03: [0.88, 0.895, 0.895, 0.875, 0.87],
    0.1: [0.85, 0.865, 0.855, 0.85, 0.855],
    0.2: [0.5, 0.5, 0.5, 0.5, 0.5],
}


def _configs(seeds: dict, by: list[str], metric: str = "val_accuracy") -> pd.DataFrame:
    """One row per configuration, as the report aggregates runs over seeds."""
    rows = []
    for key, values in seeds.items():
        key = key if isinstance(key, tuple) else (key,)
        rows += [dict(zip(by, key, strict=True), **{metric: v}) for v in values]
    return tables.aggregate(pd.DataFrame(rows), by, [metric])


def test_sine_loss_summary_says_mse_collapses_where_bce_holds() -> None:
    df = _configs(SINE_LOSS, ["loss", "lr"])
    said = answers.collapse_sentence(df, "loss", "lr", "val_accuracy", higher=True)
    # lr 10: MSE still 0.579 but BCE falls too (one seed at 0.604), CIs overlap: not claimed
    assert said == "MSE collapses to 0.579 at lr = 3 while BCE keeps 0.914."
    how = answers.threshold_sentence(df, "lr", "val_accuracy", higher=True)
    assert how.startswith("How much lr: no larger lr scores within the best's 95% CI "
                          "(best lr=0.1, 0.986 ± 0.006")
    # the best of both losses holds at lr 3 (BCE, 0.914, less than 0.1 below), not from 10 on
    assert how.endswith(" From lr=10 on it collapses: 0.788 ± 0.145 at best.")


def test_three_seeds_of_the_same_runs_claim_no_collapse() -> None:
    # why the study runs 5 seeds: with the first 3, MSE's one minority-class seed widens its
    # CI (0.544 ± 0.379) past BCE's lower bound, and the rule claims nothing
    three = {k: v[:3] for k, v in SINE_LOSS.items()}
    df = _configs(three, ["loss", "lr"])
    assert answers.collapse_sentence(df, "loss", "lr", "val_accuracy", True) == ""


def test_moons_weight_decay_summary_names_the_threshold_and_the_collapse() -> None:
    df = _configs(MOONS_WD, ["weight_decay"])
    said = answers.threshold_sentence(df, "weight_decay", "val_accuracy", higher=True)
    assert said == ("How much weight_decay: the largest weight_decay within the best's seed "
                    "spread is weight_decay=0.003 (0.995 ± 0.000; best weight_decay=0, "
                    "0.998 ± 0.003, 95% CI down to 0.995). From weight_decay=0.03 on it "
                    "collapses: 0.883 ± 0.014 at best.")
    # 0.01 and 0.02 are below the spread but within the margin of 0.1: degraded, not collapsed
    assert "weight_decay=0.01 " not in said and "weight_decay=0.02 " not in said
    # the small weight decays saturate the metric, and the summary says so
    # (weight decay 3e-3 averages five 0.995s to 0.99499...: it reaches the ceiling too)
    ceiling = answers.ceiling_sentence(df, None, "val_accuracy", "validation accuracy")
    assert ceiling.startswith("Ceiling: 3 configurations reach 0.995 validation accuracy")


def test_breaking_point_says_first_at_when_a_larger_value_holds_again() -> None:
    # l1=3 is below the best's spread but within the margin: it holds, so not 'from l1=1 on'
    seeds = {0.0: [0.9, 0.91, 0.92], 0.1: [0.9, 0.9, 0.91], 1.0: [0.6, 0.62, 0.61],
             3.0: [0.85, 0.86, 0.85], 10.0: [0.5, 0.5, 0.5]}
    said = answers.threshold_sentence(_configs(seeds, ["l1"]), "l1", "val_accuracy", True)
    assert said.endswith("is l1=0.1 (0.903 ± 0.014; best l1=0, 0.910 ± 0.025, 95% CI down to "
                         "0.885). It first collapses at l1=1: 0.610 ± 0.025 at best.")


def test_breaking_point_of_a_value_where_every_configuration_diverged() -> None:
    seeds = {("sgd", 0.01): [0.90, 0.91, 0.92], ("sgd", 0.1): [0.91, 0.92, 0.92],
             ("sgd", 10.0): [NAN, NAN, NAN], ("adam", 10.0): [NAN, NAN, NAN]}
    df = _configs(seeds, ["optimizer", "lr"])
    said = answers.threshold_sentence(df, "lr", "val_accuracy", True)
    assert said.endswith(" From lr=10 on every configuration diverges.")
    # a larger lr that trains again: the diverging one is named alone
    again = _configs({**seeds, ("sgd", 30.0): [0.85, 0.86, 0.85]}, ["optimizer", "lr"])
    said = answers.threshold_sentence(again, "lr", "val_accuracy", True)
    assert said.endswith(" At lr=10 every configuration diverges.")


def test_breaking_point_when_nothing_larger_collapses() -> None:
    seeds = {0.0: [0.9, 0.91, 0.92], 0.1: [0.85, 0.86, 0.86], 1.0: [0.84, 0.85, 0.85]}
    said = answers.threshold_sentence(_configs(seeds, ["l1"]), "l1", "val_accuracy", True)
    assert said.endswith(" No larger l1 tried collapses (up to l1=1).")
    # the largest value is within the spread: nothing larger, nothing to add
    flat = {0.0: [0.9, 0.91, 0.92], 1.0: [0.9, 0.91, 0.92]}
    said = answers.threshold_sentence(_configs(flat, ["l1"]), "l1", "val_accuracy", True)
    assert said.endswith("95% CI down to 0.885).")


def test_breaking_point_on_a_loss_needs_twice_the_best_loss() -> None:
    seeds = {0.0: [0.10, 0.11, 0.12], 0.01: [0.15, 0.16, 0.15], 0.1: [0.30, 0.31, 0.29]}
    df = _configs(seeds, ["weight_decay"], "val_loss")
    said = answers.threshold_sentence(df, "weight_decay", "val_loss", higher=False)
    # 0.153 is worse but less than twice 0.110: only 0.1 (0.300) collapses
    assert said.endswith(" From weight_decay=0.1 on it collapses: 0.300 ± 0.025 at best.")
