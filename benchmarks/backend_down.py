"""Latency and memory of the monitored demo when the OTLP endpoint is gone, vs when it answers.

    python benchmarks/backend_down.py                              # 4 rounds x 5000 requests per variant
    python benchmarks/backend_down.py --requests 200 --rounds 1    # quick smoke run

Variants (each its own process, the demo app with FlaskMonitor, rounds interleaved):
  reachable  OTLP/HTTP to a local sink that answers 200 at once.
  refused    nothing listens at the endpoint: every export fails fast (connection refused).
  hung       a socket that listens but never accepts: exports wait for the exporter's timeout.
Each request's latency is timed around Flask's test client call (single thread, so export work
competes with requests for the GIL as it would in a worker). RSS is read after a warm-up and after
every round. At the end the child reports its export health and exits; the exit is timed, since the
monitor promises a bounded flush at exit (flush_timeout_seconds, 5 s by default).
Target: p99 of each down variant <= 1.05 x p99 of reachable.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from interleave import VariantProcess

VARIANTS = ("reachable", "refused", "hung")
WARMUP_REQUESTS = 500
P99_TARGET = 1.05


def percentile(sorted_values: list[float], fraction: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


def rss_mb() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss) / 2**20


def serve_rounds(requests: int) -> None:
    """The child: the monitored demo, one measured round per ``round`` line on stdin."""
    from otel_flask_monitor import get_state
    from otel_flask_monitor.demo import create_app

    app = create_app()
    client = app.test_client()
    paths = [f"/api/products/{index % 8 + 1}" for index in range(max(requests, WARMUP_REQUESTS))]
    for path in paths[:WARMUP_REQUESTS]:
        if client.get(path).status_code != 200:
            raise RuntimeError(f"warm-up request to {path} failed")
    paths = paths[:requests]
    rss_after_warmup = rss_mb()
    print("ready", flush=True)
    for command in sys.stdin:
        if command.strip() != "round":
            break
        latencies_us = []
        for path in paths:
            started = time.perf_counter_ns()
            client.get(path)
            latencies_us.append((time.perf_counter_ns() - started) / 1e3)
        print(json.dumps({"latencies_us": latencies_us, "rss_mb": rss_mb()}), flush=True)
    health = get_state(app).telemetry.health.as_dict()
    print(json.dumps({"rss_after_warmup_mb": rss_after_warmup, "rss_end_mb": rss_mb(), "health": health}))
    sys.stdout.flush()


def child_environment(endpoint: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("OTEL_")}
    env |= {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
    return env


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port  # closed again: nothing listens there


def export_totals(health: dict[str, Any] | None) -> str:
    if not health or not health.get("signals"):
        return "-"
    totals = {
        key: sum(signal[key] for signal in health["signals"]) for key in ("exported", "failed", "dropped")
    }
    return "{exported}/{failed}/{dropped}".format(**totals)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=5000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.requests < 1 or arguments.rounds < 1:
        parser.error("--requests and --rounds must be at least 1")
    if arguments.child:
        serve_rounds(arguments.requests)
        return

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from interleave import VariantProcess, run_interleaved
    from otlp_sink import OtlpSink

    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(1)  # never accepted: connections queue, then time out
    latencies: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    rss_by_round: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    exit_seconds: dict[str, float] = {}
    try:
        with OtlpSink() as sink:
            endpoints = {
                "reachable": sink.endpoint,
                "refused": f"http://127.0.0.1:{closed_port()}",
                "hung": f"http://127.0.0.1:{hung.getsockname()[1]}",
            }
            command = [sys.executable, str(Path(__file__).resolve()), "--child"]
            command += ["--requests", str(arguments.requests)]

            def start(variant: str) -> VariantProcess:
                return VariantProcess(variant, command, child_environment(endpoints[variant]), False)

            def on_round(variant: str, result: dict[str, Any]) -> None:
                latencies[variant].extend(result["latencies_us"])
                rss_by_round[variant].append(result["rss_mb"])

            finals = run_interleaved(VARIANTS, start, arguments.rounds, on_round, exit_seconds)
    finally:
        hung.close()
    print_table(latencies, rss_by_round, finals, exit_seconds, arguments)


def print_table(
    latencies: dict[str, list[float]],
    rss_by_round: dict[str, list[float]],
    finals: dict[str, dict[str, Any] | None],
    exit_seconds: dict[str, float],
    arguments: argparse.Namespace,
) -> None:
    print(
        f"\nmonitored demo, GET /api/products/<id> via the test client, {arguments.rounds} interleaved "
        f"rounds x {arguments.requests} requests per variant"
    )
    print(
        f"{'variant':<10} {'p50 us':>8} {'p99 us':>8} {'p99.9 us':>9} {'max ms':>8} {'p99 x':>6} "
        f"{'RSS MB':>7} {'growth':>7} {'exit s':>7}  exported/failed/dropped"
    )
    base_p99 = percentile(sorted(latencies["reachable"]), 0.99)
    verdicts = []
    for variant in VARIANTS:
        values = sorted(latencies[variant])
        final = finals.get(variant) or {}
        start_rss = final.get("rss_after_warmup_mb", float("nan"))
        end_rss = final.get("rss_end_mb", rss_by_round[variant][-1])
        p99 = percentile(values, 0.99)
        print(
            f"{variant:<10} {statistics.median(values):>8.0f} {p99:>8.0f} {percentile(values, 0.999):>9.0f} "
            f"{values[-1] / 1e3:>8.1f} {p99 / base_p99:>6.3f} {end_rss:>7.1f} {end_rss - start_rss:>+7.1f} "
            f"{exit_seconds.get(variant, float('nan')):>7.2f}  {export_totals(final.get('health'))}"
        )
        if variant != "reachable":
            verdict = "met" if p99 / base_p99 <= P99_TARGET else "MISSED"
            verdicts.append(f"p99 {variant} / reachable = {p99 / base_p99:.3f} (<= {P99_TARGET}): {verdict}")
    print(
        "RSS per round (MB): " + "; ".join(f"{v}: {[round(x, 1) for x in rss_by_round[v]]}" for v in VARIANTS)
    )
    for line in verdicts:
        print("target " + line)


if __name__ == "__main__":
    main()
