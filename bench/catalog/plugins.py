"""Plugins: Python files or modules that register tasks and models with two decorators.

    import bench

    @bench.register_task("spiral", kind="binary")
    def spiral(data_seed):            # -> (x, y), x shaped [N, *input_shape]; or explicit splits
        ...

    @bench.register_model("tanh_net")
    def tanh_net(input_shape, n_outputs):   # -> torch.nn.Module
        ...

Plugins are code, so they are loaded only from what the user names: `--plugin PATH|MODULE` on
any command, `plugins = [...]` in a study file, and the `nnbench.plugins` entry-point group of
installed packages (installing a package is naming it). Each entry remembers where it came from
(`origin`, shown by `bench list`), and every plugin loaded is recorded with its file's sha256
(`plugin_records`), which a study stores as its user attribute "plugins". A plugin that fails to
import, or a name that clashes with a built-in or another plugin's entry, is one UsageError line.

This module stays light (no torch at import): `bench` re-exports the decorators.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.catalog.datafile import KINDS
from bench.errors import UsageError

if TYPE_CHECKING:
    from bench.catalog.models import ModelDef
    from bench.catalog.tasks import Splits, Task

ENTRY_POINT_GROUP = "nnbench.plugins"

PLUGIN_MODELS: dict[str, ModelDef] = {}
_LOADED: dict[str, dict[str, str]] = {}  # source key -> {"source": ..., "sha256": ...}
_LOADING: list[str] = []  # the source being loaded (stack), for entries' origin
_entry_points_done = False


def _origin(fn: Callable[..., Any]) -> str:
    """Where an entry registered now comes from: the plugin being loaded, else the module."""
    if _LOADING:
        return f"plugin {_LOADING[-1]}"
    return f"python module {getattr(fn, '__module__', '?')}"


def _clash(kind: str, name: str, origin: str, table: dict[str, Any], builtin: dict[str, Any],
           origin_of: Callable[[Any], str]) -> None:
    """A UsageError when `name` is built-in or registered by another source."""
    if name in builtin:
        raise UsageError(f"{origin} registers {kind} {name!r}, which is a built-in {kind}; "
                         "rename it in the plugin")
    if name in table and origin_of(table[name]) != origin:
        raise UsageError(f"{origin} registers {kind} {name!r}, already registered by "
                         f"{origin_of(table[name])}; rename one of them")


def register_task(name: str, *, kind: str | None = None, description: str = "",
                  ) -> Callable[[Callable[[int], Any]], Callable[[int], Any]]:
    """Decorator: `fn(data_seed) -> (x, y)` (arrays or tensors, x shaped [N, *input_shape]) or
    explicit splits (a dict with "train", "val" and "test" pairs, or the six arrays x_train,
    y_train, x_val, y_val, x_test, y_test) becomes task `name`. `kind` ("binary",
    "multiclass", "regression") is inferred from the labels when None, as for data files.
    The function runs when the task is first used, once per data seed."""
    if not isinstance(name, str) or not name or not name.isidentifier():
        raise UsageError(f"register_task: the task name must be a non-empty identifier, got "
                         f"{name!r}; e.g. @bench.register_task(\"spiral\")")
    if kind is not None and kind not in KINDS:
        raise UsageError(f"register_task({name!r}): unknown kind {kind!r}; choose one of: "
                         f"{', '.join(KINDS)}, or leave it out to infer it from the labels")

    def decorate(fn: Callable[[int], Any]) -> Callable[[int], Any]:
        from bench.catalog import tasks

        origin = _origin(fn)
        _clash("task", name, origin, tasks.PLUGIN_TASKS, tasks.TASKS, lambda t: t.origin)
        tasks.PLUGIN_TASKS[name] = PendingTask(name, fn, kind, description, origin)
        return fn

    return decorate


def register_model(name: str, *, description: str = "",
                   ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: a factory `(input_shape, n_outputs) -> torch.nn.Module` becomes model `name`
    (it outputs raw scores; the loss applies the output activation, as for the built-ins)."""
    if not isinstance(name, str) or not name or not name.isidentifier():
        raise UsageError(f"register_model: the model name must be a non-empty identifier, got "
                         f"{name!r}; e.g. @bench.register_model(\"tanh_net\")")

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        from bench.catalog.models import MODELS, ModelDef

        origin = _origin(fn)
        _clash("model", name, origin, PLUGIN_MODELS, MODELS, lambda m: m.origin)
        PLUGIN_MODELS[name] = ModelDef(name, description or _first_line(fn, name), None, None,
                                       None, factory=fn, origin=origin)
        return fn

    return decorate


@dataclass(frozen=True)
class PendingTask:
    """A plugin task registered but not drawn yet; calling it makes the Task (`tasks.
    plugin_task` does, on first use)."""

    name: str
    fn: Callable[[int], Any]
    kind: str | None
    description: str
    origin: str

    def __call__(self) -> Task:
        return _plugin_task(self.name, self.fn, self.kind, self.description, self.origin)


