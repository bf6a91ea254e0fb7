"""An OTLP/HTTP receiver for tests that decodes logs, traces and metrics into plain Python values.

``with OtlpSink() as sink:`` listens on 127.0.0.1 on a free port; point
``OTEL_EXPORTER_OTLP_ENDPOINT`` at ``sink.endpoint`` with ``OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from tests.support.loki_receiver import LokiReceiver

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


class OtlpSink:
    """OTLP/HTTP receiver on 127.0.0.1 (protobuf or JSON, gzip accepted); every accessor returns a snapshot.

    The server is tests/support/loki_receiver.py's, on the plain OTLP paths: it keeps the decoded requests,
    and the sink reads them as flat records.
    """

    def __init__(self) -> None:
        self._receiver = LokiReceiver(path_prefix="")

    @property
    def endpoint(self) -> str:
        return self._receiver.base_url

    def logs(self) -> list[ReceivedLog]:
        return [log for request in self._receiver.log_requests() for log in _decode_logs(request)]

    def spans(self) -> list[ReceivedSpan]:
        return [span for request in self._receiver.trace_requests() for span in _decode_spans(request)]

    def metric_points(self) -> list[ReceivedMetricPoint]:
        return [point for request in self._receiver.metric_requests() for point in _decode_metrics(request)]

    def wait_for(self, read: Callable[[], T], done: Callable[[T], bool], timeout: float = 15.0) -> T:
        """Poll ``read()`` until ``done`` says so or ``timeout`` passes; return the last reading."""
        deadline = time.monotonic() + timeout
        value = read()
        while not done(value) and time.monotonic() < deadline:
            time.sleep(0.1)
            value = read()
        return value

    def close(self) -> None:
        self._receiver.close()

    def __enter__(self) -> OtlpSink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
