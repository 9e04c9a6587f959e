"""The report's two pages, index.html and report.md, rendered from Jinja2 templates
(bench/report/templates) out of what the build made (`ReportResult`), the study summaries and
the reproduction and timing tables.

The HTML is autoescaped: every study name, caption, note and table cell is text, never markup,
whatever the storage holds. The Markdown is not HTML-escaped (autoescape is off for `.md`
templates, stated in `ENV`): it is text for a Markdown reader, and its table cells escape only
what breaks a Markdown table (`|` and line breaks). Tables reach the templates as rows of
cells (`Table`), already formatted by `bench.numbers`; no markup is built in Python.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from bench.numbers import fmt_fixed, fmt_num, fmt_score, is_fraction_metric
from bench.report.figures import Chart, Missing
from bench.report.views import SIGNIFICANCE_RULE, metric_label
from bench.sweeps.storage import display_url

# HTML templates escape everything they insert; Markdown templates escape nothing (not HTML).
ENV = Environment(
    loader=PackageLoader("bench.report", "templates"),
    autoescape=select_autoescape(enabled_extensions=("html", "html.j2"),
                                 disabled_extensions=("md", "md.j2", "css"),
                                 default_for_string=True, default=True),
    undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
ENV.filters["code_spans"] = lambda text: [(p, i % 2 == 1) for i, p in enumerate(str(text).split("`"))]
ENV.filters["md_cell"] = lambda text: str(text).replace("|", "\\|").replace("\n", " ")

NAV = (("studies", "Studies"), ("charts", "Charts"), ("reproduction", "Reproduction"),
       ("timing", "Timing"), ("tables", "Tables"))
REPRODUCE_NUMBERS = ("notebook_figure", "mean", "ci95", "val_metric_mean")
TIMING_DISPLAY = {"epoch_seconds_median": ("epoch ms (median)", 1e3),
                  "iqr_over_median": ("IQR / median (%)", 100.0),
                  "samples_per_second_median": ("samples/s (median)", 1.0)}
SUMMARY_COLUMNS = ("study", "task", "model", "metric", "varied", "trials", "complete", "failed",
                   "ended", "seeds", "winner", "winner_score", "runner_up", "runner_up_score")


@dataclass
class ReportResult:
    """What `build_report` wrote and what it could not show."""

    out: Path
    charts: list[Chart]
    missing: list[Missing]
    notes: list[str]
    files: list[Path]
    # What was left out because it needs a task or model not available here, one line each
    # ("decision boundaries of study 's' skipped: model 'm' is not registered here (...)").
    skipped: list[str] = field(default_factory=list)


# --- tables as the pages show them --------------------------------------------------------------

@dataclass
class Cell:
    """One table cell: its text and the CSS classes of the HTML cell ('num', 'long', ...)."""

    text: str
    classes: str = ""


@dataclass
class Table:
    """A table for the templates: header texts, rows of cells, and how many rows were left out
    (they are in the CSV)."""

    headers: list[str]
    rows: list[list[Cell]]
    more: int = 0


def display_frame(df: pd.DataFrame, fraction_columns: tuple[str, ...] = ()) -> pd.DataFrame:
    """The table as the page shows it: strings, floats with 3 significant digits (accuracy
    columns, and `fraction_columns`, with 3 decimals), missing values blank."""
    out = pd.DataFrame(index=df.index)
    for c in df.columns:
        frac = c in fraction_columns or is_fraction_metric(str(c).removesuffix("_mean")
                                                           .removesuffix("_ci95"))
        out[c] = [_cell_text(x, frac) for x in df[c]]
    return out


def _cell_text(x: Any, fraction: bool = False) -> str:
    if x is None or x is pd.NA or (isinstance(x, float) and math.isnan(x)):
        return ""
    if fraction and isinstance(x, float | np.floating):
        return fmt_fixed(x)
    if isinstance(x, float | np.floating | int | np.integer) and not isinstance(x, bool):
        return fmt_num(x)
    return str(x)


def table(df: pd.DataFrame, max_rows: int, cell_class: Callable[[str, str], str] | None = None
          ) -> Table:
    """`display_frame(df)` as header texts and rows of cells: readable headers (no
    underscores), numbers right aligned ('num'), long text cells wide enough to read ('long'),
    and any class `cell_class(column, text)` adds."""
    shown = display_frame(df.head(max_rows))
    numeric = {c for c in df.columns if pd.api.types.is_numeric_dtype(df[c])
               and not pd.api.types.is_bool_dtype(df[c])}
    rows = []
    for row in shown.itertuples(index=False):
        cells = []
        for c, text in zip(shown.columns, row, strict=True):
            extra = cell_class(c, text) if cell_class else ""
            classes = [*(["num"] if c in numeric else []), *(["long"] if len(text) > 80 else []),
                       *([extra] if extra else [])]
            cells.append(Cell(text, " ".join(classes)))
        rows.append(cells)
    return Table([str(c).replace("_", " ") for c in shown.columns], rows,
                 max(0, len(df) - max_rows))


def reproduce_display(repro: pd.DataFrame) -> pd.DataFrame:
    """The reproduction table with each row's numbers formatted for its own metric."""
    out = repro.copy()
    values = [c for c in REPRODUCE_NUMBERS if c in out]
    if "metric" in out and values:
        for c in values:
            out[c] = [fmt_score(x, str(m)) if pd.notna(x) else ""
                      for x, m in zip(out[c], out["metric"], strict=True)]
    return out


