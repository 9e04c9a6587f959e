"""Every `bench ...` command line of README.md and docs/STUDIES.md runs (exit code 0), and every
TOML block of docs/STUDIES.md that names a `task` is a valid study file: a wrong example fails CI.

Each command runs in a fresh temporary working folder holding a copy of studies/ (so `results/`
starts empty), shortened where the command accepts it (`--trials 2 --seeds 1` for sweeps,
`--epochs 2` and one seed for runs and reproductions, `--quick` for timing). Commands that need
what this machine lacks (CUDA, a PostgreSQL server, the Fashion-MNIST files) are skipped with the
reason; so is `bench check`, which CI runs itself (`make check`) after the tests.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from bench.sweeps.study import TOP_KEYS, parse_study

ROOT = Path(__file__).resolve().parents[1]
DOCS = (ROOT / "README.md", ROOT / "docs" / "STUDIES.md")
BENCH = Path(sys.executable).parent / "bench"
FASHION_SOURCE = Path("/usr/share/datasets/fashion-mnist")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
TIMEOUT_S = 120


def code_blocks(path: Path) -> list[tuple[str, str]]:
    """(language, text) of every fenced code block of a Markdown file."""
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(path.read_text())]


def bench_lines(path: Path) -> list[str]:
    """Command lines starting with `bench ` or `.venv/bin/bench ` in the file's code blocks,
    continuation lines joined, comments dropped."""
    out = []
    for _, text in code_blocks(path):
        joined = re.sub(r"\s*\\\n\s*", " ", text)
        for line in joined.splitlines():
            line = re.sub(r"\s+#.*$", "", line.strip())
            if line.startswith(("bench ", ".venv/bin/bench ")) or line in ("bench",
                                                                            ".venv/bin/bench"):
                out.append(line)
    return out


def _set(args: list[str], flag: str, value: str | None) -> list[str]:
    """args with `flag value` replaced, or appended when absent (value None: a bare flag)."""
    if flag in args:
        i = args.index(flag)
        if value is not None:
            args[i + 1] = value
        return args
    return [*args, flag] if value is None else [*args, flag, value]


def shortened(line: str) -> tuple[list[str] | None, str]:
    """The command's arguments (after `bench`), shortened, or None and why it is skipped."""
    args = shlex.split(line, comments=True)[1:]
    command = args[0] if args else ""
    text = " ".join(args)
    if "cuda" in args and not torch.cuda.is_available():
        return None, "needs CUDA, absent here"
    if "postgresql://" in text:
        return None, "needs a PostgreSQL server (tests/test_sweep_postgres.py covers it)"
    if "fashion_mnist" in text and not FASHION_SOURCE.is_dir():
        return None, f"needs the Fashion-MNIST files ({FASHION_SOURCE} absent)"
    if command == "data" and not FASHION_SOURCE.is_dir():
        return None, f"needs {FASHION_SOURCE} (apt-get install dataset-fashion-mnist)"
    if command == "check":
        return None, ("measures speed against results/baselines/check.json for minutes; CI "
                      "runs `make check` after the tests")
    if command == "perf":
        return None, "a speed benchmark (minutes); `make perf` runs it"
    if command == "sweep":
        args = _set(_set(args, "--trials", "2"), "--seeds", "1")
        if "--workers" in args:
            args = _set(args, "--workers", "2")
    elif command == "run":
        args = _set(_set(args, "--epochs", "2"), "--seeds", "0")
    elif command == "reproduce":
        args = _set(_set(args, "--epochs", "2"), "--seeds", "1")
    elif command == "time":
        args = _set(_set(_set(_set(args, "--quick", None), "--min-time", "0"),
                         "--min-repeats", "1"), "--max-repeats", "1")
    return args, ""


COMMANDS = [(path.relative_to(ROOT).as_posix(), line) for path in DOCS
            for line in bench_lines(path)]


