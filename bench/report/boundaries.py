"""Decision boundaries: the best model per optimizer (or loss) of each study on a 2-D
classification task, its predicted probability shaded over the plane with the validation set
on top (as the notebooks draw it).

The sweep keeps the final parameters of the runs this chart draws: a layer-list network is
then evaluated in NumPy (`forward_numpy`), so the report loads no torch (about 2 s). A network
given as code, or a run stored without parameters (retrained deterministically from its spec
and seed with the reference engine), imports torch in the worker that draws it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from bench.catalog import registry
from bench.errors import UsageError
from bench.numbers import fmt_score
from bench.report.figures import (
    NEEDS,
    Chart,
    Context,
    Missing,
    Skipped,
    facet_grid,
    save,
    slug,
    style,
    wrap,
)
from bench.report.views import StudyView, metric_label
from bench.spec import RunSpec

# Head outputs [N, O] of a trained model for points [N, 2] (NumPy in, NumPy out).
Predict = Callable[[np.ndarray], np.ndarray]


def _torch_predict(model: Any, head: Any) -> Predict:
    """`setup.predict` of a torch module, on NumPy points in the module's dtype."""
    import torch

    from bench.engines.setup import predict

    dtype = next(model.parameters()).dtype
    return lambda pts: predict(model, torch.tensor(pts, dtype=dtype), head).numpy()


def retrain_for_boundary(run_spec: dict[str, Any]) -> tuple[Predict, Any, Any, Any]:
    """Retrain one stored run deterministically; return (predict, head, RunResult, its
    validation split (x, y) as NumPy arrays).

    Same spec and seed give identical weights with the reference engine, so the boundary drawn
    is the one of the stored run (up to engine and device rounding). Runs stored for CUDA are
    retrained on the CPU where CUDA is absent.
    """
    import torch  # torch-backed modules: only when a run must be retrained

    from bench.engines.reference import train
    from bench.engines.setup import build_model, load_data, plan_run

    spec = RunSpec.from_dict(run_spec)
    if spec.device != "cpu" and not torch.cuda.is_available():
        spec = spec.replace(device="cpu")
    result = train(spec, keep_params=True)
    data = load_data(spec, "cpu")
    plan = plan_run(spec.replace(device="cpu"), data.n_train)
    model = build_model(spec.replace(device="cpu"), plan)  # a layer list or a model as code
    model.load_state_dict(result.params)
    return _torch_predict(model, plan.head), plan.head, result, \
        (data.x_val.numpy(), data.y_val.numpy())


def stored_for_boundary(run: dict[str, Any]
                        ) -> tuple[Predict, Any, dict[str, Any], tuple[np.ndarray, np.ndarray]] \
        | None:
    """(predict, head, the run, its validation split (x, y)) from the final parameters the
    sweep kept with a stored run; None when none were kept. A layer list is evaluated in
    NumPy; a model given as code is built with torch."""
    if not isinstance(run.get("final_params"), dict):
        return None
    from bench.catalog.models import forward_numpy
    from bench.catalog.tasks import task_splits
    from bench.engines.network import network_of
    from bench.results import decode_arrays

    spec = RunSpec.from_dict(run["spec"]).replace(device="cpu")
    head, arch, _ = network_of(spec)
    splits = task_splits(spec.task, data_seed=spec.data_seed, n_samples=spec.n_samples)
    dtype = np.dtype(spec.dtype)
    val = (splits[2].astype(dtype), splits[3])  # as load_data casts them for training
    if arch is not None:
        state = decode_arrays(run["final_params"])
        return (lambda pts: forward_numpy(arch, state, pts.astype(dtype), head)), head, run, val
    from bench.engines.setup import build_model, plan_run
    from bench.results import decode_params

    plan = plan_run(spec, len(splits[0]))
    model = build_model(spec, plan)  # a model given as code (a plugin's)
    model.load_state_dict(decode_params(run["final_params"]))
    return _torch_predict(model, head), head, run, val


