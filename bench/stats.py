"""Statistics over seeds: mean, standard deviation and a Student-t 95% confidence interval.

The one rule everywhere (tables, reports, `bench run`, `bench reproduce`, `bench check`): values
that are not finite (diverged runs) are left out; the standard deviation is the sample one
(n - 1); with fewer than two finite values there is no standard deviation and no interval (NaN),
never a made-up zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def _finite(values: Sequence[float]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """(mean, sample standard deviation) of the finite values; the sd is NaN below two values
    and both are NaN with none."""
    xs = _finite(values)
    if not xs:
        return math.nan, math.nan
    mean = sum(xs) / len(xs)
    if len(xs) < 2:
        return mean, math.nan
    return mean, math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))


def std(values: Sequence[float]) -> float:
    """Sample standard deviation (n - 1) of the finite values; NaN below two values."""
    return mean_sd(values)[1]


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """(mean, half-width of the t confidence interval) over the finite values.

    With fewer than two finite values there is no interval: the half-width is NaN, never a
    made-up zero.
    """
    mean, sd = mean_sd(values)
    if not math.isfinite(sd):
        return mean, math.nan
    from scipy import stats as _st  # heavy: `bench --help` imports this module

    n = len(_finite(values))
    t = float(_st.t.ppf(0.5 + confidence / 2, df=n - 1))
    return mean, t * sd / math.sqrt(n)


def welch_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of Welch's t-test between the finite values of `a` and `b`; NaN below
    two values on either side; with no spread on either side, 0 if the means differ, else 1."""
    xa, xb = _finite(a), _finite(b)
    if len(xa) < 2 or len(xb) < 2:
        return math.nan
    if std(xa) == 0 and std(xb) == 0:  # the test divides by the spread
        return 0.0 if mean_sd(xa)[0] != mean_sd(xb)[0] else 1.0
    import warnings

    from scipy import stats as _st  # heavy: `bench --help` imports this module

    with warnings.catch_warnings():  # values equal to the last digit: scipy warns, p is right
        warnings.filterwarnings("ignore", message="Precision loss occurred")
        return float(_st.ttest_ind(xa, xb, equal_var=False).pvalue)
