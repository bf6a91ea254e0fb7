"""The fast OTLP/HTTP exporters behave as the SDK's exporters, over real HTTP on 127.0.0.1.

Each scenario runs the SDK exporter and its fast subclass against the same scripted endpoint and
compares what the endpoint received (path, headers, decompressed body) and what export() returned;
configuration comes from the standard ``OTEL_EXPORTER_OTLP_*`` variables.
"""

from __future__ import annotations

import gzip
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExportResult
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags

from otel_flask_monitor import _otel_compat as compat
from otel_flask_monitor.otlp_exporters import FastOTLPLogExporter, FastOTLPSpanExporter


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes  # decompressed


@dataclass
class _Script:
    lock: threading.Lock = field(default_factory=threading.Lock)
    replies: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    server: _RecordingServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {name.lower(): value for name, value in self.headers.items()}
        body = gzip.decompress(raw) if headers.get("content-encoding") == "gzip" else raw
        script = self.server.script
        with script.lock:
            script.received.append(Received(self.path, headers, body))
            status, reply_headers = script.replies.pop(0) if script.replies else (200, {})
        self.send_response(status)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        for name, value in reply_headers.items():
            self.send_header(name, value)
        self.end_headers()


class _RecordingServer(ThreadingHTTPServer):
    daemon_threads = True
    script: _Script


class RecordingEndpoint:
    """Answers each POST with the next scripted (status, headers), then 200; keeps every request."""

    def __init__(self) -> None:
        self._server = _RecordingServer(("127.0.0.1", 0), _Handler)
        self._server.script = _Script()
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def script(self, *replies: tuple[int, dict[str, str]]) -> None:
        with self._server.script.lock:
            self._server.script.replies = list(replies)
            self._server.script.received = []

    def received(self) -> list[Received]:
        with self._server.script.lock:
            return list(self._server.script.received)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def endpoint() -> Iterator[RecordingEndpoint]:
    server = RecordingEndpoint()
    yield server
    server.close()


RESOURCE = Resource({"service.name": "shop"})


def spans(count: int = 3) -> list[ReadableSpan]:
    return [
        ReadableSpan(
            name="GET /items/<int:item_id>",
            context=SpanContext(0xABC, 0x100 + i, is_remote=False, trace_flags=TraceFlags(1)),
            resource=RESOURCE,
            attributes={"http.route": "/items/<int:item_id>", "http.response.status_code": 200, "n": i},
            kind=SpanKind.SERVER,
            start_time=1_000 + i,
            end_time=2_000 + i,
        )
        for i in range(count)
    ]


def log_records(count: int = 3, body: Any = "GET /items/<int:item_id> 200 0.2 ms") -> list[ReadableLogRecord]:
    return [
        ReadableLogRecord(
            log_record=LogRecord(
                timestamp=1_000 + i,
                observed_timestamp=1_001 + i,
                trace_id=0xABC,
                span_id=0x100 + i,
                trace_flags=TraceFlags(1),
                severity_text="INFO",
                severity_number=SeverityNumber.INFO,
                body=body,
                attributes={"http.route": "/items/<int:item_id>", "n": i},
                event_name="http.server.request",
            ),
            resource=RESOURCE,
        )
        for i in range(count)
    ]


@dataclass(frozen=True)
class Signal:
    name: str
    sdk_class: type[Any]
    fast_class: type[Any]
    env_prefix: str
    path: str
    batch: Callable[[], list[Any]]
    unencodable: Callable[[], list[Any]]
    success: Any
    failure: Any


def _unencodable_spans() -> list[ReadableSpan]:
    batch = spans(1)
    batch[0]._kind = "not a span kind"  # type: ignore[assignment]  # the SDK encoder raises KeyError
    return batch


SIGNALS = [
    Signal(
        "traces",
        OTLPSpanExporter,
        FastOTLPSpanExporter,
        "OTEL_EXPORTER_OTLP_TRACES",
        "/v1/traces",
        spans,
        _unencodable_spans,
        SpanExportResult.SUCCESS,
        SpanExportResult.FAILURE,
    ),
    Signal(
        "logs",
        OTLPLogExporter,
        FastOTLPLogExporter,
        "OTEL_EXPORTER_OTLP_LOGS",
        "/v1/logs",
        log_records,
        lambda: log_records(1, body=object()),
        LogRecordExportResult.SUCCESS,
        LogRecordExportResult.FAILURE,
    ),
]


@pytest.fixture(params=SIGNALS, ids=[signal.name for signal in SIGNALS])
def signal(
    request: pytest.FixtureRequest, endpoint: RecordingEndpoint, monkeypatch: pytest.MonkeyPatch
) -> Signal:
    chosen: Signal = request.param
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.base_url)
    monkeypatch.setenv(f"{chosen.env_prefix}_HEADERS", "x-tenant=shop,authorization=Bearer%20t0k3n")
    monkeypatch.setenv(f"{chosen.env_prefix}_COMPRESSION", "gzip")
    monkeypatch.setenv(f"{chosen.env_prefix}_TIMEOUT", "5")
    return chosen


def run_both(
    signal: Signal,
    endpoint: RecordingEndpoint,
    replies: list[tuple[int, dict[str, str]]],
    batch: list[Any] | None = None,
    **exporter_options: Any,
) -> list[tuple[Any, list[Received]]]:
    """Export one batch through the SDK exporter, then the fast one, each against ``replies``."""
    outcomes = []
    for exporter_class in (signal.sdk_class, signal.fast_class):
        exporter = exporter_class(**exporter_options)
        endpoint.script(*replies)
        result = exporter.export(batch if batch is not None else signal.batch())
        outcomes.append((result, endpoint.received()))
        exporter.shutdown()
    return outcomes


