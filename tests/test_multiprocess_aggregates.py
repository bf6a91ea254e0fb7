"""Aggregates across the workers of a real gunicorn: exact totals, and dead workers' data retired.

gunicorn with 4 workers serves the demo app with ``multiprocess_dir`` set (an explicit directory
without ``--preload``, ``auto`` with it). A known number of requests goes in; every read of
``/monitoring/stats``, whichever worker answers, must show exactly those totals. Then one worker is
SIGKILLed: once gunicorn has replaced it, its counts have left the totals and its files are gone.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Final

import psutil
import pytest
import requests

from otel_flask_monitor.aggregates.wire import STATE_FILE
from tests.support.real_processes import (
    DEMO_APP,
    REPO,
    START_TIMEOUT_SECONDS,
    base_env,
    drive,
    free_port,
    stop_process,
    wait_for_port,
)

WORKERS: Final = 4
PRODUCTS: Final = 200
NOT_FOUND: Final = 30
ERRORS: Final = 20
TOTAL: Final = PRODUCTS + NOT_FOUND + ERRORS
# A deadline for what is certain to happen (the workers write every second): generous, because only a
# broken product ever waits it out.
WAIT_SECONDS: Final = 60.0


class Server:
    def __init__(self, process: subprocess.Popen[bytes], port: int, stderr: Path) -> None:
        self.process = process
        self.base_url = f"http://127.0.0.1:{port}"
        self.stderr = stderr

    def worker_pids(self) -> set[int]:
        try:
            return {child.pid for child in psutil.Process(self.process.pid).children()}
        except psutil.Error:
            return set()

    def stats(self) -> dict[str, Any]:
        response = requests.get(self.base_url + "/monitoring/stats", timeout=5)
        response.raise_for_status()
        document: dict[str, Any] = response.json()
        return document

    def diagnostics(self) -> str:
        return "\n".join(self.stderr.read_text(errors="replace").splitlines()[-40:])


@contextmanager
def gunicorn(env: dict[str, str], tmp_path: Path, *, preload: bool) -> Iterator[Server]:
    port = free_port()
    stderr_path = tmp_path / "gunicorn.stderr"
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(WORKERS),
        "--timeout",
        "30",
        "--graceful-timeout",
        "10",
        "--no-control-socket",  # gunicorn 23+ would otherwise share ~/.gunicorn/gunicorn.ctl
        *(["--preload"] if preload else []),
        DEMO_APP,
    ]
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=stderr)
    server = Server(process, port, stderr_path)
    try:
        wait_for_port(port, process, "gunicorn", server.diagnostics)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while len(server.worker_pids()) < WORKERS and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(server.worker_pids()) == WORKERS, server.diagnostics()
        yield server
    finally:
        if process.poll() is None:
            for pid in server.worker_pids():
                with suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            process.kill()
            process.wait(timeout=10)


def wait_for_stats(server: Server, predicate: Any, what: str) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_SECONDS
    document = server.stats()
    while not predicate(document):
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not seen within {WAIT_SECONDS}s; last document: {document['totals']}")
        time.sleep(0.2)
        document = server.stats()
    return document


def wait_for_fresh_files(server: Server, directory: Path, since: float) -> None:
    """Wait until every live worker's files hold everything it recorded before ``since``.

    A write snapshots the store, then stamps ``written_at_unix``; so the first write stamped after
    ``since`` may have snapshotted just before it, but the write after that one certainly did not.
    """
    first_after: dict[str, float] = {}
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        pending = []
        for pid in server.worker_pids():
            for state_file in directory.glob(f"{pid}-*/{STATE_FILE}"):
                with suppress(OSError, ValueError):
                    written = json.loads(state_file.read_text())["written_at_unix"]
                    name = state_file.parent.name
                    if name not in first_after and written > since:
                        first_after[name] = written
                    if name not in first_after or written <= first_after[name]:
                        pending.append(name)
        if not pending:
            return
        if time.monotonic() > deadline:
            pytest.fail(
                f"workers {pending} did not write twice within {WAIT_SECONDS}s\n{server.diagnostics()}"
            )
        time.sleep(0.1)


def route_counts(document: dict[str, Any]) -> dict[tuple[str, str], int]:
    return {(row["method"], row["route"]): row["requests"] for row in document["routes"]}


@pytest.mark.slow
@pytest.mark.parametrize("preload", [False, True], ids=["fork-then-load", "preload"])
def test_stats_show_exact_totals_of_all_workers_and_retire_dead_ones(preload: bool, tmp_path: Path) -> None:
    temp_dir = tmp_path / "tmp"
    temp_dir.mkdir()
    shared = tmp_path / "aggregates"
    env = base_env(
        f"http://127.0.0.1:{free_port()}",
        OTEL_SDK_DISABLED="true",
        OTEL_FLASK_MONITOR_MULTIPROCESS_DIR="auto" if preload else str(shared),
        TMPDIR=str(temp_dir),
    )
    with gunicorn(env, tmp_path, preload=preload) as server:
        master = server.process.pid
        paths = (
            ["/api/products"] * PRODUCTS
            + [f"/no-such-page/{n}" for n in range(NOT_FOUND)]
            + ["/simulate-error"] * ERRORS
        )
        load = drive(server.base_url, paths, concurrency=8)
        assert load.failed == ERRORS  # drive counts a 5xx as failed: exactly the simulated errors

        wait_for_stats(server, lambda d: d["totals"]["requests"] == TOTAL, f"{TOTAL} requests")
        # The worker that answers counts its own requests live, the others' as of their last write
        # (every WRITE_INTERVAL_SECONDS). A read showed every request: each worker had recorded all of
        # its own by then, and once each has written after that, every read is exact.
        recorded_by = time.time()
        directory = shared if not preload else next((temp_dir).glob("otel-flask-monitor-*/*"))
        wait_for_fresh_files(server, directory, recorded_by)
        # Every read, whichever worker answers it, shows the same exact totals.
        answered_by: set[int] = set()
        for _ in range(40):
            document = server.stats()
            answered_by.add(document["served_by"])
            assert document["per_process"] is False
            totals = document["totals"]
            assert (totals["requests"], totals["client_errors"], totals["server_errors"]) == (
                TOTAL,
                NOT_FOUND,
                ERRORS,
            )
            assert route_counts(document) == {
                ("GET", "/api/products"): PRODUCTS,
                ("GET", "<unmatched>"): NOT_FOUND,
                ("GET", "/simulate-error"): ERRORS,
            }
            assert sum(w["requests"] for w in document["workers"]) == TOTAL
            assert {w["pid"] for w in document["workers"]} <= server.worker_pids()
            assert len(document["recent_errors"]) == ERRORS
            if len(answered_by) >= 2:
                break
        assert len(answered_by) >= 2, "every read reached the same worker"
        assert answered_by <= server.worker_pids()
        served = {w["pid"]: w["requests"] for w in document["workers"] if w["requests"]}
        assert len(served) >= 2, document["workers"]  # the load was spread

        if preload:  # auto: one directory per server, named after the master
            assert directory.name.startswith(f"{master}-")
        victim = max(served, key=lambda pid: served[pid])
        victim_dirs = list(directory.glob(f"{victim}-*"))
        assert len(victim_dirs) == 1, sorted(p.name for p in directory.iterdir())

        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline:
            pids = server.worker_pids()
            if victim not in pids and len(pids) == WORKERS:
                break
            time.sleep(0.1)
        assert victim not in server.worker_pids()

        # Dropped, not kept: the dead worker's requests leave the totals.
        after = TOTAL - served[victim]
        for _ in range(10):
            document = server.stats()
            assert document["totals"]["requests"] == after, (served, document["workers"])
            assert victim not in {w["pid"] for w in document["workers"]}
        assert not victim_dirs[0].exists()

        # The replacement worker counts like the others.
        more = drive(server.base_url, ["/api/products"] * 40, concurrency=8)
        assert more.failed == 0
        wait_for_stats(server, lambda d: d["totals"]["requests"] == after + 40, "the new requests")
        wait_for_fresh_files(server, directory, time.time())
        for _ in range(5):
            assert server.stats()["totals"]["requests"] == after + 40

        assert stop_process(server.process, signal.SIGTERM, 20) == 0, server.diagnostics()
    # Workers that exit remove their own files; nothing of this server is left to retire.
    assert not [p for p in directory.iterdir() if not p.name.startswith(".")], list(directory.iterdir())
    stderr = server.stderr.read_text(errors="replace")
    assert "WORKER TIMEOUT" not in stderr
    assert "otel_flask_monitor: multiprocess" not in stderr
