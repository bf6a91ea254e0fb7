"""Aggregates across the workers of a pre-fork server, through files in a shared directory.

Modelled on prometheus_client's multiprocess mode: every worker keeps recording into its own
in-memory :class:`~otel_flask_monitor.aggregates.AggregateStore` (the request path is unchanged) and a
daemon thread writes the store's window to ``<dir>/<pid>-<start ms>/`` every second. The worker that
answers ``/monitoring/stats`` merges its own live window with the files of the other live workers of
the same server.

Layout of a worker's directory (all JSON, each written to a temporary file then ``os.replace``d, so
a reader sees a whole old file or a whole new one):

- ``slot-<number>.json``: a closed slot of the window (immutable: written once, deleted when it leaves
  the window). A reader loads it once and keeps it in its running sums.
- ``state.json``: identity (pid, process start time, server), window settings, the numbers of the
  closed slots present, the slot still being written, the recent errors. Rewritten every interval.

Slots are numbered ``unix_time // slot_seconds``, so the workers' slots align without coordination.

Workers of one server are the processes with the same parent (the gunicorn master): the parent's
pid and start time are the ``server`` id. A directory whose process is gone, or whose pid now belongs
to a process started at another time, is retired: skipped and deleted (its counts leave the totals).
Live processes of another server are skipped and left alone. Unreadable files are skipped.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import re
import shutil
import stat
import tempfile
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import psutil

from otel_flask_monitor.aggregates import (
    AggregateStore,
    MalformedStateError,
    WindowState,
    decode_errors,
    decode_slot,
    encode_slot,
)

if TYPE_CHECKING:
    from otel_flask_monitor.dispatch import FailureReporter

AUTO: Final = "auto"
"""``multiprocess_dir=auto``: a private directory per server under the system temp directory."""
WRITE_INTERVAL_SECONDS: Final = 1.0
FORMAT: Final = 1
STATE_FILE: Final = "state.json"
MAX_FILE_BYTES: Final = 32 * 1024 * 1024
"""Files are bounded by (max_routes + 1) x latency buckets per slot; anything bigger is not ours."""

_NAME: Final = re.compile(r"^(\d+)-(\d+)$")
_START_TOLERANCE_MS: Final = 10

_logger = logging.getLogger("otel_flask_monitor")


def _start_ms(create_time: float) -> int:
    return round(create_time * 1000)


def process_start_ms(pid: int) -> int | None:
    """Start time (ms since the epoch) of a running process, None if there is none (or a zombie)."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return _start_ms(process.create_time())
    except psutil.NoSuchProcess:
        return None


def is_alive(pid: int, start_ms: int) -> bool:
    """Is the process that had this pid and start time still running (and not a reused pid)?"""
    try:
        current = process_start_ms(pid)
    except psutil.Error:  # AccessDenied: it exists; we cannot tell more
        return True
    return current is not None and abs(current - start_ms) <= _START_TOLERANCE_MS


@dataclass(frozen=True, slots=True)
class Identity:
    """Who writes: the process (pid and start time) and its server (the parent's pid and start)."""

    pid: int
    start_ms: int
    server: str

    @property
    def name(self) -> str:
        return f"{self.pid}-{self.start_ms}"

    @classmethod
    def current(cls) -> Identity:
        pid, parent = os.getpid(), os.getppid()
        own = process_start_ms(pid) or 0
        try:
            parent_start = process_start_ms(parent) or 0
        except psutil.Error:
            parent_start = 0
        return cls(pid, own, f"{parent}-{parent_start}")


def retire_dead(directory: Path) -> list[str]:
    """Delete every ``<pid>-<start ms>`` entry of ``directory`` whose process is gone."""
    retired = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(directory):
            match = _NAME.match(entry.name)
            if match and not is_alive(int(match[1]), int(match[2])):
                shutil.rmtree(entry.path, ignore_errors=True)
                retired.append(entry.name)
    return retired


