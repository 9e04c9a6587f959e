"""Catalogue rows for data files as tasks (`--task PATH.csv|.npz`, `task = "PATH"` in a study)
and plugins (`--plugin`, `plugins = [...]`): files that are missing, unreadable, ragged, hold NaN
or inf or one class only, name a label column that does not exist; plugins that are missing,
fail to import or register a name that is taken. Each is one line, exit 2, nothing written.

Every row starts and ends with an empty plugin registry (a plugin loaded in-process stays
registered otherwise, and would show in later rows' `bench list`).
"""

from __future__ import annotations

from pathlib import Path

from tests.catalogue import Case

STORAGE = "x.journal"


def _reset(folder: Path | None = None) -> None:
    from bench.catalog.plugins import reset_for_tests

    del folder
    reset_for_tests()


def _csv(*rows: str, header: str = "a,b,label", filler: int = 12) -> str:
    """A small CSV: `rows` first, then `filler` valid rows of two classes."""
    good = [f"{i % 5},{(i * 3) % 7},{i % 2}" for i in range(filler)]
    return "\n".join([header, *rows, *good]) + "\n"


def run(case: str, stderr: str, *argv: str, files: dict[str, str | bytes] | None = None,
        setup=None) -> Case:
    """`bench run ARGV` in a folder holding `files`: exit 2, one line matching `stderr`."""
    def prepare(folder: Path) -> None:
        _reset()
        if setup is not None:
            setup(folder)

    return Case(f"datafile-{case}", ("run", *argv, "--epochs", "1"), 2, stderr=stderr,
                files=files or {}, setup=prepare, check=_reset)


def plugin(case: str, stderr: str, *argv: str, files: dict[str, str | bytes]) -> Case:
    """`bench ARGV` with plugin files: exit 2, one line matching `stderr`."""
    return Case(f"plugin-{case}", tuple(argv), 2, stderr=stderr, files=files, setup=_reset,
                check=_reset)


def study(case: str, text: str, stderr: str, files: dict[str, str | bytes] | None = None) -> Case:
    """`bench sweep s.toml`: exit 2, one line matching `stderr`, no storage made."""
    return Case(f"study-{case}", ("sweep", "s.toml", "--storage", STORAGE, "--quiet"), 2,
                stderr=stderr, files={"s.toml": text, **(files or {})}, absent=(STORAGE,),
                setup=_reset, check=_reset)


def _npz(name: str, **arrays: object) -> object:
    def setup(folder: Path) -> None:
        import numpy as np

        np.savez(folder / name, **{k: np.asarray(v) for k, v in arrays.items()})

    return setup


GOOD_PLUGIN = '''
import bench

@bench.register_task("ring_task")
def ring_task(data_seed):
    return [[float(i % 5), float(i % 3)] for i in range(30)], [i % 2 for i in range(30)]
'''

