"""Statistics over seeds: mean, standard deviation and a Student-t 95% confidence interval."""

from __future__ import annotations

import math
from collections.abc import Sequence

from scipy import stats as _st


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """(mean, half-width of the t confidence interval) over the finite values.

    With fewer than two finite values there is no interval: the half-width is NaN, never a
    made-up zero.
    """
    xs = [float(v) for v in values if math.isfinite(float(v))]
    if not xs:
        return math.nan, math.nan
    mean = sum(xs) / len(xs)
    if len(xs) < 2:
        return mean, math.nan
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))
    t = float(_st.t.ppf(0.5 + confidence / 2, df=len(xs) - 1))
    return mean, t * sd / math.sqrt(len(xs))


def std(values: Sequence[float]) -> float:
    """Sample standard deviation (n - 1) of the finite values; NaN below two values."""
    xs = [float(v) for v in values if math.isfinite(float(v))]
    if len(xs) < 2:
        return math.nan
    mean = sum(xs) / len(xs)
    return math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))
