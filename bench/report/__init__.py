"""The report: studies, timings and the reproduction table as tidy tables, charts and two pages.

- `tables`: tidy pandas tables out of an Optuna storage, the timing files and the reproduction
  table (reading never writes);
- `views`: each study as the report judges it (its metric, what varies, the winner and whether
  it wins beyond the seed-to-seed spread, how its trials ended; statistics from `bench.stats`);
- `answers`: the sentences a summary answers its question with (how much of a setting is
  within the best's seed spread, where one option collapses while another holds, a ceiling
  warning), each setting compared at its own best other settings;
- `figures`: the drawing kit the charts share (Chart, Missing, Context, facets, CI bands, log
  ticks, PNG and SVG files);
- `charts` (optimizers, losses, learning rate, L1, batch size, training curves),
  `timing_chart` (CPU vs CUDA), `history` (Optuna history and importances), `boundaries`
  (decision boundaries of retrained best models): one function per question, each a Chart or
  a Missing;
- `page`: index.html (autoescaped) and report.md from the Jinja2 templates in `templates/`;
- `build`: `build_report`, which runs all of these in order and swaps the finished folder in
  place of `--out` without ever losing the previous report; the folder is readable by others
  (0644 files, 0755 folders), its links relative, and `zip_report` bundles it to send.

Numbers read as `bench.numbers` writes them. Layer: above sweeps, measure and notebooks, which it
may import (to read what they store), and everything below; only the CLI is above it.
"""
