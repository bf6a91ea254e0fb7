"""In-process CPU cost per request: bare Flask, stock OTel, the monitor, the source article's approach.

    python benchmarks/overhead.py                                # 7 rounds x 2000 requests per variant
    python benchmarks/overhead.py --requests 200 --rounds 2      # quick smoke run
    python benchmarks/overhead.py --variants otel,monitor,monitor-no-logs,monitor-hooks-only
    python benchmarks/overhead.py --variants monitor --profile   # cProfile of the measured rounds
    python benchmarks/overhead.py --variants monitor,monitor-objectives --rounds 15

Each variant runs in its own process (global OTel providers can be set once per process), serves
``GET /api/products/<id>`` through Flask's test client and exports to a local sink in this process
(OTLP/HTTP, and Loki's push API for the article). The figure is CPU time (``time.process_time``:
user + system time of every thread of the process, so the batch exporters' encoding and HTTP
posts, and the article's push thread, count) per request, over a round of requests plus the flush
of what they queued; the median of the rounds is reported, with the kernel's share of it (system
time, from ``getrusage``: syscalls such as socket sends and /proc reads, which callgrind's
instruction counts do not see). Rounds are interleaved across the variants' processes, so load
from elsewhere on the machine spreads over all of them. The variants are described in variants.py:
bare, otel, monitor, article, otel-sampled, monitor-sampled by default.

Targets: monitor / otel <= 1.10, monitor-sampled / otel-sampled <= 0.90, monitor / article <= 0.60.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from otlp_sink import OtlpSink
from variants import (
    DEFAULT_VARIANTS,
    VARIANTS,
    log_sampling_note,
    parse_variants,
    print_run_facts,
    print_targets,
    variant_environment,
)

WARMUP_REQUESTS = 300


def serve_rounds(variant: str, requests: int, profile: bool) -> None:
    """The child: build, warm up, then run one measured round per ``round`` line read from stdin.

    When stdin closes it prints its report (sampler, pushes) as a last JSON line.
    """
    built = VARIANTS[variant].build()
    client = built.app.test_client()
    paths = [f"/api/products/{index % 8 + 1}" for index in range(max(requests, WARMUP_REQUESTS))]
    for path in paths[:WARMUP_REQUESTS]:
        if client.get(path).status_code != 200:
            raise RuntimeError(f"{variant}: warm-up request to {path} failed")
    built.flush()
    paths = paths[:requests]
    profiler = cProfile.Profile() if profile else None
    print("ready", flush=True)
    for command in sys.stdin:
        if command.strip() != "round":
            break
        if profiler:
            profiler.enable()
        started, started_usage = time.process_time(), resource.getrusage(resource.RUSAGE_SELF)
        for path in paths:
            client.get(path)
        built.flush()
        elapsed, usage = time.process_time() - started, resource.getrusage(resource.RUSAGE_SELF)
        if profiler:
            profiler.disable()
        user = usage.ru_utime - started_usage.ru_utime
        system = usage.ru_stime - started_usage.ru_stime
        round_result = {
            "us_per_request": elapsed / requests * 1e6,
            "system_share": system / (user + system) if user + system else 0.0,
        }
        print(json.dumps(round_result), flush=True)
    if profiler:
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out).strip_dirs()
        stats.sort_stats("tottime").print_stats(25)
        stats.sort_stats("cumulative").print_stats(40)
        print(out.getvalue(), file=sys.stderr, flush=True)
    print(json.dumps(built.report()), flush=True)


def measure_all(
    variants: list[str], endpoint: str, requests: int, rounds: int, profile: bool
) -> tuple[dict[str, list[float]], dict[str, Any]]:
    from interleave import VariantProcess, run_interleaved

    def start(variant: str) -> VariantProcess:
        command = [sys.executable, str(Path(__file__).resolve()), "--variant", variant]
        command += ["--requests", str(requests), *(["--profile-here"] if profile else [])]
        env = variant_environment(os.environ, variant, endpoint)
        return VariantProcess(variant, command, env, show_stderr=profile)

    results: dict[str, list[dict[str, float]]] = {variant: [] for variant in variants}
    reports = run_interleaved(variants, start, rounds, lambda name, got: results[name].append(got))
    return results, reports


def print_table(results: dict[str, list[dict[str, float]]], requests: int, rounds: int) -> None:
    per_request = {
        variant: [got["us_per_request"] for got in rounds_of] for variant, rounds_of in results.items()
    }
    median = {variant: statistics.median(values) for variant, values in per_request.items()}
    print(f"\nCPU per request (us): {rounds} interleaved rounds x {requests} requests, median / min / max")
    print(f"{'variant':<24} {'median':>8} {'min':>8} {'max':>8} {'x bare':>7} {'x otel':>7} {'kernel':>7}")
    for variant, values in per_request.items():
        ratios = "".join(
            f" {median[variant] / median[base]:>7.2f}" if base in median else f" {'-':>7}"
            for base in ("bare", "otel")
        )
        kernel = statistics.median(got["system_share"] for got in results[variant])
        spread = f"{median[variant]:>8.1f} {min(values):>8.1f} {max(values):>8.1f}"
        print(f"{variant:<24} {spread}{ratios} {kernel:>7.0%}")
    for monitor, otel in (("monitor", "otel"), ("monitor-sampled", "otel-sampled")):
        if {monitor, otel} <= median.keys():
            print(f"{monitor} - {otel}: {median[monitor] - median[otel]:+.1f} us/request")
    print()
    print_targets(median)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--variants", default=",".join(DEFAULT_VARIANTS), help=f"comma-separated, from {', '.join(VARIANTS)}"
    )
    parser.add_argument("--profile", action="store_true", help="print each variant's cProfile (main thread)")
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # the child's job
    parser.add_argument("--profile-here", action="store_true", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.requests < 1 or arguments.rounds < 1:
        parser.error("--requests and --rounds must be at least 1")

    if arguments.variant:
        serve_rounds(arguments.variant, arguments.requests, arguments.profile_here)
        return

    try:
        variants = parse_variants(arguments.variants)
    except ValueError as error:
        parser.error(str(error))
    note = log_sampling_note(variants)
    if note:
        print(note, file=sys.stderr, flush=True)
    with OtlpSink() as sink:
        results, reports = measure_all(
            variants, sink.endpoint, arguments.requests, arguments.rounds, arguments.profile
        )
        received = sink.summary()
    print_table(results, arguments.requests, arguments.rounds)
    print_run_facts({name: report or {} for name, report in reports.items()}, received, note)


if __name__ == "__main__":
    main()
