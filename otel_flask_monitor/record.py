"""The per-request record: the one immutable shape every consumer reads."""

from __future__ import annotations

from dataclasses import dataclass

UNMATCHED_ROUTE = "<unmatched>"
"""Route key of requests that matched no URL rule (404s): one key, never one per raw path."""


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

    @property
    def is_server_error(self) -> bool:
        return self.status_code >= 500 or self.exception is not None
