"""In-process CPU cost per request: bare Flask, the OTel baseline, the full monitor, the article's approach.

    python benchmarks/overhead.py                                # 7 rounds x 2000 requests per variant
    python benchmarks/overhead.py --requests 200 --rounds 2      # quick smoke run
    python benchmarks/overhead.py --variants otel,monitor,monitor-no-logs,monitor-hooks-only
    python benchmarks/overhead.py --variants monitor --profile   # cProfile of the measured rounds
    python benchmarks/overhead.py --variants monitor,monitor-objectives --rounds 15

Each variant runs in its own process (global OTel providers can be set once per process), serves
``GET /api/products/<id>`` through Flask's test client and exports to a local OTLP/HTTP sink in this
process. The figure is CPU time (``time.process_time``: every thread of the process, so the batch
exporters' encoding and HTTP posts count) per request, over a round of requests plus the flush of
the spans and logs they produced; the median of the rounds is reported. Rounds are interleaved
across the variants' processes, so load from elsewhere on the machine spreads over all of them.

Variants:
  bare      Flask alone.
  otel      What any OTel user pays: FlaskInstrumentor, tracer/logger/meter providers with batch
            OTLP/HTTP exporters, one plain log record per request through the Logs API.
  monitor   FlaskMonitor(app) with its own provider set-up from the same OTEL_* variables.
  article   The source article's approach: the otel variant plus, per request, a psutil snapshot
            (psutil.Process(), .cpu_percent(), .memory_info()) before and after, and a json.dumps of
            the request's dict pushed to a queue.Queue drained by a thread (which discards it, so
            the reference is if anything flattered).

Targets: monitor / otel <= 1.10 and monitor / article <= 0.60.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import queue
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

VARIANTS = ("bare", "otel", "monitor", "article")
TARGETS = (("monitor", "otel", 1.10), ("monitor", "article", 0.60))
WARMUP_REQUESTS = 300


def build_bare_app() -> Any:
    from flask import Flask

    app = Flask("bench")

    @app.get("/api/products/<int:product_id>")
    def product(product_id: int) -> dict[str, Any]:
        return {"id": product_id, "name": "Mechanical keyboard", "price": 89.99, "stock": 12}

    return app


def setup_otel_providers() -> None:
    """The set-up ``opentelemetry-instrument`` would make from the same variables: three providers."""
    from opentelemetry import metrics, trace
    from opentelemetry._logs import set_logger_provider
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create()
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(tracer_provider)
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter()))
    set_logger_provider(logger_provider)
    reader = PeriodicExportingMetricReader(OTLPMetricExporter())
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=[reader]))


def build_otel_app() -> Any:
    from flask import Response, request
    from opentelemetry._logs import SeverityNumber, get_logger
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    setup_otel_providers()
    app = build_bare_app()
    FlaskInstrumentor().instrument_app(app)
    otel_logger = get_logger("bench")

    @app.after_request
    def log_request(response: Response) -> Response:
        # Inside the server span (registered after the instrumentation), so trace ids are filled in.
        otel_logger.emit(
            severity_number=SeverityNumber.INFO,
            severity_text="INFO",
            body=f"{request.method} {request.path} {response.status_code}",
            attributes={
                "http.request.method": request.method,
                "http.route": request.url_rule.rule if request.url_rule else "",
                "http.response.status_code": response.status_code,
            },
        )
        return response

    return app


def build_monitor_app() -> Any:
    from otel_flask_monitor import FlaskMonitor

    app = build_bare_app()
    FlaskMonitor(app)
    return app


def build_article_app() -> Any:
    import psutil
    from flask import Response, g, request

    app = build_otel_app()
    pushed: queue.Queue[str] = queue.Queue()

    def drain() -> None:
        while True:
            pushed.get()

    threading.Thread(target=drain, name="article-push", daemon=True).start()

    @app.before_request
    def snapshot_before() -> None:
        process = psutil.Process()
        g.cpu_before = process.cpu_percent()
        g.memory_before = process.memory_info().rss
        g.started = time.perf_counter()

    @app.after_request
    def snapshot_after(response: Response) -> Response:
        process = psutil.Process()
        cpu_after = process.cpu_percent()
        memory_after = process.memory_info().rss
        pushed.put(
            json.dumps(
                {
                    "method": request.method,
                    "path": request.path,
                    "status": response.status_code,
                    "duration_ms": (time.perf_counter() - g.started) * 1000,
                    "cpu_percent": cpu_after,
                    "memory_delta_bytes": memory_after - g.memory_before,
                    "timestamp": time.time(),
                }
            )
        )
        return response

    return app


BUILDERS = {
    "bare": build_bare_app,
    "otel": build_otel_app,
    "monitor": build_monitor_app,
    "article": build_article_app,
}

# Opt-in (--variants): the monitor with one consumer switched off, to see where its cost goes, or
# with a latency and an availability objective on the route (what counting requests against
# objectives adds; docs/objectives.md).
ABLATIONS: dict[str, dict[str, Any]] = {
    "monitor-no-logs": {"emit_logs": False},
    "monitor-no-span-enrich": {"enrich_spans": False},  # the default since enrich_spans is opt-in
    "monitor-span-enrich": {"enrich_spans": True},
    "monitor-hooks-only": {"emit_logs": False, "enrich_spans": False},
    "monitor-objectives": {
        "objectives": {"default": {"availability": 99.9, "latency": {"threshold_ms": 300, "target": 99}}}
    },
}


def build(variant: str) -> Any:
    if variant in ABLATIONS:
        from otel_flask_monitor import FlaskMonitor

        app = build_bare_app()
        FlaskMonitor(app, **ABLATIONS[variant])
        return app
    return BUILDERS[variant]()


def flush_spans_and_logs() -> None:
    from opentelemetry import trace
    from opentelemetry._logs import get_logger_provider

    for provider in (trace.get_tracer_provider(), get_logger_provider()):
        flush = getattr(provider, "force_flush", None)
        if flush is not None:
            flush()


def serve_rounds(variant: str, requests: int, profile: bool) -> None:
    """The child: build, warm up, then run one measured round per ``round`` line read from stdin."""
    app = build(variant)
    client = app.test_client()
    paths = [f"/api/products/{index % 8 + 1}" for index in range(max(requests, WARMUP_REQUESTS))]
    for path in paths[:WARMUP_REQUESTS]:
        if client.get(path).status_code != 200:
            raise RuntimeError(f"{variant}: warm-up request to {path} failed")
    flush_spans_and_logs()
    paths = paths[:requests]
    profiler = cProfile.Profile() if profile else None
    print("ready", flush=True)
    for command in sys.stdin:
        if command.strip() != "round":
            break
        if profiler:
            profiler.enable()
        started = time.process_time()
        for path in paths:
            client.get(path)
        flush_spans_and_logs()
        elapsed = time.process_time() - started
        if profiler:
            profiler.disable()
        print(json.dumps({"us_per_request": elapsed / requests * 1e6}), flush=True)
    if profiler:
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out).strip_dirs()
        stats.sort_stats("tottime").print_stats(25)
        stats.sort_stats("cumulative").print_stats(40)
        print(out.getvalue(), file=sys.stderr, flush=True)


def child_environment(endpoint: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("OTEL_")}
    env |= {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_SERVICE_NAME": "bench",
    }
    return env


def measure_all(
    variants: list[str], endpoint: str, requests: int, rounds: int, profile: bool
) -> dict[str, list[float]]:
    from interleave import VariantProcess, run_interleaved

    def start(variant: str) -> VariantProcess:
        command = [sys.executable, str(Path(__file__).resolve()), "--variant", variant]
        command += ["--requests", str(requests), *(["--profile-here"] if profile else [])]
        return VariantProcess(variant, command, child_environment(endpoint), show_stderr=profile)

    results: dict[str, list[float]] = {variant: [] for variant in variants}
    run_interleaved(variants, start, rounds, lambda name, got: results[name].append(got["us_per_request"]))
    return results


def print_table(results: dict[str, list[float]], requests: int, rounds: int) -> None:
    median = {variant: statistics.median(values) for variant, values in results.items()}
    print(f"\nCPU per request (us): {rounds} interleaved rounds x {requests} requests, median / min / max")
    print(f"{'variant':<24} {'median':>8} {'min':>8} {'max':>8} {'x bare':>7} {'x otel':>7}")
    for variant, values in results.items():
        ratios = "".join(
            f" {median[variant] / median[base]:>7.2f}" if base in median else f" {'-':>7}"
            for base in ("bare", "otel")
        )
        print(f"{variant:<24} {median[variant]:>8.1f} {min(values):>8.1f} {max(values):>8.1f}{ratios}")
    if {"monitor", "otel"} <= median.keys():
        own_cost = median["monitor"] - median["otel"]
        print(f"\nthe monitor's own cost over the OTel baseline: {own_cost:.1f} us/request")
    for numerator, denominator, target in TARGETS:
        if {numerator, denominator} <= median.keys():
            ratio = median[numerator] / median[denominator]
            verdict = "met" if ratio <= target else "MISSED"
            print(f"target {numerator} / {denominator} = {ratio:.3f} (<= {target:.2f}): {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated, from {', '.join([*VARIANTS, *ABLATIONS])}",
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

    variants = [name.strip() for name in arguments.variants.split(",") if name.strip()]
    unknown = set(variants) - set(VARIANTS) - set(ABLATIONS)
    if unknown:
        parser.error(f"unknown variant(s): {', '.join(sorted(unknown))}")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from otlp_sink import OtlpSink

    with OtlpSink() as sink:
        results = measure_all(
            variants, sink.endpoint, arguments.requests, arguments.rounds, arguments.profile
        )
        received = sink.counts()
    print_table(results, arguments.requests, arguments.rounds)
    posts = (f"{path} {count} posts / {size // 1024} KiB" for path, (count, size) in sorted(received.items()))
    print("sink received: " + ", ".join(posts))


if __name__ == "__main__":
    main()
