"""Optuna storages as nnbench names, opens, shows and keeps them safe.

One place for what a storage URL means: a path is a journal file (the embedded default), a URL
with a scheme is an SQLAlchemy database URL (PostgreSQL shared by workers on several hosts,
SQLite). Whenever a URL is shown (errors, summaries, the report) it goes through `display_url`,
which masks the password.

The journal file backend (`JournalFile`) is written on Optuna's public `BaseJournalBackend` and
keeps Optuna's file format (one JSON operation a line), so `optuna.load_study` with Optuna's own
`JournalFileBackend` and optuna-dashboard read what it writes. What it adds:

- A record is visible only once its closing newline is written: a reader takes complete lines
  and ignores a tail without one (a write in progress, or one cut off by kill -9 or a full
  disk), so nothing is ever seen half-written.
- Before appending, under the lock, a torn tail (bytes after the last newline that no writer is
  writing, since writers hold the lock) is moved to `FILE.torn` and cut off, so the next record
  never lands on partial bytes and every earlier record stays readable. A write that fails
  (disk full) is cut back at once.
- The lock is a file created with O_EXCL at the journal's absolute path plus `.lock` (the path
  Optuna's own locks use, so they exclude each other), holding `host pid`. A lock whose owner
  process on this host is gone is taken over at once; any other lock not touched for
  `LOCK_GRACE_SECONDS` is taken over (a lock is held for one write, milliseconds). Waiting
  sleeps: it never spins.
- Records are written without an fsync each (Optuna fsyncs every record, about 4 ms here);
  `sync_storage` fsyncs once per trained group. A killed process loses nothing it wrote (the
  kernel holds it); a machine crash can lose at most the last group's records, which a re-run
  trains again.
- A line in the middle of the file that is not a record is a one-line error naming the line.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import time
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, unquote_plus

from bench.errors import UsageError

DEFAULT_STORAGE = "results/optuna.journal"
DEFAULT_SQLITE = "results/optuna.db"
LOCK_GRACE_SECONDS = 30  # a journal lock untouched this long is taken over
HEARTBEAT_INTERVAL = 10  # seconds between heartbeats on RDB storages
GRACE_PERIOD = 60  # seconds without a heartbeat before another worker fails a trial


# ---------------------------------------------------------------------------------------------
# Names


def display_url(url: str | None) -> str:
    """The storage as the user gave it, with any password masked (`***`); the default when None.

    SQLAlchemy parses the URL (`URL.render_as_string(hide_password=True)`); a journal path is
    shown as is. A URL that `unsafe_storage_reason` refuses is shown as `scheme://***`, and one
    SQLAlchemy cannot parse without its user-info part and query string, since either may still
    hold a password. In the query string, the first secret key's value and everything after it
    are hidden (an unencoded '&' may continue the secret).
    """
    if url is None:
        return DEFAULT_STORAGE
    typo = _SCHEME_TYPO.match(url)
    if typo:
        return f"{typo.group('scheme')}:***"
    if "://" not in url:
        return "***" if _USERINFO_IN_PATH.search(url) else url
    if unsafe_storage_reason(url) is not None:
        return f"{url.partition('://')[0]}://***"
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
        query = url.partition("?")[2]
        shown_query = _mask_query(query)
        if parsed.password is None and shown_query == query:  # nothing to hide: as typed
            return url  # (rendering would escape, e.g. sqlite:///:memory: as %3Amemory%3A)
        base = parsed.set(query={}).render_as_string(hide_password=True)
        return base + (f"?{shown_query}" if query else "")
    except Exception:  # unparsable: drop the user-info part and the query string
        return _without_userinfo(url)


def _mask_query(query: str) -> str:
    """A query string with the first secret parameter's value, and all that follows it,
    replaced by *** (`?sslmode=require&password=***`)."""
    kept = []
    for part in query.split("&"):
        key, _, value = part.partition("=")
        if _secret_param(key, value):
            kept.append(f"{key}=***")
            break
        kept.append(part)
    return "&".join(kept)


def _secret_param(key: str, value: str) -> bool:
    """Whether a query parameter holds a secret: its key says so (`SECRET_QUERY_KEY`), or its
    value is itself a connection string with a password (`odbc_connect=...PWD=...`)."""
    return bool(SECRET_QUERY_KEY.search(unquote_plus(key))
                or _PASSWORD_SETTING.search(unquote_plus(value)))


def _without_userinfo(url: str) -> str:
    """scheme://***@host...: everything up to the last '@' hidden (a password may hold '@',
    '/' and '?'), and the query string too (`?***`)."""
    scheme, _, rest = url.partition("://")
    prefix = ""
    if "@" in rest:
        prefix, rest = "***@", rest.rpartition("@")[2]
    elif (port := _port_text(rest)) is not None:  # user:password with the @host left out
        rest = rest.replace(f":{port}", ":***", 1)
    rest, query, _ = rest.partition("?")
    return f"{scheme}://{prefix}{rest}" + ("?***" if query else "")


def _port_text(rest: str) -> str | None:
    """What stands as the port of a URL's host part (after '://'), when it is not a number:
    a password typed without its '@host' (postgresql://user:password/db) reads as one."""
    authority = re.split(r"[/?]", rest, maxsplit=1)[0]
    if authority.startswith("["):  # IPv6: the port follows the ']'
        authority = authority.partition("]")[2]
    port = authority.rpartition(":")[2] if ":" in authority else ""
    return port if port and not port.isdigit() else None


_DB_SCHEMES = r"(?P<scheme>postgres(ql)?|mysql|mariadb|sqlite|oracle|mssql|cockroachdb)(\+\w+)?"
# A database URL typed without its '://' (postgresql:/u:pw@h/db, postgresql//u:pw@h/db,
# postgresql:u:pw@h/db): not a journal path, and what follows may hold a password. A journal
# file named mysql:notes.journal is not one (no '/' after the ':' and no '@').
_SCHEME_TYPO = re.compile(rf"(?i)^\s*{_DB_SCHEMES}(?!://)(:/|//|:(?=.*@))")
# user:password@host with no scheme at all: a ':' and then an '@' in one path component
_USERINFO_IN_PATH = re.compile(r"(^|/)[^/]*:[^/]*@")
# a connection string's password setting inside a query value (libpq, ODBC)
_PASSWORD_SETTING = re.compile(r"(?i)\b(pwd|password)\s*=")


def unsafe_storage_reason(url: str | None) -> str | None:
    """Why a --storage value cannot be read without guessing where a password ends, or None.

    - A database URL without its '://', or user:password@host without a scheme, would be taken
      for a journal path (and a folder made, named after the password).
    - A control character (a newline) cuts SQLAlchemy's reading short.
    - An '@' that is not the single separator before the host (`user:pa@ss@host`, an '@' in the
      database name or query) lets SQLAlchemy read part of a password as the host, database or
      query, which are shown. The same holds for a '/' or '?' before it (`us/er:pw@host`).
    Each must be percent-encoded, as URLs require. SQLite file paths may hold '@'.
    """
    if url is None:
        return None
    typo = _SCHEME_TYPO.match(url)
    if typo:
        scheme = typo.group("scheme").lower()
        example = ("sqlite:///path/to/study.db" if scheme == "sqlite"
                   else f"{scheme}://user:password@host/db")
        return (f"storage {scheme}:*** is a database URL without its '://'; write it as "
                f"{example} (a journal file path has no scheme)")
    if "://" not in url:
        if _USERINFO_IN_PATH.search(url):
            return ("storage *** reads as user:password@host without a scheme; write a database "
                    "URL as postgresql://user:password@host/db (a journal file name may not "
                    "hold a ':' before an '@')")
        return None
    if "://" not in url:
        return None
    scheme, _, rest = url.partition("://")
    if any(unicodedata.category(c) == "Cc" for c in url):
        return (f"storage URL {scheme}://***: holds a newline or other control character; "
                "give the URL on one line")
    if "@" not in rest or (scheme.lower().startswith("sqlite") and rest.startswith("/")):
        return None
    ends = [i for i in (rest.find("/"), rest.find("?")) if i >= 0]
    if rest.count("@") > 1 or rest.find("@") > min(ends, default=len(rest)):
        return (f"storage URL {scheme}://***: an '@', '/' or '?' inside the user name or "
                "password, or an '@' in the database name or query, must be percent-encoded "
                "(%40, %2F, %3F), e.g. postgresql://user:pa%40ss@host/db")
    return None


def _raw_password(url: str) -> str | None:
    """The text after the first ':' of a server URL's user-info part read as widely as a
    password could be (up to the last '@'), so a password holding '@', '/' or '?' is still
    hidden; None without one (and for SQLite, whose paths may hold ':' and '@')."""
    scheme, _, rest = url.partition("://")
    userinfo, at, _ = rest.rpartition("@")
    if scheme.startswith("sqlite"):
        return None
    if not at:  # postgresql://user:password/db: the password stands as the port
        return _port_text(rest)
    return userinfo.partition(":")[2] if ":" in userinfo else None


# Query parameters of a database URL that hold a secret (libpq reads password and sslpassword
# from the query string as well as from the user-info part; psycopg2 reads a whole connection
# string, password included, from dsn; pyodbc from odbc_connect; others take an apikey).
SECRET_QUERY_KEY = re.compile(r"pass|pwd|secret|token|dsn|key|auth|cred|odbc", re.IGNORECASE)


def is_journal(url: str | None) -> bool:
    """True for a journal file path (no URL scheme), the embedded default included."""
    return url is None or "://" not in url


def is_shared_storage(url: str | None) -> bool:
    """True for server databases that workers on several hosts can share."""
    return not is_journal(url) and not str(url).startswith("sqlite")


def postgres_driver_url(url: str) -> str:
    """`postgresql://` with the psycopg2 driver when psycopg (3), SQLAlchemy's default, is absent."""
    if not url.startswith("postgresql://"):
        return url
    import importlib.util

    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2"):
        return "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    return url


def default_storage_url(root: str | Path = ".") -> str | None:
    """The embedded storage that exists under `root/results`: the journal `bench sweep` writes
    by default, else an SQLite file; None when neither exists."""
    root = Path(root)
    if (root / DEFAULT_STORAGE).exists():
        return str(root / DEFAULT_STORAGE)
    if (root / DEFAULT_SQLITE).exists():
        return f"sqlite:///{root / DEFAULT_SQLITE}"
    return None


def sqlite_file(url: str) -> Path:
    """The database file of a `sqlite:///PATH[?ARGS]` URL (its arguments are not the name)."""
    return Path(url.removeprefix("sqlite:///").split("?", 1)[0])


def missing_storage_reason(url: str) -> str | None:
    """Why `url` cannot hold studies (a local file that does not exist, or a URL
    `unsafe_storage_reason` refuses), or None."""
    unsafe = unsafe_storage_reason(url)
    if unsafe is not None:
        return unsafe
    if url.startswith("sqlite:///"):
        path = sqlite_file(url)
        if str(path) != ":memory:" and not path.exists():
            return f"no SQLite storage file at {path}"
    elif is_journal(url) and not Path(url).exists():
        return f"no journal storage file at {url}"
    return None


# ---------------------------------------------------------------------------------------------
# The journal file backend


def pid_alive(pid: int) -> bool:
    """True while process `pid` on this host exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child not yet reaped by its parent is a zombie: dead for our purpose
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class JournalLock:
    """An exclusive lock file `PATH.lock` (O_EXCL) holding `host pid`; stale ones are taken over.

    Works across processes on one host and across hosts on a shared file system (by age there).
    """

    def __init__(self, journal_path: str, grace_seconds: float = LOCK_GRACE_SECONDS) -> None:
        self.path = os.path.abspath(journal_path) + ".lock"
        self.grace_seconds = grace_seconds
        self.owner = f"{socket.gethostname()} {os.getpid()}"
        self.taken_over = 0  # stale locks this object removed (for tests and messages)

    def acquire(self) -> None:
        """Create the lock file, waiting (sleeping, never spinning) while a live owner holds it."""
        delay = 0.0005
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if self._take_over_if_stale():
                    continue
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
                continue
            try:
                os.write(fd, self.owner.encode())
            except BaseException:  # e.g. a full disk: leave no lock behind
                os.close(fd)
                self.release()
                raise
            os.close(fd)
            return

    def release(self) -> None:
        """Remove the lock file (it must be ours)."""
        with suppress(FileNotFoundError):
            os.unlink(self.path)

    def _take_over_if_stale(self) -> bool:
        """Remove the lock if its owner on this host is dead or it is older than the grace."""
        try:
            info = os.lstat(self.path)  # lstat: an old dangling symlink lock is judged too
            owner = (os.readlink(self.path) if os.path.islink(self.path)
                     else Path(self.path).read_text(errors="replace"))
        except FileNotFoundError:
            return True  # released meanwhile: try again at once
        except OSError:
            return False
        host, _, pid = owner.strip().partition(" ")
        dead = host == socket.gethostname() and pid.isdigit() and not pid_alive(int(pid))
        if not dead and time.time() - info.st_mtime <= self.grace_seconds:
            return False
        aside = f"{self.path}.{os.getpid()}.{time.monotonic_ns()}.stale"
        try:  # rename first: of several waiters exactly one takes a given stale lock over
            os.rename(self.path, aside)
        except FileNotFoundError:
            return True
        os.unlink(aside)
        self.taken_over += 1
        return True

    @contextmanager
    def held(self) -> Iterator[None]:
        """Hold the lock for the body."""
        self.acquire()
        try:
            yield
        finally:
            self.release()


def _base_backend() -> type:
    from optuna.storages.journal import BaseJournalBackend

    return BaseJournalBackend


class JournalCorruptError(UsageError):
    """A journal line in the middle of the file is not a record."""


def _make_journal_file_class() -> type:
    base = _base_backend()

    class JournalFile(base):  # type: ignore[misc, valid-type]
        """Optuna's journal file format with fenced torn tails, stale-lock takeover, group sync."""

        def __init__(self, path: str, *, readonly: bool = False,
                     lock_grace_seconds: float = LOCK_GRACE_SECONDS) -> None:
            self.path = str(path)
            self.readonly = readonly
            self.lock = JournalLock(self.path, lock_grace_seconds)
            # Where the next unread line starts: JournalStorage reads forward from the last
            # record it replayed, so one position serves every read but a fresh replay.
            self._read_number, self._read_offset = 0, 0
            self._read_fd: int | None = None
            self._write_fd: int | None = None
            self._batch_depth = 0
            self._lock_touched = 0.0
            self.repaired_bytes = 0
            if not readonly and not os.path.exists(self.path):
                with self.lock.held():
                    os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o644))
                _fsync_dir(self.path)

        def __del__(self, _close: Any = os.close) -> None:
            # No module globals here (`os.close` bound at definition, no `suppress`): at
            # interpreter exit they may already be None.
            for fd in (getattr(self, "_read_fd", None), getattr(self, "_write_fd", None)):
                if fd is not None:
                    try:  # noqa: SIM105 (contextlib may be torn down already)
                        _close(fd)
                    except OSError:
                        pass

        def read_logs(self, log_number_from: int) -> list[dict[str, Any]]:
            """The complete records from `log_number_from` on; a tail without newline is unseen."""
            if self._read_fd is None:
                self._read_fd = os.open(self.path, os.O_RDONLY)
            if log_number_from < self._read_number:
                self._read_number, self._read_offset = 0, 0
            number, offset = self._read_number, self._read_offset
            size = os.fstat(self._read_fd).st_size
            data = os.pread(self._read_fd, max(0, size - offset), offset)
            end = data.rfind(b"\n") + 1
            logs = []
            pos = 0
            while pos < end:
                nl = data.index(b"\n", pos)
                if number >= log_number_from:
                    try:
                        logs.append(json.loads(data[pos:nl + 1]))
                    except ValueError:
                        raise JournalCorruptError(
                            f"journal {self.path}: line {number + 1} (byte {offset + pos}) is "
                            "not a record; the file was damaged: restore it from a backup, or "
                            "keep the lines before it in a new file") from None
                pos = nl + 1
                number += 1
            self._read_number, self._read_offset = number, offset + end
            return logs

        def append_logs(self, logs: list[dict[str, Any]]) -> None:
            """Append whole lines under the lock, after fencing any torn tail; cut a failed write."""
            if self.readonly:
                raise UsageError(f"journal {self.path} was opened for reading only")
            data = ("\n".join(json.dumps(log, separators=(",", ":")) for log in logs)
                    + "\n").encode("utf-8")
            if self._write_fd is None:
                self._write_fd = os.open(self.path, os.O_RDWR | os.O_APPEND)
            fd = self._write_fd
            with self.lock.held() if not self._batch_depth else self._touching_lock():
                size = self._fence_torn_tail(fd)
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                except BaseException:
                    os.ftruncate(fd, size)  # a partial record never stays behind
                    raise

        @contextmanager
        def batch(self) -> Iterator[None]:
            """Hold the lock across several appends: one acquisition for a group's records.

            Records still go to the file at once, in order; other writers wait (readers never
            do) until the batch ends."""
            if self.readonly:
                yield
                return
            if self._batch_depth == 0:
                self.lock.acquire()
                self._lock_touched = time.monotonic()
            self._batch_depth += 1
            try:
                yield
            finally:
                self._batch_depth -= 1
                if self._batch_depth == 0:
                    self.lock.release()

        @contextmanager
        def _touching_lock(self) -> Iterator[None]:
            """Inside a batch: refresh the lock's age now and then, so no waiter takes it over."""
            now = time.monotonic()
            if now - self._lock_touched > 1.0:
                with suppress(OSError):
                    os.utime(self.lock.path)
                self._lock_touched = now
            yield

        def _fence_torn_tail(self, fd: int) -> int:
            """Cut bytes after the last newline (kept in PATH.torn); the clean size."""
            size = os.fstat(fd).st_size
            if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
                return size
            chunk = 1 << 16
            start = size
            while start > 0:
                lo = max(0, start - chunk)
                block = os.pread(fd, start - lo, lo)
                nl = block.rfind(b"\n")
                if nl >= 0:
                    start = lo + nl + 1
                    break
                start = lo
            tail = os.pread(fd, size - start, start)
            with open(self.path + ".torn", "ab") as fh:
                fh.write(tail + b"\n")
            os.ftruncate(fd, start)
            os.fsync(fd)
            self.repaired_bytes += len(tail)
            print(f"bench: note: journal {self.path} ended in a record cut off mid-write "
                  f"({len(tail)} bytes, kept in {self.path}.torn); removed it before appending",
                  file=sys.stderr)
            return start

        def sync(self) -> None:
            """fsync the journal: what was appended survives a machine crash."""
            if not self.readonly and self._write_fd is not None:
                os.fsync(self._write_fd)

    return JournalFile


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_JOURNAL_FILE_CLASS: type | None = None


