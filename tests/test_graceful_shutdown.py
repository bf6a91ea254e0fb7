"""Graceful shutdown flushes every queued record of a completed request: nothing is lost at exit.

The batch delays are long (60 s), so at shutdown every record is still queued: what arrives at the
Loki stand-in afterwards is exactly what the exit flush delivered.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Final

import pytest

from tests.support.loki_receiver import LokiReceiver
from tests.support.real_processes import (
    NO_TIMED_EXPORT,
    REPO,
    Gunicorn,
    base_env,
    drive,
    free_port,
    stderr_report,
    stop_process,
    tagged_paths,
    wait_for_port,
)

pytestmark = pytest.mark.slow

# Below the default export batch (512): under NO_TIMED_EXPORT only the shutdown flush sends them.
REQUESTS: Final = 200


def _expected_queries(count: int) -> set[str]:
    return {f"phase=exit&i={n}" for n in range(count)}


@pytest.mark.parametrize("preload", [False, True], ids=["fork-then-load", "preload"])
def test_sigterm_to_gunicorn_flushes_every_record(preload: bool, tmp_path: Path) -> None:
    with LokiReceiver() as loki:
        env = base_env(loki.otlp_endpoint, **NO_TIMED_EXPORT)
        with Gunicorn(env, tmp_path, workers=2, preload=preload) as server:
            load = drive(server.base_url, tagged_paths("exit", REQUESTS), concurrency=4)
            before = len(loki.entries())
            started = time.monotonic()
            code = server.stop(signal.SIGTERM)
            stop_seconds = time.monotonic() - started
            stderr = server.stderr_lines()
        # The workers' exports were answered before they exited (the receiver stores, then answers):
        # with every sender gone, this is all that will ever arrive.
        entries = loki.entries()

    assert load.failed == 0
    assert before == 0, "records left before shutdown: the test would not show the exit flush"
    assert code == 0, stderr[-30:]
    # Well inside gunicorn's graceful timeout (15 s), after which it would kill the workers mid-flush.
    assert stop_seconds < 15, stop_seconds
    queries = [entry.get("url_query") for entry in entries]
    assert len(queries) == REQUESTS, len(queries)
    assert set(queries) == _expected_queries(REQUESTS)
    warnings, _, noise = stderr_report(stderr)
    assert warnings == [], stderr
    assert noise == [], stderr
    assert not [line for line in stderr if "could not be delivered" in line]


def test_normal_exit_of_python_app_flushes_every_record(tmp_path: Path) -> None:
    """``python -m otel_flask_monitor.demo`` (werkzeug), stopped with Ctrl-C: a normal interpreter exit."""
    count = 150
    with LokiReceiver() as loki:
        port = free_port()
        out = (tmp_path / "demo.out").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "otel_flask_monitor.demo", "--port", str(port)],
            env=base_env(loki.otlp_endpoint, **NO_TIMED_EXPORT),
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        out.close()
        log = tmp_path / "demo.out"
        try:
            wait_for_port(port, process, "demo", lambda: log.read_text(errors="replace"))
            load = drive(f"http://127.0.0.1:{port}", tagged_paths("exit", count), concurrency=4)
            before = len(loki.entries())
            code = stop_process(process, signal.SIGINT, timeout=30)
        finally:
            stop_process(process, signal.SIGKILL)
        entries = loki.entries()  # the process has exited: nothing more will arrive

    assert load.failed == 0
    assert before == 0
    assert code == 0, log.read_text(errors="replace")[-2000:]
    queries = [entry.get("url_query") for entry in entries]
    assert len(queries) == count
    assert set(queries) == _expected_queries(count)
