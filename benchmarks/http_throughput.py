"""HTTP throughput and latency through gunicorn: the demo bare, with stock OTel, monitored; wrk on 127.0.0.1.

    python benchmarks/http_throughput.py                          # 3 x 10 s per server (about 2 minutes)
    python benchmarks/http_throughput.py --duration 1 --repeats 1     # quick smoke run

The three servers are the shop demo under gunicorn (2 sync workers): ``create_app(monitored=False)``
(bare), the same with stock OpenTelemetry (``variants.otel_only_demo``: FlaskInstrumentor,
providers for the three signals with batch OTLP/HTTP exporters, one 3-attribute log record per
request, as the ``otel`` variant of overhead.py) and ``create_app()`` (monitored). Both OTel servers
export OTLP/HTTP to a real Collector process, rotel (PyPI ``rotel``; its ``rotel-agent`` binary),
started here with the blackhole exporter so the Collector receives, decodes and batches everything
but sends it nowhere. wrk (Debian ``wrk``) runs short runs against each server in rotating order,
and the table gives the median of the runs. Load generator, workers and Collector share the
machine's CPUs, as they would on a small host. Target: monitored / otel-only req/s >= 0.90.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from variants import verdict

BARE_APP = "otel_flask_monitor.demo.app:create_app(monitored=False)"
OTEL_ONLY_APP = "variants:otel_only_demo()"  # imported from this directory (gunicorn --pythonpath)
MONITORED_APP = "otel_flask_monitor.demo.app:create_app()"
SERVERS = ("bare", "otel-only", "monitored")
TARGET_MONITORED_PER_OTEL_ONLY = 0.90
_UNIT_SECONDS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for_port(
    port: int, process: subprocess.Popen[bytes], what: str, timeout_seconds: float = 30
) -> None:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.3):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"{what} did not listen on 127.0.0.1:{port} within {timeout_seconds} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


def rotel_agent() -> Path:
    spec = importlib.util.find_spec("rotel")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("rotel is not installed: pip install rotel (it is in the dev extras)")
    binary = Path(next(iter(spec.submodule_search_locations))) / "rotel-agent"
    if not binary.exists():
        raise SystemExit(f"rotel-agent not found at {binary}")
    return binary


@contextmanager
def collector(workdir: Path) -> Iterator[str]:
    """rotel on free ports; yields its OTLP/HTTP endpoint."""
    grpc_port, http_port = free_port(), free_port()
    command = [
        str(rotel_agent()),
        "start",
        "--otlp-grpc-endpoint",
        f"127.0.0.1:{grpc_port}",
        "--otlp-http-endpoint",
        f"127.0.0.1:{http_port}",
        "--exporter",
        "blackhole",
        "--pid-file",
        str(workdir / "rotel.pid"),
        "--log-file",
        str(workdir / "rotel.log"),
    ]
    with (workdir / "rotel.out").open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(http_port, process, "rotel-agent")
        yield f"http://127.0.0.1:{http_port}"
    finally:
        stop(process)


def gunicorn_command(app: str, port: int, workers: int) -> list[str]:
    from gunicorn.config import KNOWN_SETTINGS

    command = [sys.executable, "-m", "gunicorn", "--workers", str(workers), "--bind", f"127.0.0.1:{port}"]
    command += ["--pythonpath", str(Path(__file__).resolve().parent)]
    # gunicorn >= 24 opens a control socket at one fixed path per user; two servers would collide.
    if any(setting.name == "control_socket_disable" for setting in KNOWN_SETTINGS):
        command.append("--no-control-socket")
    return [*command, app]


@contextmanager
def gunicorn(app: str, workers: int, env: dict[str, str], log_path: Path) -> Iterator[int]:
    port = free_port()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            gunicorn_command(app, port, workers), env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_for_port(port, process, f"gunicorn {app}")
        yield port
    finally:
        stop(process)


def parse_duration(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(f"unrecognised wrk duration {text!r}")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def parse_wrk(output: str) -> dict[str, float]:
    requests_per_second = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.MULTILINE)
    if not (requests_per_second and p50 and p99):
        raise RuntimeError(f"could not read wrk's output:\n{output}")
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    socket_errors = re.search(r"Socket errors: (.*)", output)
    return {
        "rps": float(requests_per_second.group(1)),
        "p50_ms": parse_duration(p50.group(1)) * 1e3,
        "p99_ms": parse_duration(p99.group(1)) * 1e3,
        "non_2xx": float(errors.group(1)) if errors else 0.0,
        "socket_errors": 1.0 if socket_errors else 0.0,
    }


def run_wrk(url: str, seconds: float, connections: int, threads: int) -> dict[str, float]:
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", url]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=True)
    return parse_wrk(completed.stdout)


def export_health(port: int) -> Any:
    """What one worker's monitor says about its export (best effort: the route may be absent)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/monitoring/health", timeout=5) as response:
            return json.loads(response.read())
    except (OSError, ValueError):
        return None


