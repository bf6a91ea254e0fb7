"""Real processes for tests that start servers and collectors (a helper module, not a test file).

- :func:`free_port`, :func:`wait_for_port`, :func:`stop_process`: the basics every such test needs;
  :func:`require_tool` fails (never skips) when a required system tool is missing.
- :class:`Gunicorn`: the demo app under a real gunicorn on 127.0.0.1 (a free port), stderr in a file.
- :class:`Rotel`: a real Collector process (``rotel-agent``, found by :func:`rotel_agent`) that
  forwards OTLP/HTTP to a receiver.
- :func:`drive`: a bounded number of requests from a thread pool, with their latencies and failures.

Everything listens on and talks to 127.0.0.1 only; every wait is bounded; callers stop processes in
``finally`` (the classes are context managers that do it).
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import psutil
import pytest
import requests

from tests.support.loki_receiver import LokiEntry

REPO: Final = Path(__file__).resolve().parents[2]
DEMO_APP: Final = "otel_flask_monitor.demo.app:create_app()"
START_TIMEOUT_SECONDS: Final = 30.0
STOP_TIMEOUT_SECONDS: Final = 20.0

# What the SDK writes on every failed or retried export; the monitor must replace it with one line.
FAST_EXPORT: Final = {
    "OTEL_BLRP_SCHEDULE_DELAY": "100",
    "OTEL_BSP_SCHEDULE_DELAY": "100",
    "OTEL_METRIC_EXPORT_INTERVAL": "500",
}
"""A child process's batches and metrics leave within a fraction of a second; the tests wait (with a
deadline) on what arrives, never on these periods."""
NO_TIMED_EXPORT: Final = {
    "OTEL_BLRP_SCHEDULE_DELAY": "600000",
    "OTEL_BSP_SCHEDULE_DELAY": "600000",
    "OTEL_METRIC_EXPORT_INTERVAL": "600000",
}
"""Nothing leaves on a timer while a test runs: only a full batch, a flush or the shutdown sends."""
SDK_NOISE: Final = ("Transient error", "Failed to export", "Queue full", "Exception while exporting")
OUTAGE_WARNING: Final = "telemetry export to"
RECOVERY_LINE: Final = "telemetry export recovered"


def require_tool(tool: str, purpose: str) -> str:
    """The path of a required system tool; fails the test (never skips) when it is missing."""
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool!r} is not on PATH: {purpose} (.ci/run installs it)", pytrace=False)
    return path


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (until someone binds it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(
    port: int, process: subprocess.Popen[Any], name: str, diagnostics: Callable[[], str]
) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{name} exited with {process.returncode} before listening:\n{diagnostics()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        except OSError:
            time.sleep(0.05)
        else:
            return
    pytest.fail(
        f"{name} did not listen on 127.0.0.1:{port} within {START_TIMEOUT_SECONDS}s:\n{diagnostics()}"
    )


def stop_process(
    process: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 10.0
) -> int | None:
    """Signal, wait (bounded), then kill. Returns the exit code of a graceful exit, None if killed."""
    if process.poll() is not None:
        return process.returncode
    try:
        process.send_signal(sig)
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
        return None


def base_env(endpoint: str, **extra: str) -> dict[str, str]:
    """The test's environment without any OTEL_* variable of the caller's, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTEL_FLASK_MONITOR_"))}
    env["PYTHONPATH"] = str(REPO)
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
    env["OTEL_EXPORTER_OTLP_PROTOCOL"] = "http/protobuf"
    # Every attribute: these tests tag requests by `url_query` (phase_of) and check the whole schema;
    # that the default set answers the shipped queries is tests/test_log_attributes.py's.
    env["OTEL_FLASK_MONITOR_LOG_ATTRIBUTES"] = "full"
    env.update(extra)
    return env


class Gunicorn:
    """``gunicorn '<app>'`` on 127.0.0.1:<free port>; stderr (the app's warnings) kept in a file."""

    def __init__(
        self,
        env: Mapping[str, str],
        log_dir: Path,
        *,
        workers: int = 1,
        threads: int = 1,
        preload: bool = False,
        app: str = DEMO_APP,
        name: str = "gunicorn",
    ) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.stderr_path = log_dir / f"{name}.stderr"
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            "--bind",
            f"127.0.0.1:{self.port}",
            "--workers",
            str(workers),
            "--graceful-timeout",
            "15",
            "--timeout",
            "30",
            # gunicorn >= 24 opens a control socket at one fixed path per user; concurrent servers
            # would fight over it, and nothing here uses it.
            "--no-control-socket",
        ]
        if threads > 1:
            command += ["--worker-class", "gthread", "--threads", str(threads)]
        if preload:
            command.append("--preload")
        command.append(app)
        self._stderr = self.stderr_path.open("wb")
        self.process = subprocess.Popen(
            command, env=dict(env), cwd=REPO, stdout=subprocess.DEVNULL, stderr=self._stderr
        )
        self.workers = workers

    def __enter__(self) -> Gunicorn:
        try:
            self.wait_ready()
        except BaseException:
            self.kill()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.kill()

    def stderr_lines(self) -> list[str]:
        self._stderr.flush()
        return self.stderr_path.read_text(errors="replace").splitlines()

    def diagnostics(self) -> str:
        return "\n".join(self.stderr_lines()[-60:])

    def wait_ready(self) -> None:
        wait_for_port(self.port, self.process, "gunicorn", self.diagnostics)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if len(self.worker_pids()) == self.workers:
                try:
                    # The monitor records no request of its own routes: counts in tests stay exact.
                    if requests.get(self.base_url + "/monitoring/health", timeout=5).status_code == 200:
                        return
                except requests.RequestException:
                    pass
            time.sleep(0.1)
        pytest.fail(f"gunicorn workers not ready within {START_TIMEOUT_SECONDS}s:\n{self.diagnostics()}")

    def worker_pids(self) -> list[int]:
        try:
            return sorted(child.pid for child in psutil.Process(self.process.pid).children())
        except psutil.Error:
            return []

    def worker_rss(self) -> int:
        """Resident memory of all workers together, in bytes."""
        total = 0
        for pid in self.worker_pids():
            with contextlib.suppress(psutil.Error):
                total += psutil.Process(pid).memory_info().rss
        return total

    def health(self) -> dict[str, Any]:
        response = requests.get(self.base_url + "/monitoring/health", timeout=5)
        response.raise_for_status()
        document: dict[str, Any] = response.json()
        return document

    def signal_counts(self, signal_name: str = "logs") -> dict[str, Any]:
        """``telemetry.signals[<signal>]`` of ``/monitoring/health`` (of the worker that answered)."""
        for entry in self.health()["telemetry"]["signals"]:
            if entry["signal"] == signal_name:
                found: dict[str, Any] = entry
                return found
        raise AssertionError(f"no {signal_name!r} signal in /monitoring/health")

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        code = stop_process(self.process, sig, STOP_TIMEOUT_SECONDS)
        self._stderr.flush()
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            for pid in self.worker_pids():
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            self.process.kill()
            self.process.wait(timeout=10)
        self._stderr.close()


