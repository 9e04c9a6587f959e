"""Catalogue rows for the command line itself: a bare `bench run`, an unknown option (pointing at
the subcommand's help, not `bench --help`) and a thread count torch cannot use. Nothing trains."""

from __future__ import annotations

from tests.catalogue import Case

CASES = [
    Case("cli-run-bare", ("run",), 2,
         stderr=r"^bench: error: name a recipe \(see `bench list`\) or --task, e\.g\. "
                r"`bench run moons_bn_mlp` or `bench run --task moons`$"),
    Case("cli-run-unknown-option", ("run", "--task", "moons", "--learning-rate=0.1"), 2,
         stderr=r"unrecognized arguments: --learning-rate=0\.1 \(see `bench run --help`\)"),
    Case("cli-reproduce-unknown-option", ("reproduce", "--frob"), 2,
         stderr=r"unrecognized arguments: --frob \(see `bench reproduce --help`\)"),
    Case("cli-top-level-unknown-option", ("--frob", "list"), 2,
         stderr=r"unrecognized arguments: --frob \(see `bench --help`\)"),
    Case("cli-run-threads-zero", ("run", "--threads", "0"), 2,
         stderr=r"--threads must be between 1 and \d+, got 0; e\.g\. --threads 1"),
    Case("cli-run-threads-float", ("run", "--task", "moons", "--threads", "1.5"), 2,
         stderr=r"argument --threads: invalid int value: '1\.5' \(see `bench run --help`\)"),
    Case("cli-reproduce-threads-zero", ("reproduce", "--threads", "0"), 2,
         stderr=r"--threads must be between 1 and \d+, got 0", absent=("results",)),
]
