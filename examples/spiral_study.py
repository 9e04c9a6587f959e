"""Run the spiral plugin study from Python and draw what it found (the Python API example).

    .venv/bin/python examples/spiral_study.py --out results/examples

1. `bench.sweep` runs examples/spiral.toml (its plugin, examples/spiral_plugin.py, registers
   the `spiral` task and the `tanh_net` model) and returns the Optuna study;
2. `bench.load_runs` reads every trial x seed back as one tidy DataFrame;
3. `bench.run` retrains the best setting over more seeds, and `bench.curves` unfolds its
   per-epoch curves;
4. seaborn draws both to OUT/spiral_lr.png and OUT/spiral_curves.png.
The same lines work in a Jupyter cell.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import bench

HERE = Path(__file__).resolve().parent


def main(out: Path, storage: Path, trials: int | None = None, seeds: int = 5) -> list[Path]:
    """Sweep, read back, retrain the best and plot; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no window
    import matplotlib.pyplot as plt
    import seaborn as sns

    storage.parent.mkdir(parents=True, exist_ok=True)
    study = bench.sweep(HERE / "spiral.toml", storage=str(storage), trials=trials)
    runs = bench.load_runs(str(storage))
    runs = runs[(runs["study"] == study.study_name) & (runs["state"] == "COMPLETE")]

    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    sns.scatterplot(data=runs, x="lr", y="val_accuracy", hue="optimizer", ax=ax)
    ax.set_xscale("log")
    ax.set_title("spiral / tanh_net: validation accuracy per seed")
    lr_png = out / "spiral_lr.png"
    fig.savefig(lr_png, dpi=100, bbox_inches="tight")
    plt.close(fig)

    best = study.best_trial.params  # optimizer and lr of the best trial (mean over seeds)
    df = bench.run(task="spiral", model="tanh_net", seeds=seeds, loss="bce", batch_size=64,
                   epochs=int(runs["epochs"].iloc[0]), **best)
    curves = bench.curves(df)
    fig, ax = plt.subplots(figsize=(6, 4))
    sns.lineplot(data=curves[curves["curve"].isin(["train_loss", "val_loss"])], x="epoch",
                 y="value", hue="curve", errorbar=("pi", 100), ax=ax)
    ax.set_title(f"best setting {best}, {seeds} seeds (band: min to max)")
    curves_png = out / "spiral_curves.png"
    fig.savefig(curves_png, dpi=100, bbox_inches="tight")
    plt.close(fig)
    print(f"best trial {study.best_trial.number}: {best}, val_accuracy "
          f"{study.best_value:.3f}; retrained over {seeds} seeds: test_accuracy mean "
          f"{df['test_accuracy'].mean():.3f}; wrote {lr_png} and {curves_png}")
    return [lr_png, curves_png]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/examples"))
    parser.add_argument("--storage", type=Path, default=Path("results/examples/spiral.journal"))
    parser.add_argument("--trials", type=int, default=None)
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    main(args.out, args.storage, args.trials, args.seeds)
