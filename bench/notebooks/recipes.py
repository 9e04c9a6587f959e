"""The notebooks' experiments as named recipes, each carrying the figure its notebook reports.

A recipe is a RunSpec plus what the notebook printed and how to compare with it. Notebooks mostly
report training accuracy (000 even a running accuracy accumulated during the last epoch), so the
comparison uses the same quantity where one exists; `note` explains known differences.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.catalog.names import lookup
from bench.spec import RunSpec


@dataclass(frozen=True)
class Recipe:
    """A notebook experiment: its RunSpec and the figure the notebook reports."""

    name: str
    notebook: str
    description: str
    spec: RunSpec
    metric: str  # which RunResult quantity the figure is compared with
    figure: float | None  # None where the notebook printed no number
    figure_text: str  # what the notebook shows, in words
    expect: str = "match"  # "match", or "stuck" (training stalls at chance, as notebook 002's lr=500)
    note: str = ""  # known differences between the notebook's measurement and ours
    fallback_tasks: tuple[str, ...] = ()  # tasks to use when the recipe's data files are absent


_SINE = {"task": "sine", "model": "sigmoid_mlp_10", "loss": "bce", "init": "normal",
         "dtype": "float64"}

RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in [
        Recipe(
            "moons_bn_mlp", "000", "two moons, BatchNorm MLP, MSE, SGD lr 0.1 momentum 0.9",
            RunSpec(task="moons", model="bn_mlp_20x3", loss="mse", optimizer="sgd", lr=0.1,
                    momentum=0.9, batch_size=100, epochs=10, shuffle=False),
            "train_accuracy", 0.998, "epoch 10 running training accuracy 0.998 (loss 0.00133)",
            note="the notebook reports accuracy accumulated over the last epoch while training; "
                 "nnbench evaluates the final model on the whole training set"),
        Recipe(
            "regression_linear", "001", "linear regression by full-batch GD, lr 0.01, 500 epochs",
            RunSpec(task="regression", model="linear", loss="mse", optimizer="sgd", lr=0.01,
                    batch_size=None, epochs=500),
            "train_mse", None, "no output printed; the training MSE can only fall to the noise "
            "variance of the sample (1.0 in expectation)"),
        Recipe(
            "moons_logistic", "001", "logistic regression on 200 moons, BCE, GD lr 0.5, 1000 epochs",
            RunSpec(task="moons", n_samples=200, model="logistic", loss="bce", optimizer="sgd",
                    lr=0.5, batch_size=None, epochs=1000),
            "train_accuracy", None, "no output printed; a linear decision boundary is shown"),
        Recipe(
            "moons_relu500", "001", "2-500-500-1 ReLU on 200 moons, BCE, SGD lr 0.5, wd 1e-2",
            RunSpec(task="moons", n_samples=200, model="relu_mlp_500x2", loss="bce",
                    optimizer="sgd", lr=0.5, weight_decay=1e-2, batch_size=50, epochs=1000),
            "train_accuracy", None, "no output printed; a clean non-linear boundary is shown",
            note="the notebook zeroes gradients once per epoch, so its 4 mini-batch gradients "
                 "accumulate; nnbench zeroes them every step"),
        Recipe(
            "mnist_sigmoid_lr0.1", "002", "784-16-16-10 sigmoid, MSE on one-hot, full-batch GD 0.1",
            RunSpec(task="mnist", model="sigmoid_mlp_16x2", loss="mse", optimizer="sgd", lr=0.1,
                    batch_size=None, epochs=11),
            "final_train_loss", 0.2551, "training MSE falls steadily, 0.2792 -> 0.2551 after 11 "
            "full-batch steps",
            note="the notebook trains on all 60,000 images; nnbench holds 10,000 out for "
                 "validation", fallback_tasks=("fashion_mnist",)),
        Recipe(
            "mnist_sigmoid_lr500", "002", "the same network with lr=500: stuck after one step",
            RunSpec(task="mnist", model="sigmoid_mlp_16x2", loss="mse", optimizer="sgd", lr=500.0,
                    batch_size=None, epochs=10),
            "final_train_loss", 0.1000, "loss 0.2877 then stuck at 0.1000 (sigmoids saturated)",
            expect="stuck", fallback_tasks=("fashion_mnist",)),
        Recipe(
            "linear_relu_2_5_2", "003", "x - y < 0.3 boundary, 2-5-2 ReLU/sigmoid, MSE, GD lr 1",
            RunSpec(task="linear", model="relu_mlp_5", loss="mse", optimizer="sgd", lr=1.0,
                    batch_size=None, epochs=500),
            "train_accuracy", 0.99, "correct predicted 0.99 on the training data"),
        Recipe(
            "circle_tanh_2_4_1", "003", "circle of radius 0.4, 2-4-1 tanh, MSE on +-1, SGD lr 0.05",
            RunSpec(task="circle", model="tanh_mlp_4", loss="mse", optimizer="sgd", lr=0.05,
                    batch_size=10, epochs=500, shuffle=False),
            "train_accuracy", 0.974, "correct predicted 0.974 on the training data"),
        Recipe(
            "sine_gd", "004", "sine boundary, 2-10-1 sigmoid, BCE, full-batch GD lr 5, 1001 steps",
            RunSpec(**_SINE, optimizer="sgd", lr=5.0, batch_size=None, epochs=1001),
            "train_accuracy", 0.989, "training accuracy 0.989 after 1001 iterations"),
        Recipe(
            "sine_adam", "004", "same network, Adam lr 1, full batch, 1001 steps",
            RunSpec(**_SINE, optimizer="adam", lr=1.0, batch_size=None, epochs=1001),
            "train_accuracy", 1.0, "training accuracy 1.0 after 1001 iterations"),
        Recipe(
            "sine_adam_minibatch", "004", "Adam lr 1, mini-batches of 32, 250 epochs",
            RunSpec(**_SINE, optimizer="adam", lr=1.0, batch_size=32, epochs=250),
            "train_accuracy", 0.95, "training accuracy 0.95 after 250 epochs",
            note="Adam at lr 1 on mini-batches is noisy: the final accuracy swings from seed to "
                 "seed"),
        Recipe(
            "sine_adam_l1", "004", "Adam lr 0.1, batch 32, 50 epochs, L1 lambda 1e-5",
            RunSpec(**_SINE, optimizer="adam", lr=0.1, batch_size=32, epochs=50, l1=1e-5),
            "train_accuracy", 0.99, "training accuracy 0.99 after 50 epochs"),
        Recipe(
            "sine_linear_layers", "004", "nn.Linear default init, Adam lr 1, batch 128, 200 epochs",
            RunSpec(task="sine", model="sigmoid_mlp_10", loss="bce", init="default",
                    dtype="float64", optimizer="adam", lr=1.0, batch_size=128, epochs=200),
            "train_accuracy", 0.99, "training accuracy 0.99 after 200 epochs",
            note="the notebook adds its L1 term with .item(), a constant with no gradient, so "
                 "nnbench runs it without L1"),
        Recipe(
            "sine_xavier", "004", "Xavier-uniform init, Adam lr 0.1, batch 32, 50 epochs, L1 1e-5",
            RunSpec(task="sine", model="sigmoid_mlp_10", loss="bce", init="xavier_uniform",
                    dtype="float64", optimizer="adam", lr=0.1, batch_size=32, epochs=50, l1=1e-5),
            "train_accuracy", None, "defined but not run in the notebook",
            note="the notebook also draws biases with xavier_uniform; nnbench starts them at 0"),
    ]
}


def recipes() -> dict[str, Recipe]:
    """All notebook recipes by name."""
    return RECIPES


def get_recipe(name: str) -> Recipe:
    """The recipe called `name`, or a UsageError listing the recipes."""
    return lookup("recipe", RECIPES, name)