CASES = [
    # --- data files ----------------------------------------------------------------------------
    run("missing", r"data file .*missing\.csv not found; check the path", "--task", "missing.csv"),
    run("folder", r"data file .*folder\.csv is not a file", "--task", "folder.csv",
        setup=lambda folder: (folder / "folder.csv").mkdir()),
    run("unknown-extension", r"unknown data file extension '\.txt'; give a \.csv .* or \.npz",
        "--task", "data.txt", files={"data.txt": "a,label\n1,0\n"}),
    run("not-utf8", r"d\.csv: not UTF-8 text .*save the file as UTF-8 CSV", "--task", "d.csv",
        files={"d.csv": b"a,label\n\xff\xfe,1\n"}),
    run("empty", r"e\.csv: needs a header row and at least one data row", "--task", "e.csv",
        files={"e.csv": ""}),
    run("ragged", r"r\.csv: line 3 has 2 fields but the header has 3", "--task", "r.csv",
        files={"r.csv": _csv("1,2,0", "3,1")}),
    run("nan", r"n\.csv: x holds NaN or inf \(first at example 1\); remove or impute", "--task",
        "n.csv", files={"n.csv": _csv("1,2,0", "nan,1,1")}),
    run("inf", r"i\.csv: x holds NaN or inf", "--task", "i.csv",
        files={"i.csv": _csv("1,inf,0")}),
    run("label-nan", r"l\.csv: y holds NaN or inf", "--task", "l.csv",
        files={"l.csv": _csv("1,2,nan")}),
    run("text-feature", r"t\.csv: line 2, column 'a': 'red' is not a number", "--task", "t.csv",
        files={"t.csv": _csv("red,2,0")}),
    run("one-class", r"o\.csv: every label is 1: one class only; a classification task needs",
        "--task", "o.csv", files={"o.csv": "a,label\n" + "\n".join(f"{i},1" for i in range(20))}),
    run("rare-class", r"c\.csv: class 2 has 1 example\(s\); each class needs at least 3",
        "--task", "c.csv", files={"c.csv": _csv("1,1,2")}),
    run("label-column-missing", r"p\.csv: no column 'price'; its columns are a, b, label",
        "--task", "p.csv", "--label-column", "price", files={"p.csv": _csv()}),
    run("label-column-on-a-name", r"--label-column and --task-kind apply to a data file task",
        "--task", "moons", "--label-column", "y"),
    run("binary-with-three-classes", r"k\.csv: 3 classes cannot be a binary task; use "
        r"--task-kind multiclass", "--task", "k.csv", "--task-kind", "binary",
        files={"k.csv": "a,label\n" + "\n".join(f"{i},{i % 3}" for i in range(30))}),
    run("floats-as-classes", r"f\.npz: the labels are not whole numbers, so they cannot be "
        r"classes; use --task-kind regression", "--task", "f.npz", "--task-kind", "multiclass",
        setup=_npz("f.npz", x=[[i, i * 2] for i in range(20)], y=[i / 3 for i in range(20)])),
    run("npz-without-y", r"noy\.npz: no array y; an \.npz task holds arrays x \[N, \.\.\.\] and "
        r"y \[N\] \(found: x\)", "--task", "noy.npz", setup=_npz("noy.npz", x=[[1.0]] * 20)),
    run("npz-corrupt", r"bad\.npz: cannot read it as \.npz", "--task", "bad.npz",
        files={"bad.npz": b"PK\x03\x04 not really a zip"}),
    run("npz-rows-differ", r"len\.npz: x has 20 rows but y has 19 labels", "--task", "len.npz",
        setup=_npz("len.npz", x=[[i] for i in range(20)], y=[i % 2 for i in range(19)])),
    run("image-shaped-with-mlp", r"model 'mlp' takes flat inputs, but task 'img' has examples "
        r"shaped 1x2x2", "--task", "img.npz", "--loss", "ce",
        setup=_npz("img.npz", x=[[[[i, 1], [2, 3]]] for i in range(30)], y=[i % 3 for i in
                                                                             range(30)])),
    run("n-samples", r"n_samples applies to synthetic tasks only", "--task", "p.csv",
        "--n-samples", "50", files={"p.csv": _csv()}),
    # --- plugins ------------------------------------------------------------------------------
    plugin("missing-file", r"plugin .*nope\.py not found; give a path to a \.py file or an "
           r"importable module name", "list", "--plugin", "nope.py", files={}),
    plugin("missing-module", r"plugin module 'no_such_nnbench_plugin' not found; install it",
           "list", "--plugin", "no_such_nnbench_plugin", files={}),
    plugin("import-error", r"plugin .*imports\.py failed to import: ModuleNotFoundError: No "
           r"module named 'not_installed_anywhere'", "list", "--plugin", "imports.py",
           files={"imports.py": "import not_installed_anywhere\n"}),
    plugin("syntax-error", r"plugin .*syntax\.py failed to import: SyntaxError: ", "run",
           "--task", "moons", "--plugin", "syntax.py", files={"syntax.py": "def broken(:\n"}),
    plugin("raises", r"plugin .*raises\.py failed to import: ValueError: no config", "list",
           "--plugin", "raises.py", files={"raises.py": "raise ValueError('no config')\n"}),
    plugin("clash-built-in", r"plugin .*clash\.py registers model 'mlp', which is a built-in "
           r"model; rename it in the plugin", "list", "--plugin", "clash.py",
           files={"clash.py": "import bench\n\n@bench.register_model('mlp')\n"
                              "def mlp(shape, n):\n    raise AssertionError\n"}),
    plugin("clash-two-plugins", r"plugin .*b\.py registers task 'ring_task', already registered "
           r"by plugin .*a\.py; rename one of them", "list", "--plugin", "a.py", "--plugin",
           "b.py", files={"a.py": GOOD_PLUGIN, "b.py": GOOD_PLUGIN}),
    plugin("task-data-nan", r"task 'nan_task' \(plugin .*nan\.py\): x holds NaN or inf", "run",
           "--plugin", "nan.py", "--task", "nan_task",
           files={"nan.py": "import bench\n\n@bench.register_task('nan_task')\n"
                            "def nan_task(seed):\n"
                            "    return [[float('nan')]] * 20, [0, 1] * 10\n"}),
    # --- studies -------------------------------------------------------------------------------
    study("plugin-import-error", 'plugins = ["broken.py"]\ntask = "moons"\n',
          r"s\.toml: plugins: plugin .*broken\.py failed to import: ZeroDivisionError",
          files={"broken.py": "1 / 0\n"}),
    study("plugins-not-a-list", 'plugins = "p.py"\ntask = "moons"\n',
          r"s\.toml: plugins: must be a list of \.py paths or module names"),
    study("task-file-missing", 'task = "data/none.csv"\n',
          r"s\.toml: task: data file .*data/none\.csv not found"),
    study("label-column-on-a-name", 'task = "moons"\nlabel_column = "y"\n',
          r"s\.toml: label_column: applies to a data file task"),
    study("task-kind-unknown", 'task = "d.csv"\ntask_kind = "ordinal"\n',
          r"s\.toml: task_kind: unknown value 'ordinal'; choose one of: binary, multiclass, "
          r"regression", files={"d.csv": _csv()}),
    study("task-file-label-missing", 'task = "d.csv"\nlabel_column = "price"\n',
          r"s\.toml: task: d\.csv: no column 'price'", files={"d.csv": _csv()}),
]