def journal_file(path: str, *, readonly: bool = False,
                 lock_grace_seconds: float = LOCK_GRACE_SECONDS) -> Any:
    """A `JournalFile` backend (the class is made on first use: optuna loads lazily)."""
    global _JOURNAL_FILE_CLASS
    if _JOURNAL_FILE_CLASS is None:
        _JOURNAL_FILE_CLASS = _make_journal_file_class()
    return _JOURNAL_FILE_CLASS(path, readonly=readonly, lock_grace_seconds=lock_grace_seconds)


# ---------------------------------------------------------------------------------------------
# Opening


def _journal_storage_class() -> type:
    from optuna.storages.journal import JournalStorage

    class SyncedJournalStorage(JournalStorage):
        """Optuna's JournalStorage that keeps its backend at hand for `sync_storage`."""

        def __init__(self, backend: Any) -> None:
            self.nnbench_backend = backend
            super().__init__(backend)

    return SyncedJournalStorage


def _check_journal_path(path: Path, create: bool) -> None:
    """One-line errors for journal paths that cannot be a journal file."""
    label = str(path)
    if path.is_dir():
        raise UsageError(f"storage {label} is a folder; give a journal file path such as "
                         f"{path / 'optuna.journal'}")
    if path.exists() and not path.is_file():
        raise UsageError(f"storage {label} is not a regular file; give a journal file path such "
                         f"as {DEFAULT_STORAGE}")
    if not path.exists() and not create:
        raise UsageError(f"no journal storage file at {label}; run `make sweep` (or `bench "
                         "sweep`) first or pass --storage")
    parent = path.parent
    for p in (parent, *parent.parents):
        if p.exists():
            if not p.is_dir():
                raise UsageError(f"storage {label}: {p} is a file, not a folder; choose another "
                                 "--storage path")
            break
    if path.is_file() and not _starts_like_journal(path):
        # before the torn-tail repair could take a one-line file of another kind for a journal
        raise UsageError(f"storage {label} is not an Optuna journal (its first line is not a "
                         "journal record); pass another --storage")