def rotel_agent() -> Path:
    import rotel

    agent = Path(rotel.__file__).parent / "rotel-agent"
    if not agent.is_file():
        pytest.fail(f"rotel-agent not found in the rotel package at {agent}", pytrace=False)
    return agent


class Rotel:
    """A real Collector process: OTLP/HTTP in on ``http_port``, OTLP/HTTP out to ``forward_to``."""

    def __init__(self, forward_to: str, log_dir: Path, http_port: int | None = None) -> None:
        self.http_port = http_port or free_port()
        self.grpc_port = free_port()
        self.forward_to = forward_to
        self.log_dir = log_dir
        self.process: subprocess.Popen[bytes] | None = None
        self._starts = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> None:
        self._starts += 1
        out = (self.log_dir / f"rotel-{self._starts}.out").open("wb")
        self.process = subprocess.Popen(
            [
                str(rotel_agent()),
                "start",
                "--otlp-http-endpoint",
                f"127.0.0.1:{self.http_port}",
                "--otlp-grpc-endpoint",
                f"127.0.0.1:{self.grpc_port}",
                "--exporter",
                "otlp",
                "--otlp-exporter-protocol",
                "http",
                "--otlp-exporter-endpoint",
                self.forward_to,
                "--batch-timeout",
                "100ms",
                "--pid-file",
                str(self.log_dir / "rotel.pid"),
                "--log-file",
                str(self.log_dir / "rotel.log"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        out.close()
        process = self.process
        wait_for_port(self.http_port, process, "rotel-agent", self.output)

    def output(self) -> str:
        """The end of what the current rotel-agent printed (for failure messages)."""
        return (self.log_dir / f"rotel-{self._starts}.out").read_text(errors="replace")[-3000:]

    def stop(self) -> int | None:
        """SIGTERM: rotel forwards what it has batched, then exits (seen: records held by a 20 s batch
        timeout arrive before it exits). Returns its exit code, None if it had to be killed."""
        if self.process is None:
            return None
        return stop_process(self.process, signal.SIGTERM, STOP_TIMEOUT_SECONDS)

    def kill(self) -> None:
        """SIGKILL: a crash, not a shutdown (what it had buffered is gone)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def __enter__(self) -> Rotel:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.kill()


@dataclass(frozen=True)
class Load:
    """What a batch of app requests saw."""

    sent: int
    failed: int
    latencies_ms: list[float]

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies_ms, 0.99)

    @property
    def p50_ms(self) -> float:
        return percentile(self.latencies_ms, 0.50)


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(math.ceil(fraction * len(ordered)) - 1, 0)]


def drive(base_url: str, paths: list[str], concurrency: int = 8, timeout: float = 30.0) -> Load:
    """Send every path once (GET) from ``concurrency`` threads; a failure is an error or a 5xx."""
    local = threading.local()

    def one(path: str) -> float | None:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        started = time.perf_counter()
        try:
            status = session.get(base_url + path, timeout=timeout).status_code
        except requests.RequestException:
            return None
        elapsed = (time.perf_counter() - started) * 1000
        return None if status >= 500 else elapsed

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = list(pool.map(one, paths))
    latencies = [r for r in results if r is not None]
    return Load(sent=len(paths), failed=len(paths) - len(latencies), latencies_ms=latencies)


def tagged_paths(phase: str, count: int) -> list[str]:
    """Fast demo requests whose log records say which phase of a test sent them."""
    return [f"/api/products?phase={phase}&i={n}" for n in range(count)]


def phase_of(entry: LokiEntry) -> str | None:
    query = entry.get("url_query") or ""
    for part in query.split("&"):
        if part.startswith("phase="):
            return part.removeprefix("phase=")
    return None


def stderr_report(lines: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(outage warnings, recovery lines, SDK noise) in a server's stderr."""
    warnings = [line for line in lines if OUTAGE_WARNING in line]
    recoveries = [line for line in lines if RECOVERY_LINE in line]
    # The outage warning quotes the SDK's first message as its cause; noise is the SDK's own lines.
    noise = [line for line in lines if line.startswith(SDK_NOISE) or "Traceback" in line]
    return warnings, recoveries, noise
