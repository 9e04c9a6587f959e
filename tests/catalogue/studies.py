"""Catalogue rows for study files (`bench sweep STUDY.toml`): records that would be wrong, values
of the wrong type, contradictions, encodings, and requests too large to run. Every case is a
usage error found while the file is parsed, so no storage is ever created (`absent`).
"""

from __future__ import annotations

from tests.catalogue import Case

STORAGE = "x.journal"


def toml(top: str = "", fixed: str = "", space: str = "", *, task: str = "moons",
         model: str = "mlp") -> str:
    """A small valid study with lines added to its top level, [fixed] and [space]."""
    return (f'task = "{task}"\nmodel = "{model}"\ntrials = 2\nseeds = 1\n{top}\n'
            f"[fixed]\nn_samples = 100\nepochs = 1\n{fixed}\n[space]\n{space}\n")


def study(case: str, text: str | bytes, stderr: str) -> Case:
    """`bench sweep s.toml` on `text`: exit 2, one line matching `stderr`, no storage made."""
    return Case(f"study-{case}", ("sweep", "s.toml", "--storage", STORAGE, "--quiet"), 2,
                stderr=stderr, files={"s.toml": text}, absent=(STORAGE,))


FIVE = {"task": "linear", "model": "relu_mlp_5"}

CASES = [
    # --- records that would be wrong: a fixed model's layers are its own -----------------------
    study("fixed-model-hidden", toml(fixed="hidden = [8]", **FIVE),
          r"fixed\.hidden: hidden 8 applies to --model mlp only: model 'relu_mlp_5' has a fixed "
          r"architecture \(hidden 5, relu, no batch norm\)"),
    study("fixed-model-activation-choice",
          toml(space='activation = ["relu", "tanh"]', task="sine", model="sigmoid_mlp_10"),
          r"space\.activation: activation relu applies to --model mlp only"),
    study("fixed-model-batch-norm", toml(fixed="batch_norm = true", **FIVE),
          r"fixed\.batch_norm: batch_norm true applies to --model mlp only"),
    study("fixed-model-hidden-choices", toml(space="hidden = [[5], [8]]", **FIVE),
          r"space\.hidden: hidden 8 applies"),
    # --- types exactly as RunSpec needs them -------------------------------------------------
    study("hidden-float", toml(fixed="hidden = [8.5]"),
          r"fixed\.hidden: must be a list of integers, got \[8\.5\]"),
    study("hidden-bool", toml(fixed="hidden = [true]"), r"fixed\.hidden: .*list of integers"),
    study("hidden-string", toml(fixed='hidden = "20,20"'), r"fixed\.hidden: .*list of integers"),
    study("hidden-float-choice", toml(space="hidden = [[8], [8.5]]"),
          r"space\.hidden: must be a list of integers"),
    study("epochs-true", toml(fixed="epochs = true").replace("epochs = 1\n", "", 1),
          r"fixed\.epochs: must be an integer, got True"),
    study("epochs-float", toml(fixed="epochs = 3.0").replace("epochs = 1\n", "", 1),
          r"fixed\.epochs: must be an integer, got 3\.0"),
    study("epochs-list", toml(fixed="epochs = [3]").replace("epochs = 1\n", "", 1),
          r"fixed\.epochs: a list is only valid for hidden, betas"),
    study("batch-size-float-choice", toml(space='batch_size = [32, 50.5, "full"]'),
          r"space\.batch_size: must be an integer or \"full\", got 50\.5"),
    study("batch-size-bool", toml(fixed="batch_size = true"),
          r"fixed\.batch_size: must be an integer or \"full\", got True"),
    study("batch-size-word", toml(fixed='batch_size = "all"'),
          r"fixed\.batch_size: must be an integer or \"full\", got 'all'"),
    # --- a name every summary and chart title shows on one line ---------------------------------
    study("name-with-a-newline", toml(top='name = "moons\\nrun"'),
          r"name: 'moons\\nrun' holds a newline, tab or other control character \(U\+000A\); use "
          r"a name on one line"),
    # --- a batch size no trial can take: refused before the storage exists --------------------
    study("batch-size-above-train", toml(fixed="batch_size = 5000"),
          r"fixed\.batch_size: 5000 is above the training set of moons \(\d+ examples\), so no "
          r"trial could run; use a batch_size of \d+ or less"),
    study("batch-size-choices-above-train", toml(space="batch_size = [5000, 4000]"),
          r"space\.batch_size: 4000 is above the training set of moons"),
    study("batch-size-range-above-train",
          toml(space="batch_size = { low = 4000, high = 5000 }"),
          r"space\.batch_size: 4000 is above the training set of moons"),
    study("lr-string", toml(fixed='lr = "0.1"'), r"fixed\.lr: must be a number, got '0\.1'"),
    study("lr-bool-choice", toml(space="lr = [0.1, true]"), r"space\.lr: must be a number, got True"),
    study("shuffle-int", toml(fixed="shuffle = 1"), r"fixed\.shuffle: .*true or false"),
    study("loss-number", toml(fixed="loss = 2"), r"fixed\.loss: must be a string, got 2"),
    study("betas-one-number", toml(fixed="betas = [0.9]"),
          r"fixed\.betas: must be a list of 2 numbers"),
    study("epochs-range-float-step", toml(space="epochs = { low = 1, high = 3, step = 0.5 }")
          .replace("epochs = 1\n", "", 1), r"space\.epochs\.step: epochs is an integer field"),
    study("epochs-range-float-bound", toml(space="epochs = { low = 1.5, high = 3 }")
          .replace("epochs = 1\n", "", 1), r"space\.epochs\.low: epochs is an integer field"),
    study("lr-range-nan", toml(space="lr = { low = nan, high = 1.0 }"),
          r"space\.lr\.low: must be a number, got nan"),
    study("lr-range-inf", toml(space="lr = { low = 0.1, high = inf }"),
          r"space\.lr\.high: must be a number, got inf"),
    study("lr-inf", toml(fixed="lr = inf"), r"fixed: lr must be a positive number, got inf"),
    study("lr-1e300", toml(fixed="lr = 1e300"), r"lr 1e\+300 is too large for float32"),
    study("target-nan", toml(fixed="target = nan"), r"target must be a finite number"),
    study("momentum-negative", toml(fixed="momentum = -0.5"), r"momentum must be >= 0"),
    study("epochs-zero", toml(fixed="epochs = 0").replace("epochs = 1\n", "", 1),
          r"epochs must be a positive number, got 0"),
    study("n-samples-five", toml().replace("n_samples = 100", "n_samples = 5"),
          r"n_samples must be at least 10"),
    study("data-seed-negative", toml(fixed="data_seed = -1"),
          r"data_seed must be an integer from 0 to 4294967295, got -1"),
    study("fixed-seed", toml(fixed="seed = 3"), r"fixed\.seed: set task and model at the top"),
    study("space-task", toml(space='task = ["moons"]'), r"space\.task: 'task' cannot be searched"),
    study("fixed-not-a-table", 'task = "moons"\nfixed = 3\n', r"fixed: must be a table"),
    study("unknown-fixed-field", toml(fixed="learning_rate = 0.1"),
          r"fixed\.learning_rate: not a RunSpec field"),
    study("unknown-top-key", toml(top="repeats = 3"), r"repeats: unknown key"),
    study("task-number", "task = 3\n", r"task: must be a string, got 3"),
    study("seeds-float", toml().replace("seeds = 1", "seeds = 2.5"),
          r"seeds: must be an integer, got 2\.5"),
    study("seeds-negative", toml().replace("seeds = 1", "seeds = -3"),
          r"seeds: must be at least 1, got -3"),
    study("trials-bool", toml().replace("trials = 2", "trials = true"),
          r"trials: must be an integer, got True"),
    study("group-zero", toml(top="group = 0"), r"group: must be at least 1"),
    # --- directions against the metric -------------------------------------------------------
    study("direction-minimize-accuracy", toml(top='direction = "minimize"'),
          r"s\.toml: direction: 'minimize' contradicts val_accuracy, which is better higher "
          r"\('maximize'\).*direction_override = true"),
    study("direction-maximize-loss", toml(top='objective = "val_loss"\ndirection = "maximize"'),
          r"direction: 'maximize' contradicts val_loss"),
    study("direction-maximize-seconds",
          toml(top='objective = ["val_accuracy", "train_seconds"]\n'
                   'direction = ["maximize", "maximize"]'),
          r"direction: 'maximize' contradicts train_seconds"),
    study("direction-override-not-bool",
          toml(top='direction = "minimize"\ndirection_override = "yes"'),
          r"direction_override: must be true or false"),
    study("direction-wrong-count", toml(top='direction = ["maximize", "minimize"]'),
          r"direction: give one direction per objective"),
    # --- sampler seed, name, encoding --------------------------------------------------------
    study("sampler-seed-1e20", toml(top="sampler = { name = \"tpe\", seed = 100000000000000000000 }"),
          r"sampler\.seed: must be at most 4294967295"),
    study("sampler-seed-2pow32", toml(top="sampler = { name = \"random\", seed = 4294967296 }"),
          r"sampler\.seed: must be at most 4294967295"),
    study("sampler-seed-negative", toml(top="sampler = { name = \"tpe\", seed = -1 }"),
          r"sampler\.seed: must be at least 0"),
    study("name-600-characters", toml(top=f'name = "{"n" * 600}"'),
          r"name: must be 1 to 512 characters \(Optuna's limit for a study name\), got 600"),
    study("name-empty", toml(top='name = ""'), r"name: must be 1 to 512 characters"),
    study("not-utf8", toml(top='description = "caf\xe9"').encode("latin-1"),
          r"s\.toml: not UTF-8 text \(byte 0xe9 at offset \d+\); save the study file as UTF-8"),
    study("utf16", toml().encode("utf-16"), r"not UTF-8 text \(byte 0xff at offset 0\)"),
    # a BOM is accepted: the file is read, and its next mistake is the one reported
    study("bom-accepted", b"\xef\xbb\xbf" + toml().replace("seeds = 1", "seeds = 0").encode(),
          r"s\.toml: seeds: must be at least 1, got 0"),
    # --- hangs and memory: sized before anything is built ------------------------------------
    study("seeds-billion", toml().replace("seeds = 1", "seeds = 1000000000"),
          r"needs an estimated [\d.]+ GB of memory .*this machine has [\d.]+ GB"),
    study("trials-billion", toml().replace("trials = 2", "trials = 1000000000"),
          r"study 's' (needs an estimated|is estimated at)"),
    study("epochs-billion", toml().replace("epochs = 1", "epochs = 1000000000"),
          r"needs an estimated [\d.]+ GB of memory .*fewer epochs"),
    study("epochs-range-billion",
          toml(space="epochs = { low = 1, high = 1000000000 }").replace("epochs = 1\n", "", 1),
          r"needs an estimated [\d.]+ GB"),
    study("hidden-100000x2", toml(fixed="hidden = [100000, 100000]"),
          r"needs an estimated [\d.]+ GB of memory \(model [\d.]+ GB, 10,000,\d+,\d+ "
          r"parameters per model\), this machine has [\d.]+ GB; use smaller hidden sizes"),
    study("hidden-choice-100000x2", toml(space="hidden = [[8], [100000, 100000]]"),
          r"use smaller hidden sizes"),
    study("n-samples-billion", toml().replace("n_samples = 100", "n_samples = 1000000000"),
          r"needs an estimated [\d.]+ GB of memory"),
    study("long-work", toml().replace("epochs = 1", "epochs = 1000")
          .replace("trials = 2", "trials = 200").replace("n_samples = 100", "n_samples = 100000"),
          r"is estimated at [\d.e]+ training examples .*above the bound .*allow_long = true"),
    study("seeds-ten-pow-30", toml().replace("seeds = 1", f"seeds = {10**30}"),
          r"needs an estimated [\d.]+ GB of memory"),
    study("n-samples-range-billion",
          toml(space="n_samples = { low = 100, high = 1000000000 }")
          .replace("n_samples = 100\n", "", 1), r"needs an estimated [\d.]+ GB of memory"),
    study("lr-range-1e300", toml(space="lr = { low = 1e-3, high = 1e300, log = true }"),
          r"space: lr 1e\+300 is too large for float32 arithmetic .*\(with lr=1e\+300\)"),
    study("allow-long-not-bool", toml(top="allow_long = 1"), r"allow_long: must be true or false"),
    study("allow-long-still-refuses-memory",
          toml(top="allow_long = true", fixed="hidden = [100000, 100000]"),
          r"needs an estimated [\d.]+ GB of memory"),
    study("grid-ten-million-points",
          toml(top='sampler = "grid"', space="epochs = { low = 1, high = 10000000, step = 1 }")
          .replace("epochs = 1\n", "", 1),
          r"space: the grid has 10,000,000 points, above 1,000,000"),
    Case("study-no-limits-still-refuses-memory",
         ("sweep", "s.toml", "--storage", STORAGE, "--quiet", "--no-limits"), 2,
         stderr=r"needs an estimated [\d.]+ GB of memory",
         files={"s.toml": toml(fixed="hidden = [100000, 100000]")}, absent=(STORAGE,)),
    # --- conditional spaces: `when` names an earlier categorical parameter and its values -----
    study("when-unknown-parent",
          toml(space='optimizer = ["sgd", "adam"]\n'
                     'momentum = { low = 0.0, high = 0.9, when = { optimiser = "sgd" } }'),
          r"space\.momentum\.when\.optimiser: unknown parent: it must be a categorical parameter "
          r"listed earlier in \[space\] \(optimizer\)"),
    study("when-parent-listed-later",
          toml(space='momentum = { low = 0.0, high = 0.9, when = { optimizer = "sgd" } }\n'
                     'optimizer = ["sgd", "adam"]'),
          r"space\.momentum\.when\.optimizer: unknown parent:.*\(none yet\)"),
    study("when-parent-not-categorical",
          toml(space='lr = { low = 0.01, high = 0.1 }\n'
                     'momentum = { low = 0.0, high = 0.9, when = { lr = 0.05 } }'),
          r"space\.momentum\.when\.lr: unknown parent"),
    study("when-value-parent-cannot-take",
          toml(space='optimizer = ["sgd", "adam"]\n'
                     'momentum = { low = 0.0, high = 0.9, when = { optimizer = "sdg" } }'),
          r"space\.momentum\.when\.optimizer: 'sdg' is not one of optimizer's choices: sgd, adam"),
    study("when-value-of-wrong-type",
          toml(space='batch_size = [10, "full"]\n'
                     'lr = { low = 0.01, high = 0.1, when = { batch_size = 10.5 } }'),
          r"space\.lr\.when\.batch_size: 10\.5 is not one of batch_size's choices"),
    study("when-not-a-table",
          toml(space='optimizer = ["sgd", "adam"]\n'
                     'momentum = { low = 0.0, high = 0.9, when = "sgd" }'),
          r"space\.momentum\.when: must be a table \{ parent = value or \[values\] \}"),
    study("when-empty-values",
          toml(space='optimizer = ["sgd", "adam"]\n'
                     'momentum = { low = 0.0, high = 0.9, when = { optimizer = [] } }'),
          r"space\.momentum\.when\.optimizer: give at least one value"),
    study("when-with-grid-sampler",
          toml(top='sampler = "grid"',
               space='optimizer = ["sgd", "adam"]\n'
                     'momentum = { choices = [0.0, 0.9], when = { optimizer = "sgd" } }'),
          r"space\.momentum\.when: the grid sampler cannot search a conditional space"),
    study("when-unknown-key-beside-choices",
          toml(space='optimizer = ["sgd", "adam"]\n'
                     'momentum = { choices = [0.0, 0.9], if = { optimizer = "sgd" } }'),
          r"space\.momentum\.if: unknown key; valid keys: choices, when"),
    study("fixed-momentum-with-adam", toml(fixed='optimizer = "adam"\nmomentum = 0.9'),
          r"fixed: momentum 0\.9 has no effect with optimizer 'adam'"),
    study("space-momentum-for-every-optimizer",
          toml(space='optimizer = ["sgd", "adam"]\nmomentum = { low = 0.0, high = 0.9 }'),
          r"space: momentum 0\.9 has no effect with optimizer 'adam' .*when = \{ optimizer = "
          r"\[\"sgd\"\] \}"),
    # --- pruners: Optuna's five, their main settings validated against the study ---------------
    study("pruner-unknown", toml(top='pruner = "asha"'),
          r"pruner\.name: unknown value 'asha'; choose one of: none, median, percentile, "
          r"successive_halving, hyperband"),
    study("pruner-percentile-out-of-range", toml(top='pruner = { name = "percentile", '
                                                     'percentile = 100 }'),
          r"pruner\.percentile: must be a number between 0 and 100 \(exclusive\), got 100"),
    study("pruner-percentile-on-median", toml(top='pruner = { name = "median", percentile = 10 }'),
          r"pruner\.percentile: applies to the percentile pruner only, not 'median'"),
    study("pruner-min-resource-above-epochs",
          toml(top='pruner = { name = "successive_halving", min_resource = 5 }'),
          r"pruner\.min_resource: 5 is above the study's 1 epochs"),
    study("pruner-min-resource-on-median", toml(top='pruner = { name = "median", '
                                                    'min_resource = 1 }'),
          r"pruner\.min_resource: applies to successive_halving and hyperband only"),
    study("pruner-warmup-covers-every-epoch",
          toml(top='pruner = { name = "median", warmup_epochs = 1 }'),
          r"pruner\.warmup_epochs: 1 leaves no epoch of 1 to prune at; use fewer"),
    study("pruner-startup-trials-on-hyperband",
          toml(top='pruner = { name = "hyperband", startup_trials = 2 }'),
          r"pruner\.startup_trials: applies to median and percentile only, not 'hyperband'"),
    study("sampler-startup-trials-on-random",
          toml(top='sampler = { name = "random", startup_trials = 3 }'),
          r"sampler\.startup_trials: applies to tpe and cmaes only"),
    study("range-step-wider-than-the-range",
          toml(space="lr = { low = 0.01, high = 0.1, step = 1.0 }"),
          r"space\.lr\.step: 1\.0 does not divide high - low = 0\.09; set high = 0\.01"),
    # --- the command line's overrides are checked the same way -------------------------------
    Case("study-seeds-override-billion",
         ("sweep", "s.toml", "--storage", STORAGE, "--quiet", "--seeds", "1000000000"), 2,
         stderr=r"needs an estimated [\d.]+ GB of memory", files={"s.toml": toml()},
         absent=(STORAGE,)),
]
