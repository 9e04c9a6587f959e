"""Charts laid out in fixed inches keep every label, title and legend inside the figure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from bench.report import history, tables
from bench.report.figures import Context


def _plain_study(url: str, name: str, n: int, params: tuple[str, ...]) -> None:
    """A plain Optuna study (values only): completed, pruned and failed trials."""
    study = optuna.create_study(storage=url, study_name=name,
                                sampler=optuna.samplers.RandomSampler(0))
    for i in range(n):
        trial = study.ask()
        values = [trial.suggest_float(p, 1e-3, 1.0, log=True) for p in params]
        if i % 10 == 3:
            trial.report(sum(values) + 0.5, 3)
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        elif i % 10 == 7:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, sum(values))


def _inside(fig: Any, box: Any) -> bool:
    page = fig.bbox
    return (box.x0 >= page.x0 - 1 and box.y0 >= page.y0 - 1 and box.x1 <= page.x1 + 1
            and box.y1 <= page.y1 + 1)


@pytest.mark.parametrize("n, params", [
    (30, ("lr", "momentum")),  # few trials, short names: one legend row
    (60, ("learning_rate_of_the_optimizer", "weight_decay")),  # binned, two rows, long names
    (1, ("lr",)),  # no importances: their reason instead of bars
])
def test_history_layout_keeps_everything_inside(tmp_path: Path, monkeypatch: Any, n: int,
                                                params: tuple[str, ...]) -> None:
    url = f"sqlite:///{tmp_path / 'o.db'}"
    monkeypatch.setattr(history, "MAX_POINTS", 40)  # bins from 41 completed trials on
    _plain_study(url, "a_rather_long_study_name", n, params)
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
    names = ax_i.yaxis.get_tightbbox(renderer)
    assert ax_h.get_window_extent(renderer).x1 < (names.x0 if names is not None
                                                  else ax_i.get_window_extent(renderer).x0)
    if n > history.MAX_POINTS:
        assert len(ax_h.get_title().splitlines()) == 2
        assert len(legend.texts) > history.LEGEND_COLUMNS  # two rows
