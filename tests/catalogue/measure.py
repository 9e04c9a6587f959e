"""Catalogue rows for the measuring commands (`bench check`, `time`, `perf`, `reproduce`): bad
baselines, output paths that cannot be written, and numeric flags that are NaN, infinite,
negative or zero. Every case fails before anything is measured or trained, so each is fast.
"""

from __future__ import annotations

import json

from tests.catalogue import Case

RULES = {"quality_k": 3, "quality_floor": 0.01, "speed_tolerance": 0.3}
JOURNAL = {"results/optuna.journal": b'{"op_code": 0}\n'}


def baseline(**changes: object) -> str:
    """A baseline file with the five sections (empty rows), one or more replaced."""
    data: dict[str, object] = {"format": 1, "rules": RULES, "config": {}, "quality": {},
                               "speed": {}}
    data.update(changes)
    return json.dumps(data)


def check(text: str | bytes, *extra: str, case: str, stderr: str = r"baseline b\.json") -> Case:
    return Case(f"check-baseline-{case}", ("check", "--baseline", "b.json", *extra), 2,
                files={"b.json": text}, stderr=stderr)


def time_flag(flag: str, value: str, expect: str) -> Case:
    return Case(f"time-{flag.strip('-')}-{value.replace('-', 'minus')}",
                ("time", "--quick", "--device", "cpu", f"{flag}={value}"), 2, stderr=expect,
                absent=("results/timing",))


def perf_flag(flag: str, value: str, expect: str, name: str = "") -> Case:
    return Case(f"perf-{name or flag.strip('-') + '-' + value.replace('-', 'minus')}",
                ("perf", "--quick", f"{flag}={value}"), 2, stderr=expect,
                absent=("results/perf",))


