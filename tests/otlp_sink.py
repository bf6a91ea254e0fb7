"""A minimal OTLP/HTTP receiver for tests: decodes logs, traces and metrics into plain Python values.

``with OtlpSink() as sink:`` listens on 127.0.0.1 on a free port; point
``OTEL_EXPORTER_OTLP_ENDPOINT`` at ``sink.endpoint`` with ``OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf``.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, TypeVar

from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

T = TypeVar("T")

SPAN_KIND_SERVER = 2


def any_value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return attributes_of(value.kvlist_value.values)
    return getattr(value, kind)


def attributes_of(pairs: Any) -> dict[str, Any]:
    return {pair.key: any_value(pair.value) for pair in pairs if isinstance(pair, KeyValue)}


@dataclass(frozen=True)
class ReceivedLog:
    resource: dict[str, Any]
    scope: str
    event_name: str
    severity_text: str
    body: Any
    attributes: dict[str, Any]
    trace_id: str
    span_id: str


@dataclass(frozen=True)
class ReceivedSpan:
    resource: dict[str, Any]
    scope: str
    name: str
    kind: int
    attributes: dict[str, Any]
    trace_id: str
    span_id: str


@dataclass(frozen=True)
class ReceivedMetricPoint:
    resource: dict[str, Any]
    scope: str
    name: str
    attributes: dict[str, Any]
    value: float


@dataclass
class _Received:
    lock: threading.Lock = field(default_factory=threading.Lock)
    logs: list[ReceivedLog] = field(default_factory=list)
    spans: list[ReceivedSpan] = field(default_factory=list)
    metric_points: list[ReceivedMetricPoint] = field(default_factory=list)
    requests: dict[str, int] = field(default_factory=dict)


def _decode_logs(request: ExportLogsServiceRequest) -> list[ReceivedLog]:
    return [
        ReceivedLog(
            resource=attributes_of(resource_logs.resource.attributes),
            scope=scope_logs.scope.name,
            event_name=record.event_name,
            severity_text=record.severity_text,
            body=any_value(record.body),
            attributes=attributes_of(record.attributes),
            trace_id=record.trace_id.hex(),
            span_id=record.span_id.hex(),
        )
        for resource_logs in request.resource_logs
        for scope_logs in resource_logs.scope_logs
        for record in scope_logs.log_records
    ]


def _decode_spans(request: ExportTraceServiceRequest) -> list[ReceivedSpan]:
    return [
        ReceivedSpan(
            resource=attributes_of(resource_spans.resource.attributes),
            scope=scope_spans.scope.name,
            name=span.name,
            kind=span.kind,
            attributes=attributes_of(span.attributes),
            trace_id=span.trace_id.hex(),
            span_id=span.span_id.hex(),
        )
        for resource_spans in request.resource_spans
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
    ]


def _decode_metrics(request: ExportMetricsServiceRequest) -> list[ReceivedMetricPoint]:
    points: list[ReceivedMetricPoint] = []
    for resource_metrics in request.resource_metrics:
        resource = attributes_of(resource_metrics.resource.attributes)
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                data_kind = metric.WhichOneof("data")
                if data_kind not in {"gauge", "sum"}:
                    continue  # histograms and summaries carry no single value to assert on
                for point in getattr(metric, data_kind).data_points:
                    number_kind = point.WhichOneof("value")
                    value = float(getattr(point, number_kind)) if number_kind else float("nan")
                    points.append(
                        ReceivedMetricPoint(
                            resource=resource,
                            scope=scope_metrics.scope.name,
                            name=metric.name,
                            attributes=attributes_of(point.attributes),
                            value=value,
                        )
                    )
    return points


_ROUTES: Mapping[str, tuple[type[Message], type[Message]]] = {
    "/v1/logs": (ExportLogsServiceRequest, ExportLogsServiceResponse),
    "/v1/traces": (ExportTraceServiceRequest, ExportTraceServiceResponse),
    "/v1/metrics": (ExportMetricsServiceRequest, ExportMetricsServiceResponse),
}


def _handler_for(received: _Received) -> type[BaseHTTPRequestHandler]:
    class OtlpHandler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            route = _ROUTES.get(self.path.split("?", 1)[0])
            if route is None:
                self.send_error(404)
                return
            request_type, response_type = route
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.headers.get("Content-Encoding", "").lower() == "gzip":
                body = gzip.decompress(body)
            request = request_type()
            request.ParseFromString(body)
            with received.lock:
                received.requests[self.path] = received.requests.get(self.path, 0) + 1
                if isinstance(request, ExportLogsServiceRequest):
                    received.logs.extend(_decode_logs(request))
                elif isinstance(request, ExportTraceServiceRequest):
                    received.spans.extend(_decode_spans(request))
                elif isinstance(request, ExportMetricsServiceRequest):
                    received.metric_points.extend(_decode_metrics(request))
            payload = response_type().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:  # the base class names it so
            pass  # the test output is no place for one access line per export

    return OtlpHandler


class OtlpSink:
    """Threaded OTLP/HTTP (protobuf) receiver on 127.0.0.1; every accessor returns a snapshot."""

    def __init__(self) -> None:
        self._received = _Received()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self._received))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-sink", daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def logs(self) -> list[ReceivedLog]:
        with self._received.lock:
            return list(self._received.logs)

    def spans(self) -> list[ReceivedSpan]:
        with self._received.lock:
            return list(self._received.spans)

    def metric_points(self) -> list[ReceivedMetricPoint]:
        with self._received.lock:
            return list(self._received.metric_points)

    def wait_for(self, read: Callable[[], T], done: Callable[[T], bool], timeout: float = 15.0) -> T:
        """Poll ``read()`` until ``done`` says so or ``timeout`` passes; return the last reading."""
        deadline = time.monotonic() + timeout
        value = read()
        while not done(value) and time.monotonic() < deadline:
            time.sleep(0.1)
            value = read()
        return value

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> OtlpSink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
