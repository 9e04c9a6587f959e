"""Measurement: the timing harness (`timing`, `bench time`), `bench perf` (`perf`), the
regression check (`check`) and machine and commit information (`machine`).

Layer: above engines and notebooks; it may import them and everything below, never sweeps,
report or the CLI.
"""