def test_fast_encoding_is_in_use_with_the_installed_sdk(signal: Signal) -> None:
    exporter = signal.fast_class()
    try:
        assert exporter.uses_fast_encoding, compat.private_surface_problems()
    finally:
        exporter.shutdown()


def test_same_request_on_the_wire_with_env_configuration(signal: Signal, endpoint: RecordingEndpoint) -> None:
    (sdk_result, sdk_requests), (fast_result, fast_requests) = run_both(signal, endpoint, [])
    assert sdk_result == fast_result == signal.success
    assert len(sdk_requests) == len(fast_requests) == 1
    sdk_request, fast_request = sdk_requests[0], fast_requests[0]
    assert fast_request.path == sdk_request.path == signal.path
    assert fast_request.headers["content-encoding"] == "gzip"
    assert fast_request.headers["x-tenant"] == "shop"
    assert fast_request.headers == sdk_request.headers
    assert fast_request.body == sdk_request.body


def test_transient_errors_are_retried_honouring_retry_after(
    signal: Signal, endpoint: RecordingEndpoint
) -> None:
    replies = [(429, {"Retry-After": "0"}), (503, {"Retry-After": "0"})]
    for result, requests in run_both(signal, endpoint, replies):
        assert result == signal.success
        assert len(requests) == 3
        assert requests[0].body == requests[2].body


def test_permanent_errors_fail_without_retry(signal: Signal, endpoint: RecordingEndpoint) -> None:
    for result, requests in run_both(signal, endpoint, [(400, {})]):
        assert result == signal.failure
        assert len(requests) == 1


def test_oversized_batches_are_dropped_before_sending(
    signal: Signal, endpoint: RecordingEndpoint, caplog: pytest.LogCaptureFixture
) -> None:
    outcomes = run_both(signal, endpoint, [], max_request_size=10)
    for result, requests in outcomes:
        assert result == signal.failure
        assert requests == []
    messages = [
        (r.name, r.levelno, r.msg, r.args) for r in caplog.records if "max_request_size" in r.getMessage()
    ]
    assert len(messages) == 2
    assert messages[0] == messages[1]  # same logger, level, format string and arguments


def test_a_batch_the_sdk_cannot_encode_fails_the_same_way(
    signal: Signal, endpoint: RecordingEndpoint, caplog: pytest.LogCaptureFixture
) -> None:
    outcomes = run_both(signal, endpoint, [], batch=signal.unencodable())
    for result, requests in outcomes:
        assert result == signal.failure
        assert requests == []
    failures = [(r.name, r.msg, str(r.args)) for r in caplog.records if "Failed to encode" in r.getMessage()]
    assert len(failures) == 2
    assert failures[0] == failures[1]


def test_no_export_after_shutdown(signal: Signal, endpoint: RecordingEndpoint) -> None:
    exporter = signal.fast_class()
    exporter.shutdown()
    assert exporter.export(signal.batch()) == signal.failure
    assert endpoint.received() == []


def test_exporter_metrics_match_the_sdk_exporter(
    signal: Signal,
    endpoint: RecordingEndpoint,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.CRITICAL)
    monkeypatch.setenv("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "true")
    observed = []
    for exporter_class in (signal.sdk_class, signal.fast_class):
        reader = InMemoryMetricReader()
        meter_provider = MeterProvider(metric_readers=[reader])
        exporter = exporter_class(meter_provider=meter_provider)
        for replies, batch in (
            ([], signal.batch()),
            ([(400, {})], signal.batch()),
            ([], signal.unencodable()),
        ):
            endpoint.script(*replies)
            exporter.export(batch)
        exporter.shutdown()
        oversized = exporter_class(meter_provider=meter_provider, max_request_size=10)
        oversized.export(signal.batch())
        oversized.shutdown()
        observed.append(_metric_summary(reader))
    assert observed[0] == observed[1]
    assert any("error.type" in dict(attributes) for _, attributes, _ in observed[1])


def _metric_summary(reader: InMemoryMetricReader) -> list[tuple[str, tuple[tuple[str, Any], ...], Any]]:
    data = reader.get_metrics_data()
    assert data is not None
    summary = []
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                for point in metric.data.data_points:
                    attributes = tuple(
                        sorted(
                            (k, v) for k, v in (point.attributes or {}).items() if k != "otel.component.name"
                        )
                    )
                    count = getattr(point, "value", None)
                    if count is None:
                        count = point.count  # type: ignore[union-attr]  # a histogram: durations vary
                    summary.append((metric.name, attributes, count))
    return sorted(summary, key=repr)


def test_falls_back_to_the_sdk_export_when_its_internals_change(
    signal: Signal, endpoint: RecordingEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not compat.fast_export_internals_present(object())
    (_, sdk_requests), _ = run_both(signal, endpoint, [])
    # As if the installed SDK had moved what the fast export() reads.
    monkeypatch.setattr(compat, "fast_export_internals_present", lambda _: False)
    exporter = signal.fast_class()
    assert not exporter.uses_fast_encoding
    endpoint.script()
    assert exporter.export(signal.batch()) == signal.success
    exporter.shutdown()
    assert [request.body for request in endpoint.received()] == [sdk_requests[0].body]
