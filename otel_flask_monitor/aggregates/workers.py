"""Who the workers of a server are and where their files live, and the whole-file writes and reads.

Process identity and liveness, the shared directory, whole-file writes and bounded reads (what the
files hold: wire.py).

Workers of one server are the processes with the same parent (the gunicorn master): the parent's pid
and start time are the ``server`` id. Each worker writes under ``<dir>/<pid>-<start ms>/``; a directory
whose process is gone, or whose pid now belongs to a process started at another time, is retired.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

import psutil

from otel_flask_monitor.aggregates.wire import MAX_FILE_BYTES

_logger = logging.getLogger("otel_flask_monitor")

_T = TypeVar("_T")


def guarded_read(path: Path, read: Callable[..., _T], *arguments: Any) -> _T | None:
    """``read(path, *arguments)``, or None when a file is unreadable, of another server or window."""
    try:
        return read(path, *arguments)
    except (OSError, ValueError, KeyError, TypeError):
        # Not there yet (a worker that just started), or not ours to read: skipped, never fatal.
        _logger.debug("otel_flask_monitor: skipping the aggregates in %s", path, exc_info=True)
        return None


AUTO: Final = "auto"
"""``multiprocess_dir=auto``: a private directory per server under the system temp directory."""

_NAME: Final = re.compile(r"^(\d+)-(\d+)$")
_START_TOLERANCE_MS: Final = 10


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


def live_workers(directory: Path, own_name: str = "") -> list[tuple[str, int]]:
    """(name, pid) of the live processes' ``<pid>-<start ms>`` entries of ``directory`` but ``own_name``,
    by name; the entries of processes that are gone are retired (deleted) on the way."""
    live = []
    with contextlib.suppress(FileNotFoundError):
        for entry in sorted(os.scandir(directory), key=lambda e: e.name):
            match = _NAME.match(entry.name)
            if match is None or entry.name == own_name:
                continue
            if is_alive(int(match[1]), int(match[2])):
                live.append((entry.name, int(match[1])))
            else:
                shutil.rmtree(entry.path, ignore_errors=True)
    return live


def private_dir(path: Path) -> Path:
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
        return private_dir(Path(setting))
    base = private_dir(
        Path(tempfile.gettempdir()) / f"otel-flask-monitor-{getattr(os, 'getuid', lambda: 0)()}"
    )
    live_workers(base)  # retires the servers that are gone
    return private_dir(base / identity.server)


def write_json(path: Path, data: Any) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(json.dumps(data, separators=(",", ":")).encode())
    os.replace(temporary, path)


def read_bytes(path: Path) -> bytes:
    with path.open("rb") as handle:
        data = handle.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise ValueError(f"{path} is larger than {MAX_FILE_BYTES} bytes")
    return data


def read_json(path: Path) -> Any:
    return json.loads(read_bytes(path))
