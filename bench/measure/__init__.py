"""Measurement: the timing harness (`timing`, `bench time`), `bench perf` (`perf`), the
regression check (`check`) and machine and commit information (`machine`).

Layer: above engines; it may import engines and everything below, never sweeps, notebooks,
report or the CLI.
"""