def _private_dir(path: Path) -> Path:
    """Create ``path`` (mode 0700) if needed; refuse one that is a symlink or someone else's."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise RuntimeError(f"multiprocess_dir {path} is not a directory")
    getuid = getattr(os, "getuid", None)
    if getuid is not None and info.st_uid != getuid():
        raise RuntimeError(f"multiprocess_dir {path} belongs to another user")
    return path


def resolve_directory(setting: str, identity: Identity) -> Path:
    """The directory the workers of this server share; ``auto``: one per server under the temp dir
    (``<tmp>/otel-flask-monitor-<uid>/<master pid>-<master start ms>``), where the directories of
    servers that are gone are deleted."""
    if setting.strip().lower() != AUTO:
        return _private_dir(Path(setting))
    base = _private_dir(
        Path(tempfile.gettempdir()) / f"otel-flask-monitor-{getattr(os, 'getuid', lambda: 0)()}"
    )
    retire_dead(base)
    return _private_dir(base / identity.server)


def _write_json(path: Path, data: Any) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(json.dumps(data, separators=(",", ":")).encode())
    os.replace(temporary, path)


def _read_json(path: Path) -> Any:
    with path.open("rb") as handle:
        data = handle.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise ValueError(f"{path} is larger than {MAX_FILE_BYTES} bytes")
    return json.loads(data)


class MultiprocessAggregates:
    """Shares one store's window with the other workers of the server and merges theirs on read.

    ``start()`` begins writing (a daemon thread, every ``interval`` seconds; after ``fork`` the child
    starts its own); :meth:`snapshot` is the merged ``/monitoring/stats`` document. ``identity`` is for
    tests (default: this process, re-read after ``fork``).
    """

    def __init__(
        self,
        store: AggregateStore,
        directory: str,
        *,
        interval: float = WRITE_INTERVAL_SECONDS,
        failures: FailureReporter | None = None,
        identity: Identity | None = None,
    ) -> None:
        self.store = store
        self.setting = directory
        self.interval = interval
        self._failures = failures
        self._fixed_identity = identity
        self._reset()
        _INSTANCES.add(self)  # closed at exit, held weakly: an exchange goes with its app

    def _reset(self) -> None:
        self._lock = threading.Lock()  # serialises reads (the merger is not thread-safe)
        self._write_lock = threading.Lock()
        self._merger = self.store.merger()
        self._identity: Identity | None = self._fixed_identity
        self._directory: Path | None = None
        self._written: set[int] = set()
        self._wrote_state = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def identity(self) -> Identity:
        if self._identity is None:
            self._identity = Identity.current()
        return self._identity

    @property
    def directory(self) -> Path:
        if self._directory is None:
            self._directory = resolve_directory(self.setting, self.identity)
        return self._directory

    @property
    def own_directory(self) -> Path:
        return self.directory / self.identity.name

    # -- writing ---------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="otel-flask-monitor-multiprocess", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        stop = self._stop
        while not stop.wait(self.interval):
            self._write_safely()

    def _write_safely(self) -> None:
        try:
            self.write()
        except Exception:
            if self._failures is not None:
                self._failures.report("multiprocess writer")
            else:
                _logger.debug("otel_flask_monitor: writing the aggregates failed", exc_info=True)

    def write(self) -> None:
        """Write this process's window now (the thread calls it every interval)."""
        with self._write_lock:
            state = self.store.window_state()
            if not self._wrote_state and state.current is None and not state.closed:
                return  # a process that served nothing (a preloading master) writes nothing
            if not self._wrote_state:
                retire_dead(self.directory)  # what a previous run of the server left behind
            store = self.store
            own = _private_dir(self.own_directory)
            newest = max(int(store.clock() // store.slot_seconds), state.newest_number)
            oldest = newest - store.slot_count + 1
            for number, slot in state.closed.items():
                if number >= oldest and number not in self._written:
                    _write_json(own / f"slot-{number}.json", encode_slot(slot))
                    self._written.add(number)
            closed = sorted(n for n in self._written if n >= oldest)
            identity = self.identity
            _write_json(
                own / STATE_FILE,
                {
                    "format": FORMAT,
                    "pid": identity.pid,
                    "start_ms": identity.start_ms,
                    "server": identity.server,
                    "written_at_unix": store.clock(),
                    "window_seconds": store.window_seconds,
                    "slot_seconds": store.slot_seconds,
                    "started_unix": state.started_unix,
                    "newest_number": state.newest_number,
                    "tracked_routes": state.tracked_routes,
                    "closed": closed,
                    "current": None if state.current is None else encode_slot(state.current),
                    "recent_errors": state.recent_errors,
                    "recent_client_errors": state.recent_client_errors,
                },
            )
            self._wrote_state = True
            for number in [n for n in self._written if n < oldest]:
                with contextlib.suppress(FileNotFoundError):
                    (own / f"slot-{number}.json").unlink()
                self._written.discard(number)

    def close(self) -> None:
        """Stop writing and remove this process's files (at exit: its counts leave the totals, as a
        dead worker's do)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2)
        identity, directory = self._identity, self._directory
        if identity is not None and directory is not None and identity.pid == os.getpid():
            shutil.rmtree(directory / identity.name, ignore_errors=True)

    def after_fork_in_child(self) -> None:
        """In a forked child: a new writer with a new identity and an empty store."""
        was_started = self._thread is not None
        self.store.after_fork_in_child()
        self._reset()
        if was_started:
            self.start()

    # -- reading ---------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The ``/monitoring/stats`` document over this process and the other live workers."""
        store = self.store
        now = store.clock()
        own = store.window_state()
        identity = self.identity
        oldest = max(int(now // store.slot_seconds), own.newest_number) - store.slot_count + 1
        sources: dict[str, WindowState] = {identity.name: own}
        workers = {identity.name: identity.pid}
        with self._lock:
            directory = self.directory
            with contextlib.suppress(FileNotFoundError):
                for entry in sorted(os.scandir(directory), key=lambda e: e.name):
                    match = _NAME.match(entry.name)
                    if match is None or entry.name == identity.name:
                        continue
                    if not is_alive(int(match[1]), int(match[2])):
                        shutil.rmtree(entry.path, ignore_errors=True)
                        continue
                    state = self._load(Path(entry.path), entry.name, oldest)
                    if state is not None:
                        sources[entry.name] = state
                        workers[entry.name] = int(match[1])
            document = self._merger.document(sources, now)
        document["per_process"] = False
        document["served_by"] = identity.pid
        document["workers"] = sorted(
            (
                {"pid": workers[name], "requests": _requests_in_window(state, oldest)}
                for name, state in sources.items()
            ),
            key=lambda worker: worker["pid"],
        )
        return document

    def _load(self, path: Path, name: str, oldest: int) -> WindowState | None:
        """A live worker's window, or None when it is unreadable, of another server or of other settings."""
        try:
            return self._parse(path, name, oldest)
        except (OSError, ValueError, KeyError, TypeError):
            # Not there yet (a worker that just started), or not ours to read: skipped, never fatal.
            _logger.debug("otel_flask_monitor: skipping the aggregates in %s", path, exc_info=True)
            return None

    def _parse(self, path: Path, name: str, oldest: int) -> WindowState:
        raw = _read_json(path / STATE_FILE)
        store = self.store
        expected = {
            "format": FORMAT,
            "server": self.identity.server,
            "slot_seconds": store.slot_seconds,
            "window_seconds": store.window_seconds,
        }
        if not isinstance(raw, dict) or any(raw.get(key) != value for key, value in expected.items()):
            raise MalformedStateError("another format, server or window")
        closed = {}
        for number in raw["closed"]:
            if type(number) is not int:
                raise MalformedStateError(f"not a slot number: {number!r}")
            if number < oldest:
                continue
            slot = self._merger.held_slot(name, number)
            if slot is None:
                try:
                    slot = decode_slot(_read_json(path / f"slot-{number}.json"))
                except FileNotFoundError:
                    continue  # left the window and was deleted since the state was written
                if slot.number != number:
                    raise MalformedStateError(f"slot-{number}.json holds slot {slot.number}")
            closed[number] = slot
        current, newest_number = raw["current"], raw["newest_number"]
        started_unix, tracked_routes = raw["started_unix"], raw["tracked_routes"]
        if type(newest_number) is not int or type(tracked_routes) is not int:
            raise MalformedStateError("malformed newest_number or tracked_routes")
        if not isinstance(started_unix, (int, float)):
            raise MalformedStateError("malformed started_unix")
        return WindowState(
            started_unix=float(started_unix),
            newest_number=newest_number,
            closed=closed,
            current=None if current is None else decode_slot(current),
            recent_errors=decode_errors(raw["recent_errors"]),
            recent_client_errors=decode_errors(raw["recent_client_errors"]),
            tracked_routes=tracked_routes,
        )


def _requests_in_window(state: WindowState, oldest: int) -> int:
    closed = sum(slot.total.requests for number, slot in state.closed.items() if number >= oldest)
    current = state.current
    return closed + (current.total.requests if current is not None and current.number >= oldest else 0)


_INSTANCES: Final[weakref.WeakSet[MultiprocessAggregates]] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for instance in list(_INSTANCES):
        instance.after_fork_in_child()


@atexit.register
def _close_all() -> None:
    for instance in list(_INSTANCES):
        instance.close()
