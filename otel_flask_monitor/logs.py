"""Record -> one OTel log record: severity, a short human body line, flat primitive attributes."""

from __future__ import annotations

from typing import Final

from opentelemetry._logs import Logger, SeverityNumber

from otel_flask_monitor.attributes import exception_attributes, request_attributes
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
    return f"{record.method} {target} {record.status_code} {record.duration_ms:.1f} ms"


def emit_request_log(logger: Logger, record: RequestRecord) -> None:
    """Emit in the current context, so the SDK fills trace_id/span_id from the active span."""
    severity_number, severity_text = severity_of(record)
    logger.emit(
        timestamp=record.end_time_ns,
        severity_number=severity_number,
        severity_text=severity_text,
        body=body_of(record),
        attributes={**request_attributes(record), **exception_attributes(record)},
        event_name=EVENT_NAME,
    )
