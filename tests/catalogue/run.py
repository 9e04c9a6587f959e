"""Catalogue rows for `bench run`: values that are not numbers a run can use, architecture flags a
fixed model lacks, and requests too large to run. Each fails before anything trains.
"""

from __future__ import annotations

from tests.catalogue import Case


def run(case: str, stderr: str, *argv: str) -> Case:
    """`bench run ARGV`: exit 2 with one line matching `stderr`. ARGV without a recipe or --task
    gets `--task moons` first (a bare `bench run` is itself an error: tests/catalogue/cli.py)."""
    if "--task" not in argv and (not argv or argv[0].startswith("-")):
        argv = ("--task", "moons", *argv)
    return Case(f"run-{case}", ("run", *argv), 2, stderr=stderr)


CASES = [
    # a setting the optimizer ignores: no record may show it
    run("momentum-with-adam", r"momentum 0\.9 has no effect with optimizer 'adam' \(it reads lr, "
        r"betas, eps, weight_decay\); drop momentum", "--optimizer", "adam", "--momentum", "0.9"),
    run("betas-with-sgd", r"betas 0\.8,0\.99 has no effect with optimizer 'sgd'", "--betas",
        "0.8,0.99"),
    run("lr-1e300", r"lr 1e\+300 is too large for float32 arithmetic \(at most 3\.4e\+30\)",
        "--lr", "1e300"),
    run("seed-given-twice", r"--seeds '0,1,0' names seed 0 more than once", "--seeds", "0,1,0"),
    run("lr-inf", r"lr must be a positive number, got inf", "--lr", "inf"),
    run("lr-nan", r"lr must be a positive number, got nan", "--lr", "nan"),
    run("weight-decay-1e40", r"weight_decay 1e\+40 is too large for float32", "--weight-decay",
        "1e40"),
    run("momentum-nan", r"momentum must be >= 0, got nan", "--momentum", "nan"),
    run("data-seed-negative", r"data_seed must be an integer from 0 to 4294967295, got -1",
        "--data-seed=-1"),
    run("data-seed-2pow32", r"data_seed must be an integer from 0 to 4294967295",
        "--data-seed", "4294967296"),
    run("target-nan", r"target must be a finite number, got nan", "--target", "nan"),
    run("target-inf", r"target must be a finite number, got inf", "--target", "inf"),
    run("target-minus-inf", r"target must be a finite number, got -inf", "--target=-inf"),
    run("betas-nan", r"betas must be two numbers in \[0, 1\)", "--betas", "nan,0.999"),
    run("init-scale-nan", r"init_scale must be a positive number, got nan", "--init-scale",
        "nan"),
    run("epochs-zero", r"epochs must be a positive number, got 0", "--epochs", "0"),
    run("epochs-float", r"argument --epochs: invalid int value", "--epochs", "3.5"),
    run("hidden-float", r"bad --hidden '8\.5'", "--hidden", "8.5"),
    run("n-samples-five", r"n_samples must be at least 10", "--n-samples", "5"),
    run("seeds-billion", r"--seeds '0-1000000000' asks for 1,000,000,001 runs, above 100,000",
        "--seeds", "0-1000000000"),
    run("seeds-negative", r"bad --seeds '-1'; seeds are integers from 0 to 4294967295",
        "--seeds=-1"),
    run("seeds-2pow40", r"seeds are integers from 0 to 4294967295", "--seeds", "1099511627776"),
    run("fixed-model-hidden", r"hidden 4 applies to --model mlp only: model 'relu_mlp_5' has a "
        r"fixed architecture", "--model", "relu_mlp_5", "--task", "linear", "--hidden", "4"),
    run("fixed-model-activation", r"activation tanh applies to --model mlp only",
        "--model", "sigmoid_mlp_10", "--task", "sine", "--activation", "tanh"),
    run("fixed-model-batch-norm", r"batch_norm true applies to --model mlp only",
        "--model", "relu_mlp_5", "--task", "linear", "--batch-norm"),
    run("recipe-fixed-model-hidden", r"hidden 8 applies to --model mlp only",
        "linear_relu_2_5_2", "--hidden", "8"),
    run("n-samples-billion", r"bench run needs an estimated [\d.]+ GB of memory .*this machine "
        r"has [\d.]+ GB", "--n-samples", "1000000000"),
    run("hidden-100000x2", r"needs an estimated [\d.]+ GB of memory \(model [\d.]+ GB.*use "
        r"smaller hidden sizes", "--hidden", "100000,100000"),
    run("epochs-billion", r"needs an estimated [\d.]+ GB of memory", "--epochs", "1000000000"),
    run("long-work", r"bench run is estimated at 2\.00e7 optimizer steps in one run .*above the "
        r"bound of 1\.00e7.*--no-limits if it is meant", "--task", "linear", "--epochs",
        "20000000"),
    run("no-limits-still-refuses-memory", r"needs an estimated [\d.]+ GB of memory",
        "--no-limits", "--hidden", "100000,100000"),
]
