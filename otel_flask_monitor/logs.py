"""Record -> one OTel log record: severity, a short human body line, the record's flat attributes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from opentelemetry import trace
from opentelemetry.util.types import AttributeValue

from otel_flask_monitor._otel_compat import Logger, SeverityNumber
from otel_flask_monitor.record import RequestRecord

EVENT_NAME: Final = "http.server.request"


def severity_of(record: RequestRecord) -> tuple[SeverityNumber, str]:
    if record.is_server_error:
        return SeverityNumber.ERROR, "ERROR"
    if record.status_code >= 400:
        return SeverityNumber.WARN, "WARN"
    return SeverityNumber.INFO, "INFO"


def body_of(record: RequestRecord) -> str:
    target = record.route if record.route is not None else record.path
    method = record.method_original or record.method
    return f"{method} {target} {record.status_code} {record.duration_ms:.1f} ms"


def emit_request_log(logger: Logger, record: RequestRecord, attributes: Mapping[str, AttributeValue]) -> None:
    """Emit with the ids of the request's server span: the SDK takes trace_id/span_id from the
    context. While the span records, the monitor's hooks run inside it and it is the current one
    (the usual case); a streamed body ends after the span did, outside any request context, so the
    context of an ended (or never recording) span is passed explicitly."""
    span = record.server_span
    context = None if span is None or span.is_recording() else trace.set_span_in_context(span)
    severity_number, severity_text = severity_of(record)
    logger.emit(
        timestamp=record.end_time_ns,
        context=context,
        severity_number=severity_number,
        severity_text=severity_text,
        body=body_of(record),
        attributes=attributes,
        event_name=EVENT_NAME,
    )