CASES = [
    # --- bench check: the baseline path ----------------------------------------------------------
    Case("check-update-baseline-is-a-folder", ("check", "--update", "--baseline", "d"), 2,
         stderr=r"--baseline d is a folder", files={"d/keep.txt": "x"}),
    Case("check-baseline-is-a-folder", ("check", "--baseline", "d"), 2,
         stderr=r"baseline d is a folder", files={"d/keep.txt": "x"}),
    Case("check-update-baseline-under-dev-null",
         ("check", "--update", "--baseline", "/dev/null/b.json"), 2,
         stderr=r"/dev/null is a file"),
    Case("check-update-baseline-under-a-file",
         ("check", "--update", "--baseline", "results/optuna.journal/b.json"), 2,
         stderr=r"results/optuna.journal is a file", files=JOURNAL),
    Case("check-update-over-a-study-file", ("check", "--update", "--baseline", "s.toml"), 2,
         stderr=r"--baseline s.toml exists and is not a baseline", files={"s.toml": "task = 1\n"}),
    Case("check-baseline-missing", ("check", "--baseline", "nosuch.json"), 2,
         stderr=r"not found; create it with `bench check --update"),
    # --- bench check: the baseline's content -----------------------------------------------------
    check(baseline(format="1"), case="format-is-a-string",
          stderr=r"format '1', a str: this bench reads the integer 1"),
    check(baseline(format=1.0), case="format-is-a-float"),
    check(baseline(format=True), case="format-is-true"),
    check(baseline(format=2), case="format-2"),
    check(b"\x00\xff\xfe garbage", case="binary"),
    check("{{ not json", case="not-json"),
    check("[1, 2]", case="a-list"),
    check("", case="empty"),
    check(baseline(rules={**RULES, "quality_k": float("nan")}), case="rule-nan"),
    check(baseline(rules={**RULES, "speed_tolerance": float("inf")}), case="rule-inf"),
    check(baseline(rules={**RULES, "quality_floor": "0.01"}), case="rule-string"),
    check(baseline(rules={**RULES, "quality_k": -1}), case="rule-negative"),
    check(baseline(rules=[1]), case="rules-a-list"),
    check(baseline(config=[1]), case="config-a-list"),
    check(baseline(quality="x"), case="quality-a-string"),
    check(baseline(quality={"r": {"direction": "up", "values": [1]}}), case="row-direction"),
    check(baseline(quality={"r": {"direction": "maximize", "values": "0.9"}}),
          case="row-values-a-string"),
    check(baseline(speed={"reference": {"normalised": float("nan")}}), case="speed-nan"),
    check(baseline(speed={"reference": {"normalised": 0}}), case="speed-zero"),
    check(baseline(speed={"reference": 5}), case="speed-row-a-number"),
    # --- bench time: output folder and numeric flags --------------------------------------------
    Case("time-out-under-dev-null", ("time", "--quick", "--device", "cpu", "--out", "/dev/null/x"),
         2, stderr=r"--out /dev/null/x: /dev/null is a file"),
    Case("time-out-is-a-file", ("time", "--quick", "--device", "cpu", "--out",
                                "results/optuna.journal"), 2,
         stderr=r"results/optuna.journal is a file", files=JOURNAL),
    # a value given twice would be measured twice and counted as two cells
    time_flag("--batch-sizes", "16,full,16", r"--batch-sizes names 16 more than once; give each "
                                             r"value once, e\.g\. --batch-sizes 16,64,full"),
    time_flag("--batch-sizes", "full,full", r"--batch-sizes names full more than once"),
    time_flag("--engines", "batched,batched", r"--engines names batched more than once"),
    time_flag("--task", "moons,moons", r"--task names moons more than once"),
    # no device given (auto): where CUDA is missing its notice must not come before the error
    Case("time-usage-error-alone-on-auto-device", ("time", "--quick", "--k", "0"), 2,
         stderr=r"--k must be at least 1, got 0", absent=("results/timing",), no_cuda=True),
    Case("time-out-is-a-file-alone-on-auto-device", ("time", "--quick", "--out", "taken"), 2,
         stderr=r"taken", files={"taken": "a file\n"}, no_cuda=True),
    time_flag("--device", ",", r"--device names no device; use --device cpu, cuda, cpu,cuda or "
                               r"auto"),
    time_flag("--device", "cpu,cpu", r"--device names cpu more than once; give each value "
                                     r"once, e\.g\. --device cpu,cuda"),
    time_flag("--min-time", "nan", r"--min-time must be a finite number >= 0"),
    time_flag("--min-time", "inf", r"--min-time must be a finite number >= 0"),
    time_flag("--min-time", "-1", r"--min-time must be a finite number >= 0"),
    time_flag("--max-gflop", "nan", r"--max-gflop must be a finite number > 0"),
    time_flag("--max-gflop", "0", r"--max-gflop must be a finite number > 0"),
    time_flag("--max-gflop", "-inf", r"--max-gflop must be a finite number > 0"),
    time_flag("--max-gflop-cuda", "inf", r"--max-gflop-cuda must be a finite number > 0"),
    time_flag("--k", "0", r"--k must be at least 1"),
    time_flag("--epochs", "0", r"--epochs must be at least 1"),
    time_flag("--warmup", "-1", r"--warmup must be at least 0"),
    time_flag("--min-repeats", "0", r"--min-repeats must be at least 1"),
    time_flag("--max-repeats", "1", r"--max-repeats \(1\) must be at least --min-repeats"),
    time_flag("--threads", "0", r"--threads values must be positive"),
    time_flag("--max-train", "0", r"--max-train values must be positive"),
    time_flag("--k", "nan", r"invalid int value"),
    time_flag("--k", "1000000000", r"--k must be at most 65536"),
    time_flag("--epochs", "1000000000", r"--epochs must be at most"),
    time_flag("--warmup", "1000000000", r"--warmup must be at most"),
    time_flag("--max-repeats", "1000000000", r"--max-repeats must be at most"),
    time_flag("--threads", "1000000", r"--threads must be at most"),
    # --- bench perf and bench reproduce ---------------------------------------------------------
    perf_flag("--out-dir", "/dev/null/x", r"--out-dir /dev/null/x: /dev/null is a file",
              "out-dir-under-dev-null"),
    perf_flag("--threads", "0", r"--threads must be between 1 and"),
    perf_flag("--repeats", "0", r"--repeats must be between 1 and"),
    perf_flag("--ks", "-4", r"--ks values must be positive"),
    perf_flag("--ks", "1000000000", r"--ks values must be at most 65536"),
    perf_flag("--repeats", "1000000000", r"--repeats must be between 1 and"),
    perf_flag("--threads", "1000000", r"--threads must be between 1 and"),
    perf_flag("--workloads", "nosuch", r"unknown workload"),
    Case("reproduce-out-under-dev-null", ("reproduce", "--seeds", "1", "--out", "/dev/null/x"),
         2, stderr=r"--out /dev/null/x: /dev/null is a file"),
    Case("reproduce-out-is-a-file", ("reproduce", "--seeds", "1", "--out",
                                     "results/optuna.journal"), 2,
         stderr=r"results/optuna.journal is a file", files=JOURNAL),
    Case("reproduce-seeds-zero", ("reproduce", "--seeds", "0"), 2,
         stderr=r"--seeds must be at least 1"),
    Case("reproduce-epochs-negative", ("reproduce", "--epochs", "-3"), 2,
         stderr=r"--epochs must be at least 1"),
    Case("reproduce-unknown-recipe", ("reproduce", "--recipes", "nosuch", "--seeds", "1"), 2),
]