def _starts_like_journal(path: Path) -> bool:
    """Whether the file is empty or starts like an Optuna journal record (`{"op_code": ...`),
    even when that first record was cut off mid-write."""
    try:
        with path.open("rb") as fh:
            head = fh.read(64).removeprefix(b"\xef\xbb\xbf").lstrip()  # a UTF-8 BOM too
    except OSError:
        return True  # unreadable: opening it says why
    if not head:
        return True
    if re.match(rb'\{\s*"op_code"\s*:', head):
        return True
    compact = re.sub(rb"\s+", b"", head)
    return b'{"op_code":'.startswith(compact)  # a first record torn within its first key


def open_storage(url: str | None, *, create: bool = True,
                 heartbeat_interval: int = HEARTBEAT_INTERVAL,
                 grace_period: int = GRACE_PERIOD) -> Any:
    """An Optuna storage: a journal file for a path (default), an RDB storage for a URL.

    `create=False` opens for reading: nothing is created or repaired (a missing file is an
    error). Every failure is a `UsageError` whose one line names the real cause, with the
    password masked.
    """
    import optuna

    if url is not None and not url.strip():
        raise UsageError("--storage is empty; give a journal file path or a database URL, or "
                         f"leave it out for {DEFAULT_STORAGE}")
    unsafe = unsafe_storage_reason(url)
    if unsafe is not None:
        raise UsageError(unsafe)
    if is_journal(url):
        path = Path(url or DEFAULT_STORAGE)
        _check_journal_path(path, create)
        try:
            if create:
                path.parent.mkdir(parents=True, exist_ok=True)
            return _journal_storage_class()(journal_file(str(path), readonly=not create))
        except UsageError:
            raise
        except OSError as exc:
            raise UsageError(f"cannot open storage {path}: {os_reason(exc)}; choose a writable "
                             "--storage path") from None
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            raise UsageError(f"storage {path} is not an Optuna journal ({type(exc).__name__} "
                             "while replaying it); pass another --storage") from None
    assert url is not None
    shown = display_url(url)
    _check_database_url(url, shown)
    full = postgres_driver_url(url)
    engine_kwargs: dict[str, Any] = {}
    if full.startswith("sqlite:///"):
        db = sqlite_file(full)
        if create:
            db.parent.mkdir(parents=True, exist_ok=True)
        elif not db.exists():
            raise UsageError(f"no SQLite storage file at {db}; run `make sweep` (or `bench "
                             "sweep`) first or pass --storage")
        engine_kwargs = {"connect_args": {"timeout": 60}}
    error: BaseException | None = None
    for attempt in range(5):  # workers starting together race to create the schema
        try:
            with quiet_optuna_warnings():
                # Optuna fills {SCHEMA_VERSION} in with str.format: a brace in a password
                # would be rewritten, or name part of it in the error
                template = full.replace("{", "{{").replace("}", "}}")
                return optuna.storages.RDBStorage(template, engine_kwargs=engine_kwargs,
                                                  heartbeat_interval=heartbeat_interval,
                                                  grace_period=grace_period,
                                                  skip_table_creation=not create)
        except Exception as exc:  # sqlalchemy raises many kinds; classify below
            error = exc
            if not _is_schema_race(exc):
                break
            time.sleep(0.5 + attempt)
    assert error is not None
    raise UsageError(f"cannot open storage {shown}: {storage_error_reason(error, url)}") from None


