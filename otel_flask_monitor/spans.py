"""Record -> the server span of opentelemetry-instrumentation-flask, and no other span.

The monitor only adds what that span lacks: an attribute, status or event the instrumentation set
is never replaced (under ``OTEL_SEMCONV_STABILITY_OPT_IN=http`` it sets ``error.type="500"``, which
stays).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from opentelemetry.trace import Span, Status, StatusCode

from otel_flask_monitor.attributes import exception_attributes, span_attributes
from otel_flask_monitor.record import RequestRecord

# opentelemetry-instrumentation-flask stores the span it opens for a request in the WSGI environ
# under this key (``_ENVIRON_SPAN_KEY``, set in its ``_before_request``; checked against 0.66b1,
# opentelemetry/instrumentation/flask/__init__.py). No public API names the span of a given request:
# the current span is the caller's own when the monitor's hooks run outside the instrumentation's.
_INSTRUMENTATION_SPAN_KEY: Final = "opentelemetry-flask.span_key"
# Header attributes the instrumentation captures (OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_*)
# are spelled with "_" for "-": http.response.header.content_type.
_HEADER_PREFIXES: Final = ("http.request.header.", "http.response.header.")


def server_span_of(environ: Mapping[str, Any]) -> Span | None:
    """The span the Flask instrumentation opened for this request; None when it opened none (app not
    instrumented, URL excluded) or has not yet (its ``before_request`` runs after the caller's)."""
    # Only the instrumentation writes this key, always a Span: no isinstance (an ABC check) per request.
    span: Span | None = environ.get(_INSTRUMENTATION_SPAN_KEY)
    return span


def enrich_span(record: RequestRecord) -> None:
    """Add the record to the request's server span while it records; never starts one."""
    span = record.server_span
    if span is None or not span.is_recording():
        return
    present: Mapping[str, Any] = getattr(span, "attributes", None) or {}
    additions = {
        key: value
        for key, value in span_attributes(record).items()
        if key not in present and not (key.startswith(_HEADER_PREFIXES) and key.replace("-", "_") in present)
    }
    if additions:
        span.set_attributes(additions)
    if record.is_server_error and _status_is_unset(span):
        # The instrumentation marks 5xx answers ERROR itself; this covers an unhandled exception
        # the app's 500 handler answered with a non-5xx status.
        description = record.exception.type if record.exception else f"HTTP {record.status_code}"
        span.set_status(Status(StatusCode.ERROR, description))
    if record.exception is not None and not record.exception.escaped:
        # An exception that escaped reaches the instrumentation's teardown, which records it; only
        # the rest is added here, so each exception appears once on the span.
        span.add_event("exception", exception_attributes(record))


def _status_is_unset(span: Span) -> bool:
    status = getattr(span, "status", None)  # the SDK's spans expose it; the API promises nothing
    return status is None or status.status_code is StatusCode.UNSET