def _run(args: list[str], folder: Path) -> subprocess.CompletedProcess[str]:
    folder.mkdir(parents=True)
    shutil.copytree(ROOT / "studies", folder / "studies")
    env = {**os.environ, "NNBENCH_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("NNBENCH_DATA", None)
    if args[0] == "report" and "--storage" in args:
        # the journal the docs' sweep line above writes: here an empty one (a --storage given
        # but missing is an error, so that a typo never replaces a report with an empty one)
        journal = folder / args[args.index("--storage") + 1]
        journal.parent.mkdir(parents=True, exist_ok=True)
        journal.touch()
    if "fashion_mnist" in " ".join(args):  # the study reads data/ under the working folder
        subprocess.run([str(BENCH), "data"], cwd=folder, env=env, capture_output=True,
                       timeout=TIMEOUT_S, check=True)
    return subprocess.run([str(BENCH), *args], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=TIMEOUT_S)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[int, object]:
    """Every runnable command's result by its index in COMMANDS, run two at a time (a command
    given twice runs once)."""
    base = tmp_path_factory.mktemp("docs")
    planned = {i: shortened(line) for i, (_, line) in enumerate(COMMANDS)}
    first: dict[tuple[str, ...], int] = {}  # a command given twice runs once
    for i, (args, _) in planned.items():
        if args is not None:
            first.setdefault(tuple(args), i)
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {args: pool.submit(_run, list(args), base / f"cmd{i}")
                   for args, i in first.items()}
    return {i: futures[tuple(args)].result() for i, (args, _) in planned.items()
            if args is not None}


def test_the_docs_have_commands() -> None:
    files = {f for f, _ in COMMANDS}
    assert files == {"README.md", "docs/STUDIES.md"}, files
    assert any(shortened(line)[0] and shortened(line)[0][0] == "sweep" for _, line in COMMANDS)


@pytest.mark.parametrize("index", range(len(COMMANDS)),
                         ids=[f"{f}:{line}" for f, line in COMMANDS])
def test_command_runs(index: int, results: dict[int, subprocess.CompletedProcess[str]]) -> None:
    source, line = COMMANDS[index]
    args, why = shortened(line)
    if args is None:
        pytest.skip(f"{source}: `{line}`: {why}")
    done = results[index]
    assert done.returncode == 0, (f"{source}: `{line}` (run as bench {shlex.join(args)}) exited "
                                  f"{done.returncode}:\n{done.stderr[-2000:]}\n"
                                  f"{done.stdout[-1000:]}")


def test_study_files_named_in_the_docs_exist() -> None:
    for path in DOCS:
        for name in set(re.findall(r"studies/[\w/]+\.toml", path.read_text())):
            assert (ROOT / name).is_file(), f"{path.name} names {name}, which does not exist"


STUDY_BLOCKS = [(i, text) for i, (lang, text) in enumerate(code_blocks(DOCS[1]))
                if lang == "toml" and re.search(r"^task = ", text, re.M)]


@pytest.mark.parametrize("index,text", STUDY_BLOCKS, ids=[f"block{i}" for i, _ in STUDY_BLOCKS])
def test_study_examples_parse(index: int, text: str, tmp_path: Path) -> None:
    parse_study(tomllib.loads(text), tmp_path / f"example{index}.toml")


def snippet_studies(text: str) -> list[str]:
    """A docs TOML snippet (no `task`) as whole study files: a [fixed] or [space] block on a
    moons study, else each line alone (a top-level key, or a [space] entry after an optimizer
    choice its `when` can name)."""
    head = 'task = "moons"\ntrials = 4\nseeds = 1\n'
    if text.startswith(("[fixed]", "[space]")):
        return [head + text]
    out = []
    for line in text.splitlines():
        line = re.sub(r"\s+#.*$", "", line).strip()
        if not line or line.startswith("#"):
            continue
        key = line.split("=", 1)[0].strip()
        if key in TOP_KEYS:
            out.append(head + line + "\n[fixed]\nepochs = 20\n")
        elif key == "optimizer":
            out.append(head + "[space]\n" + line + "\n")
        else:
            out.append(head + '[space]\noptimizer = ["sgd", "adam", "adamw"]\n' + line + "\n")
    return out


SNIPPETS = [study for lang, text in code_blocks(DOCS[1])
            if lang == "toml" and not re.search(r"^task = ", text, re.M)
            for study in snippet_studies(text)]


@pytest.mark.parametrize("text", SNIPPETS, ids=[f"snippet{i}" for i in range(len(SNIPPETS))])
def test_toml_snippets_parse(text: str, tmp_path: Path) -> None:
    """Every TOML snippet of docs/STUDIES.md is valid in a study file."""
    parse_study(tomllib.loads(text), tmp_path / "snippet.toml")