def _check_database_url(url: str, shown: str) -> None:
    """Refuse, before connecting, a URL whose port is not a number and an SQLite database that
    lives in memory (`sqlite://`, `sqlite:///:memory:`): a study there is lost when the command
    ends, so nothing could be resumed or reported."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except ValueError:  # SQLAlchemy reads the port with int()
        host = url.partition("://")[2].split("?", 1)[0].split("/", 1)[0].rpartition("@")[2]
        if host.startswith("[") and "]" not in host:
            raise UsageError(f"storage URL {shown}: the IPv6 address has no closing bracket; "
                             "write it as [::1]:5432") from None
        raise UsageError(f"storage URL {shown}: the port is not a number; write host:port "
                         "with digits, e.g. localhost:5432") from None
    except Exception:  # not a URL at all: the connection attempt says why
        return
    if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise UsageError(f"storage {shown} is an in-memory SQLite database, "
                         "lost when the command ends; give a file, e.g. sqlite:///study.db")


def _is_schema_race(exc: BaseException) -> bool:
    text = " ".join(str(e) for e in _chain(exc)).lower()
    return "already exists" in text or "duplicate key" in text or "unique constraint" in text


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        orig = getattr(current, "orig", None)
        if isinstance(orig, BaseException) and orig not in seen:
            seen.append(orig)
        current = current.__cause__ or current.__context__
    return seen


def storage_error_reason(exc: BaseException, url: str | None = None) -> str:
    """The real cause of a storage failure in words, with the fix, and no password."""
    chain = _chain(exc)
    text = " | ".join(str(e) for e in chain)
    low = text.lower()
    if ("password authentication failed" in low or "access denied" in low
            or ("role" in low and "does not exist" in low)):
        reason = "the server refused the user name or password; check them in the URL"
    elif "connection refused" in low:
        reason = "connection refused: no database server is listening there; start it or fix " \
                 "the host and port"
    elif "could not translate host name" in low or "name or service not known" in low:
        reason = "unknown host name; fix the host in the URL"
    elif "file is not a database" in low or "not a database" in low:
        reason = "the file is not an SQLite database; pass another --storage"
    elif "unable to open database file" in low:
        reason = "cannot open the SQLite file (missing folder or no permission)"
    elif "does not exist" in low and "database" in low:
        reason = "the database does not exist; create it first (e.g. createdb NAME)"
    elif "no module named" in low or "can't load plugin" in low:
        reason = f"no driver for this URL ({_first_line(chain[-1])}); install it, or pass " \
                 "--storage with postgresql://, sqlite:/// or a journal file path"
    elif "timeout" in low or "timed out" in low:
        reason = "the connection timed out; check the host and that the server is reachable"
    else:
        root = chain[-1]
        reason = f"{type(root).__name__}: {_first_line(root)}"
        if _shares_a_piece(reason, secrets_of(url)):  # e.g. a fragment of the password
            reason = f"{type(root).__name__} (its message would show part of the password)"
    return mask_secret(reason, url)


def _shares_a_piece(text: str, secrets: list[str], size: int = 4) -> bool:
    """Whether `text` holds any `size` characters in a row of one of `secrets`."""
    return any(secret[i:i + size] in text for secret in secrets
               for i in range(len(secret) - size + 1))


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def password_of(url: str | None) -> str | None:
    """The password in a database URL's user-info part, or None (journal paths and URLs
    without one)."""
    if not url or "://" not in url:
        return None
    from sqlalchemy.engine import make_url

    try:
        password = make_url(url).password
    except Exception:  # unparsable: take what sits between "user:" and "@"
        password = _raw_password(url)
    return str(password) if password else None


def secrets_of(url: str | None) -> list[str]:
    """Every secret a database URL holds, as given and as decoded: the user-info password and
    the values of secret query parameters (`SECRET_QUERY_KEY`); none for a journal path."""
    if not url or "://" not in url:
        return []
    query = url.split("?", 1)[1] if "?" in url else ""
    found = [password_of(url), _raw_password(url)]
    for index, part in enumerate(parts := query.split("&")):
        key, _, value = part.partition("=")
        if _secret_param(key, value):  # the value, and to the end of the URL
            found += [value, "&".join([value, *parts[index + 1:]])]  # (an unencoded '&')
    out: list[str] = []
    for secret in found:
        if secret:  # as typed, encoded, and decoded (a query reads + as a space)
            plain = unquote_plus(secret)
            out += [secret, unquote(secret), plain, quote(plain, safe=""),
                    quote(unquote(secret), safe="")]
    return sorted(set(out), key=len, reverse=True)  # longest first: no partial masking


def mask_secret(text: str, url: str | None) -> str:
    """`text` with the URL shown as `display_url` shows it, and any other occurrence of its
    secrets replaced by ***: anywhere for secrets of 4 characters or more, as a whole word
    for shorter ones (so a password "x" does not star every x of the message)."""
    if not url:
        return text
    if "://" not in url:  # a journal path shows as itself; user:pw@host without a scheme not
        return text.replace(url, display_url(url))
    text = text.replace(url, display_url(url))
    for secret in secrets_of(url):
        if len(secret) >= 4:
            text = text.replace(secret, "***")
        else:
            text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", "***", text)
    return text


def os_reason(exc: OSError) -> str:
    """An OSError's cause in words: 'No space left on device', 'Read-only file system', ..."""
    if exc.errno is not None:
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__


@contextmanager
def storage_batch(storage: Any) -> Iterator[None]:
    """Write a group's records under one journal lock (a no-op for databases)."""
    backend = getattr(storage, "nnbench_backend", None)
    if backend is None:
        yield
        return
    with backend.batch():
        yield


def sync_storage(storage: Any) -> None:
    """Make what was written durable (journal files: one fsync; databases commit per write)."""
    backend = getattr(storage, "nnbench_backend", None)
    if backend is not None:
        backend.sync()


@contextmanager
def quiet_optuna_warnings() -> Iterator[None]:
    """Silence Optuna's notes that features (heartbeats, QMC) are experimental, and that
    heartbeats are meant for `optimize` (we record them ourselves around ask/tell)."""
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")
        yield
