"""The per-request record: the one immutable shape every consumer reads.

Knows nothing of Flask: the request hooks (:mod:`otel_flask_monitor.hooks`) fill it in, with the
helpers below for the fields that have a spelling of their own (the method, an exception); the span,
the log record, the aggregates and the objective counter only read it.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from opentelemetry.util.http import sanitize_method

from otel_flask_monitor.redaction import truncate, truncate_middle

if TYPE_CHECKING:
    from opentelemetry.trace import Span

UNMATCHED_ROUTE = "<unmatched>"
"""Route key of requests that matched no URL rule (404s): one key, never one per raw path."""

KNOWN_METHODS: Final = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE", "QUERY"}
)
"""The standard methods ``http.request.method`` carries as sent."""
OTHER_METHOD: Final = "_OTHER"
"""``http.request.method`` of a non-standard method, so that clients inventing methods cannot create
keys (in the aggregates) or label values."""

MAX_METHOD_BYTES: Final = 32
"""A method kept as sent is cut to this many bytes (a standard one has at most 7)."""
MAX_CAPTURED_HEADERS: Final = 32
"""The most request headers a record carries (``captured_headers``): each is an attribute, and Loki
accepts at most 128 structured-metadata entries per line by default."""
MAX_HEADER_NAME_BYTES: Final = 64
"""The longest name of a captured header (its attribute name is ``http.request.header.<name>``)."""


def method_fields(sent: str) -> tuple[str, str | None]:
    """(``http.request.method``, ``http.request.method_original``) as the semantic conventions and the
    Flask instrumentation spell them: ``_OTHER`` and the method as sent for a non-standard one, unless
    ``OTEL_PYTHON_INSTRUMENTATION_HTTP_CAPTURE_ALL_METHODS`` asks for every method as sent."""
    if sent in KNOWN_METHODS:
        return sent, None
    method = sanitize_method(sent)
    if method != sent:
        return method, truncate(sent, MAX_METHOD_BYTES)
    return truncate(sent, MAX_METHOD_BYTES), None


def method_key(method: str) -> str:
    """``method`` as a bounded key: a standard method, else :data:`OTHER_METHOD` (also for a method
    kept as sent under ``OTEL_PYTHON_INSTRUMENTATION_HTTP_CAPTURE_ALL_METHODS``)."""
    return method if method in KNOWN_METHODS else OTHER_METHOD


@dataclass(frozen=True, slots=True)
class ExceptionInfo:
    type: str
    """Fully qualified class name (``builtins.`` left out), as the semantic conventions ask."""
    message: str
    stacktrace: str
    escaped: bool
    """True when the exception reached Flask's teardown, where the Flask instrumentation records it
    on the span itself."""

    @classmethod
    def of(
        cls, error: BaseException, *, escaped: bool, max_length: int, max_stacktrace_length: int
    ) -> ExceptionInfo:
        """``error`` as a record carries it: type and message cut to ``max_length`` bytes, the stack
        trace's head and tail kept within ``max_stacktrace_length`` bytes."""
        stack = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        try:
            message = str(error)
        except Exception:
            message = "<unprintable exception>"
        return cls(
            type=truncate(exception_type_name(error), max_length),
            message=truncate(message, max_length),
            stacktrace=truncate_middle(stack, max_stacktrace_length),
            escaped=escaped,
        )


def exception_type_name(error: BaseException) -> str:
    cls = type(error)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """What the monitor knows of one finished request, already redacted and truncated."""

    method: str
    """``http.request.method``: the method, or ``_OTHER`` for a non-standard one unless
    ``OTEL_PYTHON_INSTRUMENTATION_HTTP_CAPTURE_ALL_METHODS`` is set (then as sent)."""
    route: str | None
    """URL rule template (``/api/products/<int:product_id>``), None when no rule matched."""
    path: str
    query: str
    """Query string with secret parameter values replaced; empty when there was none."""
    scheme: str
    status_code: int
    request_size: int | None
    response_size: int | None
    content_type: str | None
    client_address: str | None
    user_agent: str | None
    server_address: str | None
    duration_ms: float
    cpu_ms: float
    end_time_ns: int
    """Wall-clock end of the request (ns since the epoch), the log record's timestamp."""
    trace_id: str | None
    """32 lowercase hex digits of the active trace, None outside a trace."""
    exception: ExceptionInfo | None = None
    captured_headers: tuple[tuple[str, str], ...] = ()
    method_original: str | None = None
    """The method as sent, when ``method`` is ``_OTHER``."""
    streamed: bool = False
    """The body was streamed: duration, CPU and size run to its last byte (or its cut)."""
    cut_short: str | None = None
    """A streamed body that did not reach its end: ``closed_early`` (the server closed it, almost
    always because the client went away) or ``exception`` (it raised after the status line)."""
    server_span: Span | None = field(default=None, compare=False, repr=False)
    """The server span the Flask instrumentation opened for this request (None: no such span).
    The span consumer writes only to it, the log record carries its ids."""

    @property
    def is_server_error(self) -> bool:
        return self.status_code >= 500 or self.exception is not None

    @property
    def method_key(self) -> str:
        """:func:`method_key` of ``method``: the key the aggregates count the request under."""
        return method_key(self.method)
