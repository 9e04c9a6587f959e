"""Engines: what trains a list of RunSpecs and reports each run's epochs.

Holds the shared set-up every engine uses (`setup`: data, plan, evaluation), the clock
(`clock`), the reference engine (`reference`, the readable definition of a run), the batched
engine (`batched`, with its fused C++ CPU step in `native`), the notebooks' DataLoader loop
(`notebook`), the one place that picks an engine (`runner`), and the memory and work estimate
(`budget`).

Layer: above `bench.spec`, `bench.results` and `bench.catalog`; below sweeps, measure, notebooks
and report, which it never imports.
"""