def boundary_grid(predict: Predict, head: Any, x: np.ndarray, steps: int = 200
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """P(class 1) of a model (`predict`: its head outputs) on a grid spanning the data with a
    10% margin."""
    lo, hi = x.min(axis=0), x.max(axis=0)
    pad = 0.1 * (hi - lo)
    g0 = np.linspace(lo[0] - pad[0], hi[0] + pad[0], steps)
    g1 = np.linspace(lo[1] - pad[1], hi[1] + pad[1], steps)
    xx, yy = np.meshgrid(g0, g1)
    out = predict(np.c_[xx.ravel(), yy.ravel()])
    if out.shape[1] == 1:
        p = (out[:, 0] + 1) / 2 if head.activation == "tanh" else out[:, 0]
    else:
        p = out[:, 1] / np.clip(out.sum(axis=1), 1e-12, None)
    return xx, yy, p.reshape(xx.shape)


def chart_boundaries(ctx: Context) -> list[Chart | Missing | Skipped]:
    """Decision boundary of the best model per optimizer on each 2-D task, data overlaid.

    A study whose task or model is not available here (a plugin not loaded, a data file gone)
    cannot be redrawn: it gets one `Skipped` line naming why and the fix, the rest stands."""
    question = "What did the best model learn? (decision boundary, as the notebooks draw it)"
    skipped: list[Chart | Missing | Skipped] = []
    views = []
    for v in ctx.views:
        if v.ranked().empty:
            continue
        if problem := ctx.study(v.name).rebuild_problem():
            skipped.append(Skipped(f"boundary_{slug(v.name)}", f"decision boundaries of study "
                                   f"{v.name!r} skipped: {problem}"))
            continue
        task = registry.get_task(v.task)
        if task.input_dim == 2 and task.kind != "regression":
            views.append(v)
    if not views:  # the skip lines say why, if any; else which study would be drawn
        return skipped or [Missing("boundaries", question, NEEDS["boundaries"])]
    if not ctx.boundaries:
        return [Missing("boundaries", question, "a report run without --no-boundaries")]
    out: list[Chart | Missing | Skipped] = list(skipped)
    for v in views:
        try:
            out.append(_boundary_chart(ctx, v, question))
        except (UsageError, ValueError, TypeError, KeyError, RuntimeError, StopIteration) as exc:
            out.append(Missing(f"boundary_{slug(v.name)}", f"{v.name}: {question}",
                               f"stored runs that retrain ({type(exc).__name__}: {exc})"))
    return out


def _boundary_chart(ctx: Context, v: StudyView, question: str) -> Chart:
    """The decision-boundary chart of one study (raises when its best runs cannot retrain)."""
    factor = next((f for f in ("optimizer", "loss") if f in v.varied), None)
    ranked = v.ranked()
    best = ranked.groupby(factor, sort=False).head(1) if factor else ranked.head(1)
    fig, facets = facet_grid(len(best), ncols=3, size=(4.4, 3.9))
    rows = []
    reused = 0
    with style():
        for (_, conf), (ax,) in zip(best.iterrows(), facets, strict=False):
            runs = v.runs[(v.runs["trial"] == conf["trial"])].dropna(subset=[v.metric])
            median = runs.sort_values(v.metric).iloc[(len(runs) - 1) // 2]
            s = ctx.study(v.name)
            stored = next(r for t in s.trials if t.number == conf["trial"]
                          for r in s.runs(t) if r.get("seed") == median["seed"])
            kept = stored_for_boundary(stored)
            if kept is not None:  # the sweep kept its final parameters: no retraining
                predict, head, _, (xv, yv) = kept
                retrained = float(stored["metrics"].get(v.metric, math.nan))
                reused += 1
            else:
                predict, head, result, (xv, yv) = retrain_for_boundary(stored["spec"])
                retrained = result.metrics.get(v.metric, math.nan)
            xx, yy, p = boundary_grid(predict, head, xv)
            ax.contourf(xx, yy, p, levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.55)
            ax.contour(xx, yy, p, levels=[0.5], colors="k", linewidths=1.2)
            for cls, color in ((0, "#2166ac"), (1, "#b2182b")):
                m = yv == cls
                ax.scatter(xv[m, 0], xv[m, 1], s=9, color=color, edgecolor="white",
                           linewidth=0.3, label=f"class {cls}")
            title = (f"{factor}={conf[factor]}, " if factor else "") + \
                v.config_label(conf, (factor,) if factor else ())
            ax.set_title(f"{wrap(title, 44)}\nseed {int(median['seed'])}: "
                         f"{metric_label(v.metric)} {fmt_score(retrained, v.metric)}", fontsize=9)
            ax.set_xlabel("x₀")
            ax.set_ylabel("x₁")
            rows.append({"study": v.name, "trial": conf["trial"], "seed": median["seed"],
                         "config": title, "stored_metric": median[v.metric],
                         "retrained_metric": retrained})
        facets[0][0].legend(fontsize=7, loc="lower right", framealpha=0.8)
    fig.suptitle(wrap(f"{v.label}: decision boundary of the best model"
                       + (f" per {factor}" if factor else ""), 48 * len(best)), fontsize=10)
    key = f"boundary_{slug(v.name)}"
    png, files = save(fig, ctx.folder, key, svg=ctx.svg)
    table = pd.DataFrame(rows)
    same = bool(np.allclose(table["stored_metric"], table["retrained_metric"], atol=1e-6))
    if reused == len(rows):
        caption = ("Shading: predicted probability of class 1 (black line: 0.5, the decision "
                   "boundary); dots: the validation set. Each panel is the seed with the median "
                   "score of the best configuration, drawn from the final parameters the sweep "
                   "kept with it (no retraining).")
    else:
        caption = ("Shading: predicted probability of class 1 (black line: 0.5, the decision "
                   "boundary); dots: the validation set. Each panel retrains the seed with the "
                   "median score of the best configuration, deterministically (the sweep kept "
                   "no parameters for it); the retrained "
                   + ("score equals the stored one." if same else
                      "score differs slightly from the stored one (another engine or device "
                      "ran the sweep)."))
    return Chart(key, f"boundary: {v.name}", f"{v.name}: {question[0].lower()}"
                 f"{question[1:]}", caption, png, files, ctx.write_table(table, key))

