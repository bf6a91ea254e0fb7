"""A finished request's record with plausible defaults, for tests that feed consumers directly."""

from __future__ import annotations

from typing import Any

from otel_flask_monitor.record import RequestRecord

_DEFAULTS: dict[str, Any] = {
    "method": "GET",
    "route": "/items/<int:item_id>",
    "path": "/items/1",
    "query": "",
    "scheme": "http",
    "status_code": 200,
    "request_size": None,
    "response_size": 9,
    "content_type": "application/json",
    "client_address": "127.0.0.1",
    "user_agent": "pytest",
    "server_address": "localhost",
    "duration_ms": 12.3456,
    "cpu_ms": 1.5,
    "end_time_ns": 1_700_000_000_000_000_000,
    "trace_id": None,
}


def make_record(**fields: Any) -> RequestRecord:
    """A ``GET /items/1`` answered 200 in 12.3 ms, with ``fields`` replaced."""
    return RequestRecord(**(_DEFAULTS | fields))