def _plugin_task(name: str, fn: Callable[[int], Any], kind: str | None, description: str,
                 origin: str) -> Task:
    """Draw the plugin's data once (data seed 0) to learn its shape, kind and classes."""
    import numpy as np

    from bench.catalog.tasks import Task

    where = f"task {name!r} ({origin})"
    first, kind_found, n_classes = _splits(fn, 0, kind, where)
    shape = tuple(int(d) for d in first[0].shape[1:])

    def make(data_seed: int, n_samples: int | None, root: Path) -> Splits:
        del n_samples, root
        if data_seed == 0:
            return first
        splits, _, _ = _splits(fn, data_seed, kind_found, where)
        if tuple(splits[0].shape[1:]) != shape:
            raise UsageError(f"{where}: data seed {data_seed} gives examples shaped "
                             f"{list(splits[0].shape[1:])}, seed 0 gave {list(shape)}; a task "
                             "keeps one shape")
        return splits

    return Task(name, description or _first_line(fn, name), kind_found,  # type: ignore[arg-type]
                int(np.prod(shape)), n_classes,
                "mse" if kind_found == "regression" else "accuracy", None, make, origin=origin,
                shape=shape if len(shape) > 1 else None)


def _first_line(fn: Callable[..., Any], name: str) -> str:
    """The first line of a function's docstring, for `bench list`."""
    lines = (fn.__doc__ or "").strip().splitlines()
    return lines[0].strip() if lines else f"{name} (plugin)"


def _splits(fn: Callable[[int], Any], data_seed: int, kind: str | None,
            where: str) -> tuple[Splits, str, int]:
    """Call the plugin's function and turn what it returns into six validated arrays, with
    the kind and class count (0 for regression)."""
    import numpy as np

    from bench.catalog.datafile import check_xy
    from bench.catalog.tasks import split_arrays

    try:
        out = fn(data_seed)
    except UsageError:
        raise
    except Exception as exc:
        raise UsageError(f"{where}: its function failed for data seed {data_seed}: "
                         f"{type(exc).__name__}: {exc}") from None
    if isinstance(out, dict) and set(out) == {"train", "val", "test"}:
        parts = [out["train"], out["val"], out["test"]]
        if not all(isinstance(p, (tuple, list)) and len(p) == 2 for p in parts):
            raise UsageError(f"{where}: each of train, val and test must be a pair (x, y)")
        pieces = [item for pair in parts for item in pair]
    elif isinstance(out, (tuple, list)) and len(out) in (2, 6):
        pieces = list(out)
    else:
        raise UsageError(f"{where}: the function must return (x, y), the six arrays x_train, "
                         "y_train, x_val, y_val, x_test, y_test, or a dict of train/val/test "
                         f"pairs; got {type(out).__name__}")
    if len(pieces) == 2:
        x, y, found, n_classes = check_xy(pieces[0], pieces[1], kind, where)
        return split_arrays(x, y, found, data_seed), found, n_classes
    # Explicit splits: validate them together, so class indices agree across the three.
    sizes = [len(pieces[i]) for i in (1, 3, 5)]
    x_all = np.concatenate([_array(pieces[i]) for i in (0, 2, 4)])
    y_all = np.concatenate([_array(pieces[i]).reshape(-1) for i in (1, 3, 5)])
    x, y, found, n_classes = check_xy(x_all, y_all, kind, where)
    a, b = sizes[0], sizes[0] + sizes[1]
    return (x[:a], y[:a], x[a:b], y[a:b], x[b:], y[b:]), found, n_classes


def _array(value: Any) -> Any:
    import numpy as np

    return np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value)


# --- loading ----------------------------------------------------------------------------------

@contextmanager
def _loading(source: str) -> Iterator[None]:
    _LOADING.append(source)
    try:
        yield
    finally:
        _LOADING.pop()


