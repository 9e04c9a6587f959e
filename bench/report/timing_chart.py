"""The CPU vs CUDA chart: time per epoch and per trained model against the batch size, one
panel per workload and hidden width, with the batch size from which CUDA is faster marked.

It reads the timing files `bench time` writes (`tables.timing_table`); where several files
measured the same setting, the newest one counts (`latest_timing`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from bench.report.figures import NEEDS, Chart, Context, Missing, colors_for, plain_log_ticks, save, style


def crossovers(timing: pd.DataFrame) -> pd.DataFrame:
    """Where CUDA starts beating the CPU per (task, model, width, engine, k, dtype).

    Columns: the group keys, `status` ('crossover', 'cpu_faster', 'cuda_faster' or
    'cpu_only'/'cuda_only'), and `batch_size` (the first size at which CUDA is faster after one
    at which the CPU is) for a crossover.
    """
    keys = ["task", "model", "width", "engine", "k", "dtype"]
    rows = []
    for key, g in timing.groupby(keys, dropna=False):
        piv = g.pivot_table(index="batch_size", columns="device",
                            values="epoch_seconds_median", aggfunc="median")
        row = dict(zip(keys, key, strict=True))
        if not {"cpu", "cuda"} <= set(piv.columns):
            row["status"] = "cpu_only" if "cpu" in piv.columns else "cuda_only"
        else:
            both = piv.dropna(subset=["cpu", "cuda"]).sort_index()
            faster = (both["cuda"] < both["cpu"]).tolist()
            sizes = both.index.tolist()
            row["status"] = "cuda_faster" if all(faster) else (
                "cpu_faster" if not any(faster) else "crossover")
            for i in range(1, len(faster)):
                if faster[i] and not faster[i - 1]:
                    row["batch_size"] = sizes[i]
                    row["previous_batch_size"] = sizes[i - 1]
                    break
        rows.append(row)
    return pd.DataFrame(rows)


def latest_timing(timing: pd.DataFrame) -> pd.DataFrame:
    """One measurement per setting: the newest file wins where several measured the same."""
    keys = ["task", "model", "width", "batch_size", "engine", "k", "device", "dtype"]
    return timing.sort_values("created", na_position="first").drop_duplicates(keys, keep="last")


def _timing_panel(ax: Any, sub: pd.DataFrame, cross: pd.DataFrame, task: str, model: str,
                  w: Any, colors: dict[Any, Any], legend: dict[str, Any]) -> None:
    """One workload at one width: a line per (device, engine, K), crossover marked, log axes."""
    for (dev, engine, k), g in sub.groupby(["device", "engine", "k"], dropna=False):
        g = g.sort_values("batch_size")
        label = f"{dev}, {engine} engine" + (f" (K={int(k)} models at once)"
                                             if k and k > 1 else "")
        med = g["per_trial"] * 1e3
        iqr = g["iqr_over_median"].astype(float).fillna(0) * med
        line = ax.errorbar(g["batch_size"], med, yerr=[np.minimum(iqr / 2, med * 0.99), iqr / 2],
                           marker="o" if dev == "cpu" else "s", color=colors[engine], lw=1.6,
                           capsize=3, ls="-" if dev == "cpu" else "--")
        legend.setdefault(label, line)
    cw = cross[(cross["task"].astype(str) == task) & (cross["model"].astype(str) == model)]
    cw = cw[cw["width"] == w] if w is not None else cw
    for _, c in cw[cw["status"] == "crossover"].iterrows():
        xc = math.sqrt(c["batch_size"] * c["previous_batch_size"])
        ax.axvline(xc, color="0.3", ls=":", lw=1.5)
        ax.text(xc, 0.97, f" CUDA faster\n from batch {int(c['batch_size'])}",
                transform=ax.get_xaxis_transform(), va="top", fontsize=8)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    if not sub.empty:
        plain_log_ticks(ax)
        ticks = sorted(sub["batch_size"].unique())
        ax.set_xticks(ticks, [f"{b:g}" for b in ticks])
    ax.minorticks_off()


def chart_timing(ctx: Context) -> Chart | Missing:
    """CPU vs CUDA time per epoch by batch size and width, with the crossover marked."""
    key, question = "timing", "Is the GPU worth it for a model this small, and from which batch?"
    t = ctx.timing
    if t.empty or t["epoch_seconds_median"].isna().all():
        return Missing(key, question, NEEDS[key])
    t = latest_timing(t.dropna(subset=["epoch_seconds_median", "batch_size"]))
    # Per-trial time, so a batched group of K runs compares with one reference run.
    t["per_trial"] = t["per_trial_epoch_seconds_median"].astype(float).fillna(
        t["epoch_seconds_median"].astype(float) / t["k"].fillna(1).astype(float))
    widths = sorted(t["width"].dropna().unique().tolist()) or [None]
    workloads = sorted({(str(a), str(b)) for a, b in zip(t["task"], t["model"], strict=True)})
    cross = crossovers(t)
    fig = Figure(figsize=(4.6 * len(widths), 3.3 * len(workloads) + 0.8), layout="constrained")
    grid = fig.subplots(len(workloads), len(widths), squeeze=False)
    colors = colors_for(sorted(t["engine"].dropna().unique()))
    notes = []
    legend: dict[str, Any] = {}
    with style():
        for (task, model), axes in zip(workloads, grid, strict=True):
            for w, ax in zip(widths, axes, strict=True):
                sub = t[(t["task"].astype(str) == task) & (t["model"].astype(str) == model)]
                sub = sub if w is None else sub[sub["width"] == w]
                if sub.empty:  # this workload was not timed at this width: no empty axes
                    ax.set_visible(False)
                    continue
                _timing_panel(ax, sub, cross, task, model, w, colors, legend)
                ax.set_title(f"{task}/{model}, hidden width {int(w)}" if w is not None else
                             f"{task}/{model}", fontsize=10)
                ax.set_xlabel("batch size (examples)")
                ax.set_ylabel("ms per epoch per model\n(median; bar: IQR)")
        order = sorted(legend)
        fig.legend([legend[k] for k in order], order, loc="outside lower center",
                   ncols=min(len(legend), 4), fontsize=8, frameon=False)
    if "cuda" not in set(t["device"]):
        fig.suptitle("CPU only: no CUDA timings were found, so there is no CPU/CUDA crossover "
                     "to mark", fontsize=10, color="#8a6d00",
                     bbox={"boxstyle": "round", "fc": "#fff3cd", "ec": "#d4a017"})
    for status, text in (("cpu_only", "only CPU timings exist: the CPU/CUDA crossover is not "
                                      "measured (run `bench time --device cuda` on a GPU)"),
                         ("cpu_faster", "the CPU is faster at every batch size measured"),
                         ("cuda_faster", "CUDA is faster at every batch size measured")):
        if (cross["status"] == status).any():
            notes.append(text)
    noisy = int(t["noisy"].fillna(False).astype(bool).sum())
    if noisy:
        notes.append(f"{noisy} of {len(t)} measurements are flagged noisy (IQR/median high)")
    png, files = save(fig, ctx.folder, key, svg=ctx.svg)
    hosts = ", ".join(sorted({f"{h} ({g or 'no GPU'})" for h, g in
                              zip(t["host"], t["gpu_name"], strict=True)}))
    caption = (f"Median time per training epoch and per trained model (a batched group's "
               f"time divided by its K models) over repeats, measured by `bench time` on "
               f"{hosts}; both axes on a log scale. Colour: engine; solid line and circles: CPU, "
               "dashed line and squares: CUDA. " + ("Dotted vertical line: where CUDA becomes faster. "
                           if (cross["status"] == "crossover").any() else "") +
               ("; ".join(n[0].upper() + n[1:] for n in notes) + "." if notes else ""))
    caption = caption[0].upper() + caption[1:]
    ctx.write_table(cross, "timing_crossover")
    return Chart(key, "CPU vs CUDA", question, caption, png, files,
                 ctx.write_table(t, "timing_latest"))

