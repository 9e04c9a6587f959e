"""How a number reads, everywhere: the report's page and tables, the commands' text tables.

One rule for every number a person reads: three significant digits ('0.0207', '1.81e-06'),
thousands separated ('13,900'), integers as integers. Accuracy-like metrics (accuracy, R², values
in [0, 1] compared to the third decimal) read with three decimals instead ('0.998'). A mean over
seeds reads with its 95% CI half width ('0.962 ± 0.011'), and a single seed says it has none
('0.962 (no CI)'), never a made-up '± 0'. A missing or non-finite value reads as `missing`
(empty in the report's cells, '—' in the commands' tables).

Layer: the base; it imports nothing of bench and only the standard library.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

SIG = 3  # significant digits of a number a reader compares
FRACTION_DECIMALS = 3  # decimals of an accuracy-like metric
NO_VALUE = "—"  # a missing value in a text table on the terminal


def _finite_real(x: Any) -> bool:
    return isinstance(x, Real) and not isinstance(x, bool) and math.isfinite(float(x))


def fmt_num(x: Any, sig: int = SIG, missing: str = "") -> str:
    """A number as a reader wants it: `sig` significant digits ('0.0207', '1.81e-06'),
    thousands separated ('13,900'), integers as integers, None/NaN as `missing`.

    Digits that rounding keeps stay visible (0.999709 -> '1.00', not '1'); a value that is
    already short stays short (0.5 -> '0.5', 300.0 -> '300'). Anything that is not a number
    (a string, a bool, pandas' NA) is shown as `str(x)`, NA and None as `missing`.
    """
    if x is None or (not isinstance(x, Real | str | bool) and str(x) == "<NA>"):
        return missing
    if isinstance(x, bool) or not isinstance(x, Real):
        return str(x)
    if isinstance(x, Integral):
        return f"{int(x):,}" if abs(int(x)) >= 10_000 else str(int(x))
    x = float(x)
    if math.isnan(x):
        return missing
    if math.isinf(x) or x == 0:
        return f"{x:g}"
    rounded = float(f"{x:.{sig}g}")
    if 1e3 <= abs(x) < 1e9:
        return f"{rounded:,.0f}"
    if rounded != x and 1e-4 <= abs(x) < 1e3:  # keep the digits rounding kept: 0.999709 -> 1.00
        return f"{x:#.{sig}g}".rstrip(".")
    return f"{rounded:g}"  # plain '300', '0.5'; scientific below 1e-4 ('1.81e-06')


def fmt_fixed(x: Any, decimals: int = FRACTION_DECIMALS, missing: str = "") -> str:
    """A number with `decimals` decimals ('0.998'), for values compared digit by digit
    (accuracies); None and non-finite values as `missing`."""
    if not _finite_real(x):
        return missing
    return f"{float(x):.{decimals}f}"


def is_fraction_metric(metric: str) -> bool:
    """Accuracy-like metrics (accuracy, R²: at most 1, compared to the third decimal) read with
    3 decimals; everything else (losses, MSE, seconds) with 3 significant digits."""
    return str(metric).rsplit("_", 1)[-1] in ("accuracy", "r2")


def fmt_score(x: Any, metric: str, missing: str = "n/a") -> str:
    """One value of `metric`: 3 decimals for accuracy-like metrics ('0.998'), else 3
    significant digits ('0.00712'); `missing` when there is no finite value."""
    if not _finite_real(x):
        return missing
    return fmt_fixed(x) if is_fraction_metric(metric) else fmt_num(x)


def fmt_ci(mean: Any, half: Any, digits: int = SIG, metric: str | None = None) -> str:
    """A mean over seeds with its 95% CI half width: '0.962 ± 0.011', or '0.962 (no CI)' when
    there is no interval (one seed); 'n/a' without a finite mean.

    With a `metric` that is not accuracy-like (a loss, an MSE), the mean gets `digits`
    significant digits and the half width as many decimals, so '0.00712 ± 0.00113' instead of
    '0.007 ± 0.001', and a half width wider than the mean keeps `digits` significant digits
    ('0.00797 ± 0.0130'); tiny values switch to scientific notation, both of them.
    """
    if not _finite_real(mean):
        return "n/a"
    mean = float(mean)
    has_ci = _finite_real(half)
    if metric is not None and not is_fraction_metric(metric) and mean != 0:
        decimals = max(0, digits - 1 - math.floor(math.log10(abs(mean))))
        if decimals > 8:  # tiny values: scientific notation, CI likewise
            text = f"{mean:.{digits}g}"
            return text + (f" ± {float(half):.{digits}g}" if has_ci else " (no CI)")
        if has_ci and 0 < half < 0.5 * 10 ** -decimals:  # would read '± 0.00'
            return f"{mean:.{decimals}f} ± {fmt_num(half, 2)}"
        if has_ci and half > 0:  # a wide CI keeps `digits` significant digits: '± 0.0130'
            half_decimals = min(decimals, max(0, digits - 1 - math.floor(math.log10(half))))
            return f"{mean:.{decimals}f} ± {float(half):.{half_decimals}f}"
        digits = decimals
    if not has_ci:
        return f"{mean:.{digits}g} (no CI)" if abs(mean) >= 1e3 else f"{mean:.{digits}f} (no CI)"
    return f"{mean:.{digits}f} ± {float(half):.{digits}f}"


def fmt_param(value: Any) -> str:
    """A hyperparameter value as it reads in 'lr=0.01, batch_size=64, optimizer=adam': whole
    numbers in full below 10,000 ('1234', not '1,230'), other numbers by `fmt_num`, anything
    else as text."""
    if isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(float(value)) \
            and float(value) == int(value) and abs(value) < 1e4:
        return str(int(value))
    return fmt_num(value)