def _file_sha256(path: Path | None) -> str | None:
    if path is None or not path.is_file():
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_plugin(source: str, base: str | Path | None = None) -> dict[str, str]:
    """Load one plugin: a path to a .py file (relative to `base`, else the current folder) or
    an importable module name. Loading the same source again does nothing. Returns its record
    {"source", "sha256"}."""
    text = str(source).strip()
    if not text:
        raise UsageError("--plugin needs a path to a .py file or a module name, e.g. "
                         "--plugin examples/spiral_plugin.py")
    is_path = text.endswith(".py") or "/" in text or "\\" in text or text.startswith("~")
    path = _path_of(text, base)
    if is_path:
        if path is None:
            raise UsageError(f"plugin path {text!r} cannot be resolved; give a path to a .py "
                             "file, e.g. --plugin examples/spiral_plugin.py")
        _refuse_not_python(path)
        key = str(path)
        if key in _LOADED:
            return _LOADED[key]
        if not path.is_file():
            raise UsageError(f"plugin {path} not found; give a path to a .py file or an "
                             "importable module name")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        module_name = f"nnbench_plugin_{path.stem}_{digest[:12]}"
        with _loading(key):
            try:
                spec = importlib.util.spec_from_file_location(module_name, path)
                assert spec is not None and spec.loader is not None
                module = importlib.util.module_from_spec(spec)
                sys.modules[module_name] = module
                spec.loader.exec_module(module)
            except UsageError:
                _forget(key, module_name)
                raise
            except (Exception, SystemExit) as exc:
                _forget(key, module_name)
                raise UsageError(f"plugin {path} failed to import: {type(exc).__name__}: "
                                 f"{_one_line(exc)}") from None
        record = {"source": key, "sha256": digest}
    else:
        key = text
        if key in _LOADED:
            return _LOADED[key]
        with _loading(key):
            try:
                module = importlib.import_module(text)
            except UsageError:
                _forget(key)
                raise
            except ModuleNotFoundError as exc:
                _forget(key)
                if exc.name and text.startswith(exc.name):
                    if path is not None:  # a file by that name that Python does not import
                        _refuse_not_python(path)
                    raise UsageError(f"plugin module {text!r} not found; install it, put it on "
                                     "PYTHONPATH, or give a path to a .py file") from None
                raise UsageError(f"plugin {text} failed to import: ModuleNotFoundError: "
                                 f"{_one_line(exc)}") from None
            except Exception as exc:
                _forget(key)
                raise UsageError(f"plugin {text} failed to import: {type(exc).__name__}: "
                                 f"{_one_line(exc)}") from None
        file = getattr(module, "__file__", None)
        record = {"source": key, "sha256": _file_sha256(Path(file) if file else None) or ""}
    _LOADED[key] = record
    return record


def _path_of(text: str, base: str | Path | None) -> Path | None:
    """`text` as an absolute path (relative to `base`, else the current folder); None where it
    cannot be one (a null byte, a symlink loop, an unknown ~user, a name too long)."""
    try:
        path = Path(text).expanduser()
        if not path.is_absolute():
            path = Path(base) / path if base is not None else Path.cwd() / path
        path = path.resolve()
        path.is_file()  # raises where the name is too long for the file system
        return path
    except (OSError, RuntimeError, ValueError):
        return None


def _refuse_not_python(path: Path) -> None:
    """Python imports .py files only: a plugin saved as plug.txt, or with no suffix, says so."""
    if path.suffix != ".py" and path.is_file():
        raise UsageError(f"plugin {path} is not a .py file; save it as {path.stem}.py and give "
                         "that path")


def _forget(key: str, module_name: str | None = None) -> None:
    """Drop what a plugin that failed to load had registered (and its half-run module)."""
    from bench.catalog import tasks

    origin = f"plugin {key}"
    for name in [n for n, e in tasks.PLUGIN_TASKS.items() if e.origin == origin]:
        del tasks.PLUGIN_TASKS[name]
    for name in [n for n, m in PLUGIN_MODELS.items() if m.origin == origin]:
        del PLUGIN_MODELS[name]
    if module_name is not None:
        sys.modules.pop(module_name, None)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or "(no message)"


def load_plugins(sources: list[str] | tuple[str, ...] | None,
                 base: str | Path | None = None) -> list[dict[str, str]]:
    """Load each source in order (`load_plugin`); their records."""
    return [load_plugin(s, base) for s in sources or ()]


def load_entry_points() -> None:
    """Load the `nnbench.plugins` entry points of installed packages, once per process."""
    global _entry_points_done
    if _entry_points_done:
        return
    _entry_points_done = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        key = ep.module  # the record's source: `--plugin MODULE` loads it again
        if key in _LOADED:
            continue
        with _loading(key):
            try:
                ep.load()
                module = sys.modules[key]
            except UsageError:
                _forget(key)
                raise
            except Exception as exc:
                _forget(key)
                raise UsageError(f"plugin {ep.value} (entry point {ep.name!r} of "
                                 f"{ENTRY_POINT_GROUP}) failed to import: {type(exc).__name__}: "
                                 f"{_one_line(exc)}; fix or uninstall that package") from None
        file = getattr(module, "__file__", None)
        _LOADED[key] = {"source": key,
                        "sha256": _file_sha256(Path(file) if file else None) or ""}


def plugin_records() -> list[dict[str, str]]:
    """Every plugin loaded in this process, in load order: {"source": path or module,
    "sha256": its file's hash}. A study stores the ones it used as user attribute "plugins"."""
    return [dict(r) for r in _LOADED.values()]


def sources_of(origins: list[str]) -> list[dict[str, str]]:
    """The records of the plugins that `origins` (entries' origin strings) come from."""
    wanted = {o.removeprefix("plugin ") for o in origins if o.startswith("plugin ")}
    return [dict(r) for k, r in _LOADED.items() if k in wanted]


def reset_for_tests() -> None:
    """Forget every plugin entry and record (tests only: a fresh registry)."""
    global _entry_points_done
    from bench.catalog import tasks

    tasks.PLUGIN_TASKS.clear()
    PLUGIN_MODELS.clear()
    _LOADED.clear()
    _entry_points_done = False
    for name in [m for m in sys.modules if m.startswith("nnbench_plugin_")]:
        del sys.modules[name]
