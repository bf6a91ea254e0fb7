"""Record -> attributes and status on the server span of opentelemetry-instrumentation-flask."""

from __future__ import annotations

from opentelemetry.trace import Span, Status, StatusCode

from otel_flask_monitor.attributes import exception_attributes, span_attributes
from otel_flask_monitor.record import RequestRecord


def enrich_span(span: Span, record: RequestRecord) -> None:
    """Add the record to a recording span; never starts one."""
    if not span.is_recording():
        return
    span.set_attributes(span_attributes(record))
    if record.is_server_error:
        description = record.exception.type if record.exception else f"HTTP {record.status_code}"
        span.set_status(Status(StatusCode.ERROR, description))
    if record.exception is not None and not record.exception.escaped:
        # An exception that escaped reaches the instrumentation's teardown, which records it; only
        # the rest is added here, so each exception appears once on the span.
        span.add_event("exception", exception_attributes(record))