def timing_display(timing: pd.DataFrame) -> pd.DataFrame:
    """The timing table with units a reader can use: ms per epoch, spread in %, samples/s."""
    cols = ["host", "gpu_name", "task", "model", "width", "batch_size", "engine", "k",
            "device", "epoch_seconds_median", "iqr_over_median", "noisy",
            "samples_per_second_median"]
    t = timing[[c for c in cols if c in timing.columns]].copy()
    if "gpu_name" in t and t["gpu_name"].isna().all():
        t = t.drop(columns="gpu_name")
    for c, (_name, scale) in TIMING_DISPLAY.items():
        if c in t:
            t[c] = pd.to_numeric(t[c], errors="coerce") * scale
    for c in ("width", "batch_size", "k"):
        if c in t:
            t[c] = pd.to_numeric(t[c], errors="coerce").astype("Int64")
    if "noisy" in t:
        t["noisy"] = t["noisy"].map({True: "yes", False: ""}).fillna("")
    return t.rename(columns={**{c: n for c, (n, _) in TIMING_DISPLAY.items()},
                             "k": "K (models per run)"})


def summary_display(summaries: list[dict[str, Any]]) -> pd.DataFrame:
    """The per-study summary as the page shows it: few, readable columns."""
    df = pd.DataFrame(summaries).reindex(columns=list(SUMMARY_COLUMNS))
    out = pd.DataFrame({
        "study": df["study"], "task / model": df["task"] + " / " + df["model"],
        "metric": [metric_label(m) for m in df["metric"]], "varied": df["varied"],
        "trials (how they ended)": [f"{t} ({e})" if isinstance(e, str) and e else str(t)
                                    for t, e in zip(df["trials"], df["ended"], strict=True)],
        "seeds": df["seeds"], "winner": df["winner"], "winner score": df["winner_score"],
        "runner-up": df["runner_up"], "runner-up score": df["runner_up_score"]})
    return out.dropna(axis=1, how="all")


def _reproduce_class(column: str, text: str) -> str:
    if column == "verdict" and text.replace("-", "").isalnum():
        return f"v-{text}"
    return "num" if column in REPRODUCE_NUMBERS else ""


# --- the pages ----------------------------------------------------------------------------------

def _page(result: ReportResult, summaries: list[dict[str, Any]],
          extra: dict[str, pd.DataFrame | None], storage: str | None, max_rows: int
          ) -> dict[str, Any]:
    """What both templates show, as plain values and `Table`s."""
    repro, timing = extra.get("reproduce"), extra.get("timing")
    charts = [{"key": c.key, "title": c.title, "question": c.question, "caption": c.caption,
               "png": c.files[0] if c.files else "",
               "png_base64": base64.b64encode(c.png).decode("ascii"),
               "links": [{"href": f, "kind": Path(f).suffix[1:].upper(), "name": Path(f).name}
                         for f in c.files],
               "table": {"href": c.table, "kind": "CSV", "name": Path(c.table).name}
               if c.table else None}
              for c in result.charts]
    return {
        "generated": f"{datetime.now():%Y-%m-%d %H:%M}",
        "storage": display_url(storage) if storage else "none",
        "nav": NAV, "notes": result.notes, "missing": result.missing,
        "skipped": result.skipped,
        "svg": any(f.endswith(".svg") for c in result.charts for f in c.files),
        "rule": SIGNIFICANCE_RULE, "summaries": summaries,
        "summary_table": table(summary_display(summaries), max_rows, lambda c, text: (
            "num" if c.endswith("score") else "")) if summaries else None,
        "charts": charts,
        "reproduce": None if repro is None else table(reproduce_display(repro), max_rows,
                                                      _reproduce_class),
        "timing": None if timing is None or timing.empty else
        table(timing_display(timing), max_rows),
        "csv_files": [str(f) for f in result.files if str(f).endswith(".csv")],
    }


def render_html(result: ReportResult, summaries: list[dict[str, Any]],
                extra: dict[str, pd.DataFrame | None], storage: str | None) -> str:
    """The self-contained page: summary per study, charts (base64 PNG), tables, gaps; every
    value autoescaped by the template."""
    return ENV.get_template("index.html.j2").render(
        _page(result, summaries, extra, storage, max_rows=60))


def render_markdown(result: ReportResult, summaries: list[dict[str, Any]],
                    extra: dict[str, pd.DataFrame | None], storage: str | None) -> str:
    """The Markdown twin of the page, linking the PNG files (text as it is, not HTML-escaped)."""
    return ENV.get_template("report.md.j2").render(
        _page(result, summaries, extra, storage, max_rows=40))
