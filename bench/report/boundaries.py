"""Decision boundaries: the best model per optimizer (or loss) of each study on a 2-D
classification task, retrained deterministically from its stored spec and seed, its predicted
probability shaded over the plane with the validation set on top (as the notebooks draw it).

Retraining needs torch and the reference engine; they are imported only when a boundary is
drawn, so `bench report --no-boundaries` never loads torch (about 2 s).
"""

from __future__ import annotations

import math
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


def retrain_for_boundary(run_spec: dict[str, Any]) -> tuple[Any, Any, Any, Any]:
    """Retrain one stored run deterministically; return (model, head, RunResult, TaskData).

    Same spec and seed give identical weights with the reference engine, so the boundary drawn
    is the one of the stored run (up to engine and device rounding). Runs stored for CUDA are
    retrained on the CPU where CUDA is absent.
    """
    import torch  # torch-backed modules: only when a boundary is drawn

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
    return model, plan.head, result, data


def stored_for_boundary(run: dict[str, Any]) -> tuple[Any, Any, float, Any] | None:
    """The model of a stored run from the final parameters the sweep kept with it, with its
    head, its stored score for the caption and the task data; None when none were kept."""
    if not isinstance(run.get("final_params"), dict):
        return None
    from bench.engines.setup import build_model, load_data, plan_run
    from bench.results import decode_params

    spec = RunSpec.from_dict(run["spec"]).replace(device="cpu")
    data = load_data(spec, "cpu")
    plan = plan_run(spec, data.n_train)
    model = build_model(spec, plan)  # a layer list or a model given as code (a plugin's)
    model.load_state_dict(decode_params(run["final_params"]))
    return model, plan.head, run, data


def boundary_grid(model: Any, head: Any, x: np.ndarray, steps: int = 200
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """P(class 1) of `model` on a grid spanning the data with a 10% margin."""
    import torch  # torch-backed modules: only when a boundary is drawn

    from bench.engines.setup import predict

    lo, hi = x.min(axis=0), x.max(axis=0)
    pad = 0.1 * (hi - lo)
    g0 = np.linspace(lo[0] - pad[0], hi[0] + pad[0], steps)
    g1 = np.linspace(lo[1] - pad[1], hi[1] + pad[1], steps)
    xx, yy = np.meshgrid(g0, g1)
    dtype = next(model.parameters()).dtype
    pts = torch.tensor(np.c_[xx.ravel(), yy.ravel()], dtype=dtype)
    out = predict(model, pts, head).numpy()
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
                model, head, _, data = kept
                retrained = float(stored["metrics"].get(v.metric, math.nan))
                reused += 1
            else:
                model, head, result, data = retrain_for_boundary(stored["spec"])
                retrained = result.metrics.get(v.metric, math.nan)
            xv = data.x_val.numpy()
            yv = data.y_val.numpy()
            xx, yy, p = boundary_grid(model, head, xv)
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

