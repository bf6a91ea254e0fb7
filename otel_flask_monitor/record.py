"""The per-request record: the one immutable shape every consumer reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

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


@dataclass(frozen=True, slots=True)
class ExceptionInfo:
    type: str
    """Fully qualified class name (``builtins.`` left out), as the semantic conventions ask."""
    message: str
    stacktrace: str
    escaped: bool
    """True when the exception reached Flask's teardown, where the Flask instrumentation records it
    on the span itself."""


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
