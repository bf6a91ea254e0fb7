"""spans.SpanWriter: what the monitor writes to the instrumentation's server span. It makes the span
safe while the request runs (name of an unmatched route, redacted query, cut strings, secret header
values) and, at the end, adds only what the span lacks."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import Span, StatusCode

from otel_flask_monitor.attributes import record_attributes
from otel_flask_monitor.record import ExceptionInfo, RequestRecord
from otel_flask_monitor.redaction import REDACTED, Redactor
from otel_flask_monitor.spans import SpanWriter
from tests.conftest import Exported
from tests.support.records import make_record

LIMIT = 64


def server_span(**attributes: Any) -> Span:
    return trace.get_tracer("test-spans").start_span(
        "GET /items/1", kind=trace.SpanKind.SERVER, attributes=attributes
    )


def writer(*, captures_headers: bool = False) -> SpanWriter:
    redactor = Redactor(["Authorization"], ["token"], instrumentation_captures_headers=captures_headers)
    return SpanWriter(redactor, LIMIT, may_carry_headers=captures_headers)


def finished(span: Span, exported: Exported) -> ReadableSpan:
    span.end()
    (done,) = exported.server_spans()
    return done


def enriched(record: RequestRecord, exported: Exported) -> ReadableSpan:
    writer().enrich(record, record_attributes(record))
    assert record.server_span is not None
    return finished(record.server_span, exported)


def test_an_unmatched_route_names_the_span_by_its_method_alone(exported: Exported) -> None:
    spans = [server_span(), server_span()]
    writer().sanitize(spans[0], {}, "GET", routed=False, query="")
    writer().sanitize(spans[1], {}, "BREW", routed=False, query="")
    for span in spans:
        span.end()
    assert sorted(span.name for span in exported.server_spans()) == ["GET", "HTTP"]


def test_the_query_is_replaced_redacted_and_long_strings_are_cut(exported: Exported) -> None:
    span = server_span(
        **{
            "url.query": "token=s3cret&page=2",
            "http.target": "/items/1?token=s3cret&page=2",
            "user_agent.original": "é" * 100,
        }
    )
    environ = {"PATH_INFO": "/items/1", "QUERY_STRING": "token=s3cret&page=2", "HTTP_USER_AGENT": "é" * 100}
    writer().sanitize(span, environ, "GET", routed=True, query=f"token={REDACTED}&page=2")

    attributes = finished(span, exported).attributes or {}
    assert attributes["url.query"] == f"token={REDACTED}&page=2"
    assert attributes["http.target"] == f"/items/1?token={REDACTED}&page=2"
    assert "s3cret" not in repr(dict(attributes))
    agent = str(attributes["user_agent.original"])
    assert len(agent.encode()) <= LIMIT
    assert agent.startswith("é")


def test_secret_headers_the_instrumentation_captured_are_redacted(exported: Exported) -> None:
    span = server_span(
        **{"http.request.header.authorization": ("Bearer s3cret",), "http.request.header.accept": ("*/*",)}
    )
    writer(captures_headers=True).redact_headers(span)

    attributes = finished(span, exported).attributes or {}
    assert attributes["http.request.header.authorization"] == (REDACTED,)
    assert attributes["http.request.header.accept"] == ("*/*",)


def test_enrich_adds_what_the_span_lacks_and_replaces_nothing(exported: Exported) -> None:
    span = server_span(
        **{
            "error.type": "500",  # as the instrumentation spells it under OTEL_SEMCONV_STABILITY_OPT_IN=http
            "http.route": "/items/<int:item_id>",
            "http.response.header.content_type": ("application/json",),  # captured by the instrumentation
        }
    )
    escaped = ExceptionInfo(type="ShopError", message="till on fire", stacktrace="...", escaped=True)
    done = enriched(make_record(status_code=500, exception=escaped, server_span=span), exported)

    attributes = done.attributes or {}
    assert attributes["duration_ms"] == 12.346
    assert attributes["cpu_ms"] == 1.5
    assert attributes["http.response.body.size"] == 9
    assert attributes["error.type"] == "500"  # the instrumentation's, kept
    assert "http.response.header.content-type" not in attributes  # it has the header already
    assert "url.path" not in attributes  # the instrumentation's business: never a second copy
    assert done.status.status_code is StatusCode.ERROR


def test_an_exception_the_app_handled_is_one_event_and_an_escaped_one_none(exported: Exported) -> None:
    handled = ExceptionInfo(
        type="ShopError", message="till on fire", stacktrace="Traceback ...", escaped=False
    )
    done = enriched(make_record(status_code=200, exception=handled, server_span=server_span()), exported)
    (event,) = done.events
    assert event.name == "exception"
    assert dict(event.attributes or {}) == {
        "exception.type": "ShopError",
        "exception.message": "till on fire",
        "exception.stacktrace": "Traceback ...",
    }
    assert done.status.status_code is StatusCode.ERROR
    assert done.status.description == "ShopError"

    escaped = ExceptionInfo(type="ShopError", message="till on fire", stacktrace="...", escaped=True)
    span = server_span()
    writer().enrich(make_record(status_code=500, exception=escaped, server_span=span), {})
    span.end()
    assert exported.server_spans()[-1].events == ()  # the instrumentation records it itself


def test_an_ended_span_or_none_is_left_alone(exported: Exported, caplog: pytest.LogCaptureFixture) -> None:
    span = server_span()
    span.end()
    record = make_record(server_span=span)
    with caplog.at_level(logging.WARNING):
        writer().enrich(record, record_attributes(record))
        writer().enrich(make_record(server_span=None), {})
    assert caplog.records == []  # the SDK warns of every write to an ended span
    (done,) = exported.server_spans()
    assert "duration_ms" not in (done.attributes or {})
