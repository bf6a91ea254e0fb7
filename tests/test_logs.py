"""logs: one record -> one OTel log record: severity by status, the short body line, the record's
timestamp, the server span's ids even when the span has ended (a streamed body)."""

from __future__ import annotations

import pytest
from opentelemetry import trace

from otel_flask_monitor._otel_compat import SeverityNumber, get_logger
from otel_flask_monitor.logs import EVENT_NAME, body_of, emit_request_log, severity_of
from otel_flask_monitor.record import ExceptionInfo
from tests.conftest import Exported
from tests.support.records import make_record

BOOM = ExceptionInfo(type="ShopError", message="till on fire", stacktrace="...", escaped=True)


@pytest.mark.parametrize(
    ("status", "exception", "expected"),
    [
        (200, None, (SeverityNumber.INFO, "INFO")),
        (302, None, (SeverityNumber.INFO, "INFO")),
        (399, None, (SeverityNumber.INFO, "INFO")),
        (400, None, (SeverityNumber.WARN, "WARN")),
        (499, None, (SeverityNumber.WARN, "WARN")),
        (500, None, (SeverityNumber.ERROR, "ERROR")),
        (503, None, (SeverityNumber.ERROR, "ERROR")),
        (200, BOOM, (SeverityNumber.ERROR, "ERROR")),  # an exception the app answered anyway
    ],
)
def test_severity_follows_the_status(
    status: int, exception: ExceptionInfo | None, expected: tuple[SeverityNumber, str]
) -> None:
    assert severity_of(make_record(status_code=status, exception=exception)) == expected


def test_body_names_the_route_template_else_the_path_and_the_method_as_sent() -> None:
    assert body_of(make_record()) == "GET /items/<int:item_id> 200 12.3 ms"
    assert body_of(make_record(route=None, path="/nowhere", status_code=404)) == "GET /nowhere 404 12.3 ms"
    odd = make_record(method="_OTHER", method_original="BREW", duration_ms=0.04)
    assert body_of(odd) == "BREW /items/<int:item_id> 200 0.0 ms"


def test_the_log_record_carries_the_ended_server_span_ids(exported: Exported) -> None:
    span = trace.get_tracer("test-logs").start_span("GET /items/<int:item_id>", kind=trace.SpanKind.SERVER)
    span.end()  # a streamed body's record is complete after its span ended, outside the request
    record = make_record(status_code=404, server_span=span)

    emit_request_log(get_logger("test-logs"), record, {"http.route": "/items/<int:item_id>"})

    (log,) = exported.request_logs()
    assert log.log_record.event_name == EVENT_NAME
    assert log.log_record.timestamp == record.end_time_ns
    assert (log.log_record.severity_number, log.log_record.severity_text) == (SeverityNumber.WARN, "WARN")
    assert log.log_record.body == "GET /items/<int:item_id> 404 12.3 ms"
    assert dict(log.log_record.attributes or {}) == {"http.route": "/items/<int:item_id>"}
    context = span.get_span_context()
    assert (log.log_record.trace_id, log.log_record.span_id) == (context.trace_id, context.span_id)
