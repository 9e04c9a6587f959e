"""The report's build: read the inputs, draw every chart, write the tables and pages, and swap the
finished folder in place of `--out`.

`build_report` reads every study of an Optuna storage, the timing JSON files and the
reproduction table, and writes into one folder:

- `tables/*.csv`: tidy tables (`runs.csv` one row per trial x seed; `configs.csv` mean, std and
  95% CI over seeds per trial; `trials.csv`, `curves.csv`, `timing.csv`, and each chart's data);
- `charts/*.png` (and `*.svg` with `svg=True`): one chart per question the notebooks ask,
  drawn only when the data to answer it exists (otherwise the page says which study would
  provide it), over worker processes (`parallel`);
- `index.html` (self-contained: charts embedded as base64 PNG) and `report.md` (links the PNGs).

The whole folder is built next to its destination and swapped in at the end, so a report that
fails halfway (a full disk, Ctrl-C, SIGTERM) leaves the previous one untouched and no temporary
folder behind. The destination may only be new, empty or an earlier report (its
`.nnbench-report` marker lists the files it wrote); any other folder or file is refused with
one line (exit 2) and left as it is. File names are unique per study name (`figures.slug`), and the
storage URL is shown with its password masked (`bench.sweeps.storage.display_url`).

The parts: `tables` (tidy tables out of the inputs), `views` (each study, its winner and the
statistics over seeds, from `bench.stats`), `figures` (the drawing kit), the charts (`charts`,
`timing_chart`, `history`, `boundaries`), `page` (index.html and report.md from Jinja2
templates) and this module, which runs them in order (`CHARTS`) and keeps the previous report
safe.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from bench.errors import UsageError
from bench.report import parallel, tables
from bench.report.boundaries import chart_boundaries
from bench.report.charts import (
    chart_batch_size,
    chart_curves,
    chart_inits,
    chart_l1,
    chart_losses,
    chart_lr,
    chart_optimizers,
)
from bench.report.figures import Chart, ChartFn, Context, Missing, Skipped
from bench.report.history import chart_history
from bench.report.page import ReportResult, render_html, render_markdown
from bench.report.timing_chart import chart_timing
from bench.report.views import study_summary, study_views
from bench.store import write_json_atomic, write_text_atomic
from bench.sweeps.storage import display_url, missing_storage_reason

# The charts in page order; each returns a Chart, a Missing (what would provide its data), or a
# list of them (one per study).
CHARTS: tuple[ChartFn, ...] = (chart_optimizers, chart_lr, chart_losses, chart_inits, chart_l1,
                               chart_batch_size, chart_curves, chart_timing, chart_history,
                               chart_boundaries)


# --- the build ----------------------------------------------------------------------------------

REPORT_MARKER = ".nnbench-report"
MARKER_SCHEMA = "nnbench.report/1"
# What a report written before the marker existed holds: it may be replaced too.
_LEGACY_FILE = re.compile(r"(index\.html|report\.md|tables/[^/]+\.csv|charts/[^/]+\.(png|svg))")


def _entries(folder: Path) -> Iterator[str]:
    """Every file, link and folder under `folder` (not followed into links), relative, lazily:
    a check can stop at the first foreign entry instead of walking a whole disk."""
    for root, dirs, files in os.walk(folder):
        rel = Path(root).relative_to(folder)
        yield from ((rel / n).as_posix() for n in files)
        yield from ((rel / n).as_posix() for n in dirs if (Path(root) / n).is_symlink())


def replace_refusal(out: str | Path) -> str | None:
    """Why the report may not replace `out`, or None when it may.

    It may create `out`, or replace an empty folder or one of its own earlier reports: a folder
    with the `.nnbench-report` marker holding only the files the marker lists (or, from before
    the marker, only index.html, report.md, tables/*.csv and charts/*.png|svg). Anything else,
    a file, a link, the working folder or a folder above it, is refused.
    """
    out = Path(out)
    if out.is_symlink():
        return "is a symbolic link"
    if not out.exists():
        return None
    if not out.is_dir():
        return "is a file, not a report folder"
    here, target = Path.cwd().resolve(), out.resolve()
    if target == here or target in here.parents:
        return "is the working folder or holds it"
    with os.scandir(out) as it:
        if next(it, None) is None:
            return None
    marker = out / REPORT_MARKER
    if marker.is_file() and not marker.is_symlink():
        try:
            data = json.loads(marker.read_text(encoding="utf-8"))
            listed = set(data["files"]) if data.get("schema") == MARKER_SCHEMA else None
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            listed = None
        if listed is None:
            return f"has an unreadable {REPORT_MARKER} marker"
        def ours(entry: str) -> bool:
            return entry == REPORT_MARKER or entry in listed
    elif not (out / "index.html").is_file():
        return "is not an nnbench report (no index.html, no .nnbench-report marker)"
    else:
        ours = _LEGACY_FILE.fullmatch
    foreign = next((e for e in _entries(out) if not ours(e)), None)
    return f"holds {foreign!r}, which no earlier report wrote" if foreign else None


def check_out(out: str | Path) -> Path:
    """`out` if the report may write there (see `replace_refusal`); else a one-line UsageError."""
    out = Path(out)
    reason = replace_refusal(out)
    if reason:
        raise UsageError(f"--out {out} {reason}; the report replaces only an empty folder or its "
                         "own earlier report: pass a new folder, e.g. --out results/report")
    parent = out.parent
    if parent.exists() and not parent.is_dir():
        raise UsageError(f"--out {out}: {parent} is a file, not a folder; pass another --out")
    return out


def build_report(storage: str | None, out: str | Path, *, timing_paths: list[Path] | None = None,
                 reproduce_path: str | Path | None = None, boundaries: bool = True,
                 svg: bool = False, jobs: int | None = None) -> ReportResult:
    """Read studies, timings and the reproduction table; write tables, charts and pages to `out`.

    Missing inputs are listed on the page, never an error. `out` must be new, empty or an
    earlier report (`check_out`), else nothing is read or written. The folder is built beside
    `out` and swapped in at the end, so a failure (a full disk, an interrupt) keeps the previous
    report intact and leaves no temporary folder behind. Charts are PNG (and SVG with `svg`),
    drawn over `jobs` worker processes (default: the cores this process may use).
    """
    out = check_out(out)
    shown = display_url(storage) if storage is not None else None
    notes: list[str] = []
    studies: list[tables.StudyData] = []
    if storage is None:
        notes.append("No Optuna storage found (results/optuna.db or results/optuna.journal): "
                     "run `make sweep` or pass --storage URL.")
    elif reason := missing_storage_reason(storage):
        notes.append(f"{reason}: run `make sweep` or pass --storage URL.")
    else:
        studies = tables.load_studies(storage, notes)
        if not studies and not notes:
            notes.append(f"The storage {shown} holds no study yet: run `make sweep`.")
    for s in studies:
        if s.skipped:
            notes.append(f"Skipped {len(s.skipped)} malformed stored record(s) of study "
                         f"{s.name!r}, e.g. {s.skipped[0]}.")
        if not any(s.runs(t) for t in s.trials):
            notes.append(f"Study {s.name} has no trial with stored nnbench runs"
                         + (" (a plain Optuna study: only its history is shown)."
                            if any(t.values for t in s.trials) else "."))
    runs = tables.runs_table(studies)
    timing_paths = tables.timing_files() if timing_paths is None else timing_paths
    timing, timing_notes = tables.timing_table(timing_paths)
    notes += timing_notes
    reproduce_path = tables.DEFAULT_REPRODUCE if reproduce_path is None else reproduce_path
    repro = tables.reproduce_table(reproduce_path, notes)

    tmp: Path | None = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.building-"))
        _write_marker(tmp, [])  # first, so a build killed with -9 is recognisably ours
        _remove_stale(out)
        result = _write_all(tmp, out, studies, runs, timing, repro, notes, shown, boundaries,
                            svg, jobs)
        _write_marker(tmp, [f.as_posix() for f in result.files])
        share(tmp)
        check_out(out)  # again: a file put into the old report meanwhile is not deleted
        _swap_in(tmp, out)
    except OSError as exc:  # a full disk, a read-only folder: nothing half-written is kept
        raise UsageError(f"cannot write the report to {out} ({exc.strerror or exc}); "
                         "the previous report is kept: free space or pass another --out") from exc
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return result


def _write_all(tmp: Path, out: Path, studies: list[tables.StudyData], runs: pd.DataFrame,
               timing: pd.DataFrame, repro: pd.DataFrame | None, notes: list[str],
               storage: str | None, boundaries: bool, svg: bool = False,
               jobs: int | None = None) -> ReportResult:
    curves = tables.curves_table(studies)
    tidy = {"runs": runs, "configs": tables.configs_table(runs),
            "trials": tables.trials_table(studies), "curves": curves, "timing": timing}
    (tmp / "tables").mkdir()
    for name, df in tidy.items():
        df.to_csv(tmp / "tables" / f"{name}.csv", index=False)
    views = study_views(runs, studies)
    ctx = Context(views, studies, curves, timing, tmp, boundaries, svg)
    units = parallel.units_of(CHARTS, ctx)
    work = [u for _, u in units]
    drawn = parallel.draw_all(work, _draw, jobs or parallel.jobs_here(),
                              order=parallel.dispatch_order(work))
    charts: list[Chart] = []
    missing: list[Missing] = []
    skipped: list[str] = []
    for i, fn in enumerate(CHARTS):
        parts = [made for (j, _), made in zip(units, drawn, strict=True) if j == i]
        for item in parallel.merge(parts, fn.__name__.removeprefix("chart_")):
            if isinstance(item, Skipped):
                skipped.append(item.text)
            else:
                (charts if isinstance(item, Chart) else missing).append(item)
    if not timing.empty and "cuda" not in set(timing["device"].dropna()):
        notes.append("Timing files hold CPU measurements only: the CPU/CUDA crossover is not "
                     "measured yet (run `bench time` on a CUDA machine).")
    summaries = [study_summary(v, ctx.study(v.name)) for v in views]
    if summaries:
        pd.DataFrame(summaries).to_csv(tmp / "tables" / "summary.csv", index=False)
    files = sorted(p.relative_to(tmp) for p in tmp.rglob("*") if p.is_file())
    result = ReportResult(out, charts, missing, notes, files, skipped)
    extra = {"reproduce": repro, "timing": timing}
    write_text_atomic(tmp / "index.html", render_html(result, summaries, extra, storage))
    write_text_atomic(tmp / "report.md", render_markdown(result, summaries, extra, storage))
    result.files = sorted([*files, Path("index.html"), Path("report.md")])
    return result


def _draw(unit: parallel.Unit) -> list[Chart | Missing | Skipped]:
    """One unit's chart(s); a chart that cannot draw the stored values is a `Missing`."""
    fn, ctx = unit
    try:
        made = fn(ctx)
    except (ValueError, TypeError, ArithmeticError, IndexError, KeyError) as exc:
        # Stored values no sweep writes (a negative loss on a log axis, ...): that chart is
        # left out, the rest of the report stands.
        key = fn.__name__.removeprefix("chart_")
        made = Missing(key, f"chart {key}", "stored values it can draw "
                       f"({type(exc).__name__}: {str(exc)[:120]})")
    return made if isinstance(made, list) else [made]


def share(folder: Path) -> None:
    """Make a report folder readable by others whatever the umask (a report is meant to be
    sent): files 0644, folders 0755 (mkdtemp and atomic writes make them owner-only)."""
    folder.chmod(0o755)
    for path in folder.rglob("*"):
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() else 0o644)


def check_zip_target(out: str | Path) -> Path:
    """Where `zip_report` will write (`out`.zip), checked before anything is built: absent, or
    an archive an earlier `bench report --zip` wrote (its files all under the folder `out`'s
    name, its page among them); never the user's own file or a folder of that name."""
    out = Path(out)
    target = out.with_name(f"{out.name}.zip")
    if not target.exists() and not target.is_symlink():
        return target
    ours = False
    if target.is_file() and not target.is_symlink():
        try:
            with zipfile.ZipFile(target) as archive:
                names = archive.namelist()
            ours = (f"{out.name}/index.html" in names
                    and all(n.startswith(f"{out.name}/") for n in names))
        except (OSError, zipfile.BadZipFile):
            ours = False
    if not ours:
        raise UsageError(f"{target} exists and is not an archive of this report; move it away "
                         "or pass another --out")
    return target


def zip_report(out: str | Path) -> Path:
    """The report folder `out` as one archive to send, `out`.zip beside it: every file under a
    top folder named like `out` (its links are relative, so it opens as it is once unpacked),
    without the report's marker; written whole or not at all, readable by others."""
    out = Path(out)
    target = check_zip_target(out)  # again: a file put there while the report was built
    fd, name = tempfile.mkstemp(dir=out.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(out.rglob("*")):
                if path.is_file() and not path.is_symlink() and path.name != REPORT_MARKER:
                    info = zipfile.ZipInfo.from_file(path, f"{out.name}/"
                                                           f"{path.relative_to(out).as_posix()}")
                    info.external_attr = (0o100644 << 16)
                    info.compress_type = zipfile.ZIP_DEFLATED
                    archive.writestr(info, path.read_bytes())
        tmp.chmod(0o644)
        tmp.replace(target)
    except OSError as exc:
        raise UsageError(f"cannot write {target} ({exc.strerror or exc}); the report folder "
                         f"{out} is complete: free space or zip it by hand") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _write_marker(folder: Path, files: list[str]) -> None:
    write_json_atomic(folder / REPORT_MARKER, {
        "schema": MARKER_SCHEMA, "written_by": "bench report", "pid": os.getpid(),
        "created": datetime.now().isoformat(timespec="seconds"), "files": files})


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


def _remove_stale(out: Path) -> None:
    """Remove the `.NAME.building-*` and `.NAME.old-*` folders a report killed with -9 left
    beside `out`: only those holding the report's marker, written by a process no longer
    running, and nothing the marker does not list."""
    for folder in [*out.parent.glob(f".{out.name}.building-*"),
                   *out.parent.glob(f".{out.name}.old-*")]:
        marker = folder / REPORT_MARKER
        try:
            data = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if (folder.is_symlink() or not isinstance(data, dict) or _alive(data.get("pid"))
                or data.get("schema") != MARKER_SCHEMA):
            continue
        listed = set(data.get("files") or []) if isinstance(data.get("files"), list) else set()
        building = ".building-" in folder.name
        if building or all(e in listed or e == REPORT_MARKER for e in _entries(folder)):
            shutil.rmtree(folder, ignore_errors=True)


def _swap_in(tmp: Path, out: Path) -> None:
    """Replace `out` by the finished folder `tmp`; the old report is removed only afterwards.

    On any error or interrupt between the two renames the old report is put back.
    """
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{datetime.now():%Y%m%d%H%M%S%f}-{os.getpid()}"
        out.rename(old)
    try:
        tmp.rename(out)
    except BaseException:
        if old is not None and not out.exists():
            old.rename(out)
        raise
    finally:
        if old is not None and old.exists() and out.exists():
            shutil.rmtree(old, ignore_errors=True)
