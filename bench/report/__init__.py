"""The report: tidy tables out of storages and timing files (`tables`), statistics, charts and
the page (`build`).

Layer: above sweeps, measure and notebooks, which it may import (to read what they store), and
everything below; only the CLI is above it.
"""
