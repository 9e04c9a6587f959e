"""Engines: what trains a list of RunSpecs and reports each run's epochs.

One contract and the registry of engines by name (`registry`: `train_specs`, `get_engine`,
`choose_engine`, `engine_names`, the `on_epoch(EpochReport)` hook that may stop runs), one
per-epoch bookkeeping every engine uses (`bookkeeping`: curves, divergence on the train and the
validation loss, time to target, RunResult), the shared set-up (`setup`: data, plan, evaluation),
the clock (`clock`), and the engines: the reference engine (`reference`, the readable definition
of a run), the batched engine (`batched`, its stacked model and step in `stacked`, its functional
optimizers in `functional_optim`, its fused C++ CPU step in `native`) and the notebooks'
DataLoader loop (`notebook`); `budget` is the memory and work estimate.
`import bench.engines.registry` loads no torch.

Layer: above `bench.spec`, `bench.results` and `bench.catalog`; below sweeps, measure, notebooks
and report, which it never imports.
"""