def base_environment() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if not name.startswith("OTEL_")}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=10, help="seconds per wrk run")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs per server")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--path", default="/api/products/1")
    arguments = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")

    results: dict[str, list[dict[str, float]]] = {name: [] for name in SERVERS}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="http-throughput-") as tmp:
        workdir = Path(tmp)
        with collector(workdir) as endpoint:
            otel_env = base_environment() | {
                "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            }
            with (
                gunicorn(BARE_APP, arguments.workers, base_environment(), workdir / "bare.log") as bare_port,
                gunicorn(
                    OTEL_ONLY_APP,
                    arguments.workers,
                    otel_env | {"OTEL_SERVICE_NAME": "shop"},
                    workdir / "otel.log",
                ) as otel_port,
                gunicorn(MONITORED_APP, arguments.workers, otel_env, workdir / "mon.log") as monitored_port,
            ):
                ports = {"bare": bare_port, "otel-only": otel_port, "monitored": monitored_port}
                for port in ports.values():  # warm-up: imports, first requests, exporters
                    run_wrk(f"http://127.0.0.1:{port}{arguments.path}", 1, arguments.connections, 1)
                for repeat in range(arguments.repeats):
                    shift = repeat % len(ports)
                    order = [*ports.items()][shift:] + [*ports.items()][:shift]
                    for name, port in order:
                        url = f"http://127.0.0.1:{port}{arguments.path}"
                        results[name].append(
                            run_wrk(url, arguments.duration, arguments.connections, arguments.threads)
                        )
                    print(f"repeat {repeat + 1}/{arguments.repeats} done", file=sys.stderr, flush=True)
                time.sleep(1.5)  # one batch-export interval, so the health below includes the runs
                health = export_health(monitored_port)
    print_table(results, arguments)
    print(f"({time.monotonic() - started:.0f} s wall)")
    if health is not None:
        print("monitored worker's export health:", json.dumps(health.get("telemetry", health))[:800])


def print_table(results: dict[str, list[dict[str, float]]], arguments: argparse.Namespace) -> None:
    median = {
        name: {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        for name, runs in results.items()
    }
    print(
        f"\nGET {arguments.path}: gunicorn {arguments.workers} sync workers, wrk -t{arguments.threads} "
        f"-c{arguments.connections}, {arguments.repeats} x {arguments.duration:g} s per server (median)"
    )
    print(f"{'server':<10} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
    for name, figures in median.items():
        print(
            f"{name:<10} {figures['rps']:>9.0f} {figures['p50_ms']:>8.2f} {figures['p99_ms']:>8.2f} "
            f"{sum(run['non_2xx'] for run in results[name]):>8.0f}"
        )
    monitored = median["monitored"]
    for base in ("bare", "otel-only"):
        print(
            f"monitored / {base}: req/s {monitored['rps'] / median[base]['rps']:.2f}, "
            f"p50 {monitored['p50_ms'] / median[base]['p50_ms']:.2f}, "
            f"p99 {monitored['p99_ms'] / median[base]['p99_ms']:.2f}"
        )
    ratio = monitored["rps"] / median["otel-only"]["rps"]
    print(verdict("monitored / otel-only req/s", ratio, TARGET_MONITORED_PER_OTEL_ONLY, at_least=True))


if __name__ == "__main__":
    main()
