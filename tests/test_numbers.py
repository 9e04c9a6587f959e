"""bench.numbers: one way a number reads, in the report and in the commands' tables."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from bench import numbers
from bench.commands._common import fmt


def test_fmt_ci_never_shows_a_fake_interval() -> None:
    assert numbers.fmt_ci(0.5, float("nan")) == "0.500 (no CI)"
    assert numbers.fmt_ci(0.5, 0.01) == "0.500 ± 0.010"
    assert numbers.fmt_ci(float("nan"), float("nan")) == "n/a"
    assert numbers.fmt_ci(0.5, None) == "0.500 (no CI)"


def test_a_wide_interval_keeps_three_significant_digits() -> None:
    assert numbers.fmt_ci(0.00797, 0.01296, metric="val_loss") == "0.00797 ± 0.0130"
    assert numbers.fmt_ci(12.34, 56.78, metric="val_mse") == "12.3 ± 56.8"
    assert numbers.fmt_ci(0.0395, 0.0374, metric="val_loss") == "0.0395 ± 0.0374"


def test_numbers_read_with_three_significant_digits() -> None:
    assert numbers.fmt_num(0.0206646) == "0.0207" and numbers.fmt_num(1.80857e-06) == "1.81e-06"
    assert numbers.fmt_num(0.999709) == "1.00" and numbers.fmt_num(0.5) == "0.5"
    assert numbers.fmt_num(13864.2) == "13,900" and numbers.fmt_num(300.0) == "300"
    assert numbers.fmt_ci(0.00712, 0.00113, metric="val_loss") == "0.00712 ± 0.00113"
    assert numbers.fmt_ci(0.9981, 0.0004, metric="val_accuracy") == "0.998 ± 0.000"
    assert numbers.fmt_score(0.99964, "train_accuracy") == "1.000"
    assert numbers.fmt_score(1.21101484, "train_mse") == "1.21"


def test_integers_missing_values_and_numpy_types() -> None:
    assert numbers.fmt_num(64) == "64" and numbers.fmt_num(20_000) == "20,000"
    assert numbers.fmt_num(np.int64(7)) == "7" and numbers.fmt_num(np.float32(0.5)) == "0.5"
    assert numbers.fmt_num(None) == numbers.fmt_num(math.nan) == numbers.fmt_num(pd.NA) == ""
    assert numbers.fmt_num(math.nan, missing="—") == "—"
    assert numbers.fmt_num(True) == "True" and numbers.fmt_num("adam") == "adam"
    assert numbers.fmt_num(math.inf) == "inf" and numbers.fmt_num(0.0) == "0"
    assert numbers.fmt_fixed(0.5) == "0.500" and numbers.fmt_fixed(math.inf) == ""
    assert numbers.fmt_score(math.nan, "val_accuracy") == "n/a"


def test_parameter_values_read_in_full_when_whole() -> None:
    assert numbers.fmt_param(1234.0) == "1234" and numbers.fmt_param(64) == "64"
    assert numbers.fmt_param(0.0123456) == "0.0123" and numbers.fmt_param("adam") == "adam"
    assert numbers.fmt_param(2.5e-5) == "2.5e-05"


def test_the_commands_tables_use_the_same_rule() -> None:
    assert fmt(0.96254) == "0.9625" and fmt(13864.2, 3) == "13,900"
    assert fmt(12.3456) == "12.35" and fmt(7) == "7"
    assert fmt(math.nan) == fmt(None) == "—"


def test_welch_p_matches_scipy_and_handles_no_spread() -> None:
    from scipy import stats as st

    from bench.stats import welch_p

    a, b = [0.9, 0.92, 0.95], [0.8, 0.85, 0.83, float("nan")]
    assert welch_p(a, b) == pytest.approx(st.ttest_ind(a, b[:3], equal_var=False).pvalue)
    assert welch_p([1.0, 1.0], [2.0, 2.0]) == 0.0 and welch_p([1.0, 1.0], [1.0, 1.0]) == 1.0
    assert math.isnan(welch_p([1.0], [1.0, 2.0]))
