"""Run in a fresh interpreter: the monitor sets up its own providers (OTLP/HTTP to the test's sink).

Beside the monitor's batch processors, an in-memory exporter on each provider keeps the very span
and log record objects the monitor's exporters receive. After REQUESTS requests (a 200, a 404 and a
500 in turn) and a flush, prints one JSON line: the class of each wired exporter and the SDK's own
OTLP encoding (hex) of everything kept, which the test compares with what the sink received.
"""

from __future__ import annotations

import json
import os

from flask import Flask
from opentelemetry import trace
from opentelemetry._logs import get_logger_provider
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_flask_monitor import FlaskMonitor
from otel_flask_monitor.process import PROCESS


def main() -> None:
    app = Flask("wired")

    @app.get("/items/<int:item>")
    def item(item: int) -> dict[str, int]:
        if item % 3 == 2:
            raise ValueError(f"item {item} is broken")
        if item % 3 == 1:
            return {"missing": item}, 404  # type: ignore[return-value]
        return {"item": item}

    FlaskMonitor(app, service_name="wired-test")
    spans, logs = InMemorySpanExporter(), InMemoryLogRecordExporter()
    trace.get_tracer_provider().add_span_processor(SimpleSpanProcessor(spans))  # type: ignore[attr-defined]
    get_logger_provider().add_log_record_processor(SimpleLogRecordProcessor(logs))  # type: ignore[attr-defined]
    client = app.test_client()
    for number in range(int(os.environ.get("REQUESTS", "30"))):
        client.get(f"/items/{number}?page={number}", headers={"User-Agent": f"agent-{number % 4}"})
    for provider in PROCESS.telemetry.owned:
        provider.force_flush()
    print(
        json.dumps(
            {
                "exporters": {e.signal: type(e.inner).__name__ for e in PROCESS.telemetry.exporters},
                "sdk_spans": encode_spans(spans.get_finished_spans()).SerializePartialToString().hex(),
                "sdk_logs": encode_logs(logs.get_finished_logs()).SerializeToString().hex(),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
