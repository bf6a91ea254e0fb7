"""Everything the monitor writes to the server span of opentelemetry-instrumentation-flask, and no other.

Finding that span (:func:`server_span_of`), making it safe while the request runs (:class:`SpanWriter`:
the name of an unmatched route, the redacted query, cut strings, secret header values) and, opt-in
(``enrich_spans``), adding what the record knows once the request ends. The monitor only adds what
the span lacks: an attribute, status or event the instrumentation set is never replaced (under
``OTEL_SEMCONV_STABILITY_OPT_IN=http`` it sets ``error.type="500"``, which stays).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode
from opentelemetry.util.http import sanitize_method
from opentelemetry.util.types import AttributeValue

from otel_flask_monitor._otel_compat import INSTRUMENTATION_SPAN_KEY
from otel_flask_monitor.attributes import EXCEPTION_ATTRIBUTE_NAMES, HEADER_PREFIX
from otel_flask_monitor.record import KNOWN_METHODS, MAX_METHOD_BYTES, RequestRecord
from otel_flask_monitor.redaction import Redactor, truncate, utf8_length

# Span attributes set by the instrumentation that carry the raw query string; overwritten redacted.
_QUERY_BEARING_ATTRIBUTES: Final = ("url.query", "http.target", "http.url", "url.full")
# Header attributes the instrumentation captures (OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_*)
# are spelled with "_" for "-": http.response.header.content_type.
_HEADER_PREFIXES: Final = ("http.request.header.", "http.response.header.")

# What the Flask instrumentation does not put on its server span itself (opt-in: ``enrich_spans``).
# Method, route, path, query, scheme, status, client, user agent and host are there already, in the
# naming the user selects with OTEL_SEMCONV_STABILITY_OPT_IN; writing them again under a second
# naming would cost every span about 40 us of CPU (mostly OTLP encoding) and half a kilobyte.
# ``response_cut_short`` is known only after the span has ended, so it never reaches a span.
SPAN_ATTRIBUTE_NAMES: Final = frozenset(
    {
        "http.request.body.size",
        "http.response.body.size",
        "http.response.header.content-type",
        "duration_ms",
        "cpu_ms",
        "error.type",
        "response_streamed",
    }
)


def server_span_of(environ: Mapping[str, Any]) -> Span | None:
    """The span the Flask instrumentation opened for this request; None when it opened none (app not
    instrumented, URL excluded) or has not yet (its ``before_request`` runs after the caller's)."""
    # Only the instrumentation writes this key, always a Span: no isinstance (an ABC check) per request.
    span: Span | None = environ.get(INSTRUMENTATION_SPAN_KEY)
    return span


def current_trace_id() -> str | None:
    """32 lowercase hex digits of the current span's trace, None outside a trace."""
    return trace_id_of(trace.get_current_span())


def trace_id_of(span: Span) -> str | None:
    context = span.get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def span_attributes(attributes: Mapping[str, AttributeValue]) -> dict[str, AttributeValue]:
    """The monitor's candidate additions to the server span, out of a record's attributes (the span
    consumer writes only those the span does not carry yet)."""
    return {
        key: value
        for key, value in attributes.items()
        if key in SPAN_ATTRIBUTE_NAMES or key.startswith(HEADER_PREFIX)
    }


class SpanWriter:
    """Writes one monitor's settings to server spans: what it may change, with which limits."""

    __slots__ = ("_limit", "_may_carry_headers", "_redactor")

    def __init__(self, redactor: Redactor, max_attribute_length: int, *, may_carry_headers: bool) -> None:
        self._redactor = redactor
        self._limit = max_attribute_length
        # Headers the instrumentation copies onto the span at the user's request can be long too.
        self._may_carry_headers = may_carry_headers

    def sanitize(
        self, span: Span, environ: Mapping[str, Any], method: str, *, routed: bool, query: str
    ) -> None:
        """The instrumentation copies the raw query string, target, user agent and host onto the span:
        replace the query redacted, and cut every string at the limit the record's obey. A request
        that matched no route (``routed`` False) gets its span named by its method alone."""
        if not routed:
            # Without a route template the semantic conventions name the span by the method alone
            # (unknown methods: "HTTP", unless OTEL_PYTHON_INSTRUMENTATION_HTTP_CAPTURE_ALL_METHODS
            # asks for them as sent, as the instrumentation names them); the instrumentation's raw
            # path would make one span name per URL, a scanner's paths in the trace backend's index.
            if method not in KNOWN_METHODS:
                method = sanitize_method(method)
                method = "HTTP" if method == "_OTHER" else truncate(method, MAX_METHOD_BYTES)
            span.update_name(method)
        limit = self._limit
        # The instrumentation copies the raw request target (RAW_URI/REQUEST_URI) or re-quotes the
        # path (up to 3 characters per byte): "/%00%00..." is three times as long as PATH_INFO. WSGI
        # strings carry one byte per character, which UTF-8 spells in up to two.
        request_is_long = (
            3 * len(environ.get("PATH_INFO", "")) + 2 * len(environ.get("QUERY_STRING", "")) > limit
            or 2 * len(environ.get("RAW_URI") or environ.get("REQUEST_URI") or "") > limit
            or 2 * len(environ.get("HTTP_USER_AGENT", "")) > limit
            or 2 * len(environ.get("HTTP_HOST", "")) > limit
        )
        if not (query or request_is_long or self._may_carry_headers):
            return  # nothing the instrumentation copied needs replacing: skip reading the span back
        attributes = getattr(span, "attributes", None) or {}
        replaced: dict[str, str] = {}
        if query:
            for key in _QUERY_BEARING_ATTRIBUTES:
                value = attributes.get(key)
                if key == "url.query":
                    replaced[key] = query
                elif isinstance(value, str):
                    replaced[key] = value.split("?", 1)[0] + "?" + query
        for key, value in attributes.items():
            if isinstance(value, str) and key not in replaced and utf8_length(value) > limit:
                replaced[key] = value
        for key, value in replaced.items():
            span.set_attribute(key, truncate(value, limit))

    def redact_headers(self, span: Span) -> None:
        """Redact the secret header attributes on a recording span, whatever put them there.

        The Flask instrumentation copies the headers named in
        ``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST``/``_RESPONSE`` verbatim unless its
        own ``..._SANITIZE_FIELDS`` says otherwise; ``redacted_headers`` applies to them as to the
        monitor's own ``captured_headers``. Free when no capture was configured as the monitor started
        (the variables are read once, like every ``OTEL_*`` variable the monitor reads).
        """
        if not self._redactor.instrumentation_captures_headers or not span.is_recording():
            return
        attributes = getattr(span, "attributes", None)
        if attributes:
            replaced = self._redactor.header_attributes(attributes)
            if replaced:
                span.set_attributes(replaced)

    def enrich(self, record: RequestRecord, attributes: Mapping[str, AttributeValue]) -> None:
        """Add the record (its ``attributes``) to the request's server span while it records; never
        starts one."""
        span = record.server_span
        if span is None or not span.is_recording():
            return
        present: Mapping[str, Any] = getattr(span, "attributes", None) or {}
        additions = {
            key: value
            for key, value in span_attributes(attributes).items()
            if key not in present
            and not (key.startswith(_HEADER_PREFIXES) and key.replace("-", "_") in present)
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
            span.add_event(
                "exception", {key: attributes[key] for key in EXCEPTION_ATTRIBUTE_NAMES if key in attributes}
            )


def _status_is_unset(span: Span) -> bool:
    status = getattr(span, "status", None)  # the SDK's spans expose it; the API promises nothing
    return status is None or status.status_code is StatusCode.UNSET
