"""OTLP encoding cost per span and per log record: the SDK encoder against otel_flask_monitor.otlp_encoding.

    python benchmarks/otlp_encoding.py                 # 15 interleaved rounds, batches of 512
    python benchmarks/otlp_encoding.py --rounds 2      # quick smoke run

The batches are what a monitored app really hands its exporters: the shop demo with
``FlaskMonitor`` (and so the Flask instrumentation) serves a mix of requests (product pages with
varying ids and query strings, the product list, unknown products, purchases, a few user agents);
its tracer and logger providers, built like the monitor's own (``build_resource``, batch
processors), export to in-memory exporters, whose ``ReadableSpan`` / ``ReadableLogRecord`` objects
are the input here.

One round encodes one batch of each kind with each encoder, in alternating order: the SDK path is
``encode_spans(batch).SerializePartialToString()`` / ``encode_logs(batch).SerializeToString()``,
exactly what its OTLP/HTTP exporters run; the fast path is ``otlp_encoding.encode_spans`` /
``encode_logs`` (with its fallback check). The figure is CPU time (``time.process_time``) per item,
the median over the rounds; both encoders run in the same process in every round, so the ratio is
the figure to compare between machines. Before timing, the script checks that both produce the same
bytes.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

USER_AGENTS = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4",
    "python-requests/2.32.3",
    "curl/8.5.0",
)


def capture_batches(count: int) -> tuple[list[Any], list[Any]]:
    """``count`` requests to the monitored demo; the server spans and request log records it exported."""
    os.environ.setdefault("OTEL_METRICS_EXPORTER", "none")
    from opentelemetry import metrics, trace
    from opentelemetry._logs import set_logger_provider
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, InMemoryLogRecordExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from otel_flask_monitor.demo.app import create_app
    from otel_flask_monitor.telemetry import build_resource

    resource = build_resource(None, "shop")
    span_exporter, log_exporter = InMemorySpanExporter(), InMemoryLogRecordExporter()
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
    trace.set_tracer_provider(tracer_provider)
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(BatchLogRecordProcessor(log_exporter))
    set_logger_provider(logger_provider)
    metrics.set_meter_provider(MeterProvider(resource=resource))

    client = create_app().test_client()
    agents = itertools.cycle(USER_AGENTS)
    for number in range(count):
        headers = {"User-Agent": next(agents)}
        kind = number % 10
        if kind < 6:
            query = f"?ref=home&page={number % 5}" if kind < 2 else ""
            client.get(f"/api/products/{number % 12 + 1}{query}", headers=headers)
        elif kind < 8:
            client.get("/api/products", headers=headers)
        elif kind == 8:
            client.post(f"/api/products/{number % 8 + 1}/purchase", json={"quantity": 1}, headers=headers)
        else:
            client.get(f"/api/products/{1000 + number}", headers=headers)  # unknown product: 404
    tracer_provider.force_flush()
    logger_provider.force_flush()
    spans = list(span_exporter.get_finished_spans())
    logs = list(log_exporter.get_finished_logs())
    if len(spans) < count or len(logs) < count:
        raise SystemExit(f"expected {count} spans and log records, got {len(spans)} and {len(logs)}")
    return spans[:count], logs[:count]


def cpu_seconds(run: Callable[[], object]) -> float:
    start = time.process_time()
    run()
    return time.process_time() - start


def parse_options(description: str | None, argv: Sequence[str] | None) -> argparse.Namespace:
    """``--rounds`` (default 15) and ``--batch`` (default 512), shared with log_attributes.py."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--batch", type=int, default=512)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(__doc__, argv)

    from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs as sdk_encode_logs
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode_spans
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from otel_flask_monitor import otlp_encoding

    spans, logs = capture_batches(options.batch)
    variants: dict[str, Callable[[], bytes]] = {
        "spans sdk": lambda: sdk_encode_spans(spans).SerializePartialToString(),
        "spans fast": lambda: otlp_encoding.encode_spans(spans),
        "logs sdk": lambda: sdk_encode_logs(logs).SerializeToString(),
        "logs fast": lambda: otlp_encoding.encode_logs(logs),
    }
    for signal, message_type in (("spans", ExportTraceServiceRequest), ("logs", ExportLogsServiceRequest)):
        sdk_bytes, fast_bytes = variants[f"{signal} sdk"](), variants[f"{signal} fast"]()
        if fast_bytes != sdk_bytes or message_type.FromString(fast_bytes) != message_type.FromString(
            sdk_bytes
        ):
            raise SystemExit(f"{signal}: the fast encoder's bytes differ from the SDK's")
    # The monitor's own data never needs the fallback: time the path it really takes.
    otlp_encoding.encode_spans_fast(spans)
    otlp_encoding.encode_logs_fast(logs)

    per_item: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for round_number in range(options.rounds):
        order = names if round_number % 2 == 0 else names[::-1]
        for name in order:
            per_item[name].append(cpu_seconds(variants[name]) / options.batch * 1e6)

    print(
        f"Python {platform.python_version()}, {platform.machine()}, nproc {os.cpu_count()}; "
        f"batches of {options.batch}, {options.rounds} interleaved rounds, CPU µs per item (median)"
    )
    span_attributes = statistics.mean(len(span.attributes) for span in spans)
    log_attributes = statistics.mean(len(record.log_record.attributes or {}) for record in logs)
    span_bytes = len(variants["spans sdk"]()) / options.batch
    log_bytes = len(variants["logs sdk"]()) / options.batch
    print(
        f"input: spans {span_attributes:.1f} attributes, {span_bytes:.0f} bytes each; "
        f"log records {log_attributes:.1f} attributes, {log_bytes:.0f} bytes each"
    )
    print(f"{'variant':<12} {'median':>8} {'min':>8} {'max':>8} {'x sdk':>7}")
    for signal in ("spans", "logs"):
        baseline = statistics.median(per_item[f"{signal} sdk"])
        for name in (f"{signal} sdk", f"{signal} fast"):
            values = per_item[name]
            median = statistics.median(values)
            print(f"{name:<12} {median:8.2f} {min(values):8.2f} {max(values):8.2f} {median / baseline:7.3f}")
        speed_up = baseline / statistics.median(per_item[f"{signal} fast"])
        print(f"{signal}: the fast encoder is {speed_up:.1f}x faster")
    return 0


if __name__ == "__main__":
    sys.exit(main())
