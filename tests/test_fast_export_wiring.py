"""Where the monitor owns the providers, spans and log records leave through the fast OTLP encoder
over http/protobuf, and the Collector receives the same OTLP data the SDK's encoder would send."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf.message import Message
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel_flask_monitor.otlp_exporters import FastOTLPLogExporter, FastOTLPSpanExporter
from otel_flask_monitor.telemetry import otlp_exporter_for
from tests.support.loki_receiver import LokiReceiver
from tests.test_telemetry_setup import child_env

SCRIPT = Path(__file__).parent / "support" / "scripts" / "export_through_owned_providers.py"


def test_http_protobuf_spans_and_logs_get_the_fast_exporters(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    assert type(otlp_exporter_for("traces")) is FastOTLPSpanExporter
    assert type(otlp_exporter_for("logs")) is FastOTLPLogExporter
    assert type(otlp_exporter_for("metrics")) is OTLPMetricExporter


def test_grpc_keeps_the_sdk_exporters(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "grpc")
    assert type(otlp_exporter_for("traces")) is GrpcSpanExporter
    assert type(otlp_exporter_for("logs")) is GrpcLogExporter


def _items(requests: list[Message], field: str, items: str) -> list[tuple[bytes, bytes, bytes]]:
    """Every span or log record with its resource and scope, in order, whatever the batching."""
    return [
        (resource.resource.SerializeToString(deterministic=True), scoped.scope.SerializeToString(), item)
        for request in requests
        for resource in getattr(request, field)
        for scoped in getattr(resource, "scope_spans" if field == "resource_spans" else "scope_logs")
        for item in (i.SerializeToString(deterministic=True) for i in getattr(scoped, items))
    ]


def test_the_collector_receives_what_the_sdk_encoder_would_send() -> None:
    with LokiReceiver(path_prefix="") as sink:
        env = child_env(
            OTEL_EXPORTER_OTLP_ENDPOINT=sink.base_url,
            OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
            OTEL_METRICS_EXPORTER="none",
            REQUESTS="30",
        )
        done = subprocess.run(
            [sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode == 0, done.stderr
        report = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("{")))
        received_logs, received_spans = sink.log_requests(), sink.trace_requests()
    assert report["exporters"] == {"traces": "FastOTLPSpanExporter", "logs": "FastOTLPLogExporter"}
    sdk_logs = ExportLogsServiceRequest.FromString(bytes.fromhex(report["sdk_logs"]))
    sdk_spans = ExportTraceServiceRequest.FromString(bytes.fromhex(report["sdk_spans"]))
    expected_logs = _items([sdk_logs], "resource_logs", "log_records")
    expected_spans = _items([sdk_spans], "resource_spans", "spans")
    assert len(expected_logs) == 30
    assert len(expected_spans) == 30
    assert _items(received_logs, "resource_logs", "log_records") == expected_logs
    assert _items(received_spans, "resource_spans", "spans") == expected_spans
