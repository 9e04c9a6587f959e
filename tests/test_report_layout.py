"""Charts laid out in fixed inches keep every label, title and legend inside the figure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from bench.report import history, tables
from bench.report.figures import Context


def _plain_study(url: str, name: str, n: int, params: tuple[str, ...],
                 value: Any = sum) -> None:
    """A plain Optuna study (values only): completed, pruned and failed trials."""
    study = optuna.create_study(storage=url, study_name=name,
                                sampler=optuna.samplers.RandomSampler(0))
    for i in range(n):
        trial = study.ask()
        values = [trial.suggest_float(p, 1e-3, 1.0, log=True) for p in params]
        if i % 10 == 3:
            trial.report(value(values) * 1.1, 3)
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        elif i % 10 == 7:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, value(values))


def _tight(values: list[float]) -> float:  # wide tick labels: -0.0030, -0.0025, ...
    return -0.003 + 0.002 * values[0]


def _inside(fig: Any, box: Any) -> bool:
    page = fig.bbox
    return (box.x0 >= page.x0 - 1 and box.y0 >= page.y0 - 1 and box.x1 <= page.x1 + 1
            and box.y1 <= page.y1 + 1)


@pytest.mark.parametrize("n, params, value", [
    (30, ("lr", "momentum"), sum),  # few trials, short names: one legend row
    (60, ("learning_rate_of_the_optimizer", "weight_decay"), sum),  # binned, long names
    (1, ("lr",), sum),  # no importances: their reason instead of bars
    (30, ("lr", "momentum"), _tight),  # wide y tick labels
    (30, ("x" * 130, "lr"), sum),  # a parameter name longer than the panel
])
def test_history_layout_keeps_everything_inside(tmp_path: Path, monkeypatch: Any, n: int,
                                                params: tuple[str, ...], value: Any) -> None:
    url = f"sqlite:///{tmp_path / 'o.db'}"
    monkeypatch.setattr(history, "MAX_POINTS", 40)  # bins from 41 completed trials on
    monkeypatch.setattr(history, "MAX_MARKS", 2)  # long legend labels: "(2 of 6 drawn)"
    _plain_study(url, "a_rather_long_study_name", n, params, value)
    studies = tables.load_studies(url, [])
    figs: list[Any] = []
    monkeypatch.setattr(history, "save", lambda fig, *a, **k: (figs.append(fig), (b"", []))[1])
    ctx = Context([], studies, tables.curves_table(studies), tables.timing_table([])[0],
                  tmp_path, False, False)
    history.chart_history(ctx)
    (fig,) = figs
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    ax_h, ax_i = fig.axes
    legend = ax_h.get_legend()
    assert legend is not None
    # each panel with what is drawn around it (tick labels, axis labels, title, the history's
    # legend, the importances' reason when there are none) lies inside the figure
    for ax in (ax_h, ax_i):
        assert _inside(fig, ax.get_tightbbox(renderer)), ax.get_title()
    # the legend below the history's x label; the history left of the parameter names
    assert legend.get_window_extent(renderer).y1 <= ax_h.xaxis.label.get_window_extent(
        renderer).y0 + 1
    frames = [ax.get_window_extent(renderer) for ax in (ax_h, ax_i)]
    assert all(f.width > 100 and f.height > 100 for f in frames)  # panels of a readable size
    names = ax_i.yaxis.get_tightbbox(renderer)
    assert ax_h.get_window_extent(renderer).x1 < (names.x0 if names is not None
                                                  else ax_i.get_window_extent(renderer).x0)
    if n > history.MAX_POINTS:
        assert len(ax_h.get_title().splitlines()) == 2
        assert len(legend.texts) > history.LEGEND_COLUMNS  # two rows
