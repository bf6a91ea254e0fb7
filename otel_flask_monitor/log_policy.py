"""Which requests get a log record (errors, slow ones, a trace-id sample) and which attributes it has.

Both are decided before any attribute is built: a record the sampler drops costs nothing more, and
an attribute left out of ``log_attributes`` is never computed. The costs of each attribute and the
weighted queries that count sampled records are in docs/log-schema.md and docs/queries.md.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable
from typing import Final

from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

from otel_flask_monitor.record import RequestRecord

DEFAULT_LOG_ATTRIBUTES: Final = frozenset(
    {
        "http.request.method",
        "http.request.method_original",
        "http.route",
        "url.path",
        "http.response.status_code",
        "duration_ms",
        "cpu_ms",
        "response_streamed",
        "response_cut_short",
        "error.type",
        "exception.type",
        "exception.message",
        "exception.stacktrace",
    }
)
"""What the documented LogQL queries, the Grafana dashboard and the error views read; the record's
ids, severity and body, ``sample_rate`` and the captured headers (opt-in) always come too."""

OPTIONAL_LOG_ATTRIBUTES: Final = (
    "url.query",
    "url.scheme",
    "http.request.body.size",
    "http.response.body.size",
    "http.response.header.content-type",
    "client.address",
    "user_agent.original",
    "server.address",
)
"""Sent only when ``log_attributes`` names them (or is ``full``), in this order."""

FULL_LOG_ATTRIBUTES: Final = DEFAULT_LOG_ATTRIBUTES | frozenset(OPTIONAL_LOG_ATTRIBUTES)

SAMPLE_RATE_ATTRIBUTE: Final = "sample_rate"

_NAMED_SETS: Final = {"default": DEFAULT_LOG_ATTRIBUTES, "full": FULL_LOG_ATTRIBUTES}


def parse_log_attributes(name: str, value: object) -> frozenset[str]:
    """``default``, ``full``, or attribute names (a list or comma-separated; ``default`` and
    ``full`` may be among them); an unknown name is a ``ValueError`` naming the setting."""
    parts = value.split(",") if isinstance(value, str) else value
    if not isinstance(parts, Iterable):
        raise ValueError(f"{name}: expected 'default', 'full' or attribute names, got {value!r}")  # noqa: TRY004 - becomes the ConfigError
    selected: set[str] = set()
    for part in (str(part).strip() for part in parts):
        if part in _NAMED_SETS:
            selected |= _NAMED_SETS[part]
        elif part in FULL_LOG_ATTRIBUTES:
            selected.add(part)
        elif part:
            known = ", ".join(sorted(FULL_LOG_ATTRIBUTES))
            raise ValueError(f"{name}: unknown log attribute {part!r} (known: default, full, {known})")
    # The two named sets as themselves: the attribute builder knows them without comparing.
    return next((named for named in _NAMED_SETS.values() if named == selected), frozenset(selected))


def _number(name: str, value: object, expected: str, acceptable: Callable[[float], bool]) -> float:
    try:
        number = float(value if isinstance(value, (int, float)) else str(value).strip())
    except ValueError:
        number = math.nan
    if not acceptable(number):  # NaN never is
        raise ValueError(f"{name}: expected {expected}, got {value!r}")
    return number


def parse_sample_ratio(name: str, value: object) -> float:
    return _number(name, value, "a number in (0, 1]", lambda ratio: 0.0 < ratio <= 1.0)


def parse_slow_request_ms(name: str, value: object) -> float:
    return _number(name, value, "a number of milliseconds >= 0", lambda threshold: threshold >= 0.0)


class LogSampler:
    """Keeps every error (5xx, unhandled exception) and every request of at least ``slow_request_ms``;
    of the rest, those whose trace id passes the test OTel's ``TraceIdRatioBased`` sampler applies at
    ``ratio``, so the same ratio for traces and logs keeps the logs whose traces exist. A request
    without a trace id is kept with probability ``ratio``."""

    __slots__ = ("_bound", "_ratio", "_sampled_rate", "_slow_request_ms")

    def __init__(self, ratio: float, slow_request_ms: float) -> None:
        self._ratio = ratio
        self._bound = TraceIdRatioBased.get_bound_for_rate(ratio)
        self._sampled_rate = 1.0 / ratio
        self._slow_request_ms = slow_request_ms

    def sample_rate(self, record: RequestRecord) -> float | None:
        """The ``sample_rate`` the record's log carries (the inverse of its chance to be kept), or
        None when it is not logged."""
        if self._ratio >= 1.0 or record.is_server_error:  # 5xx, or an exception whatever the status
            return 1.0
        if record.duration_ms >= self._slow_request_ms:
            return 1.0
        if record.trace_id is not None:
            kept = int(record.trace_id, 16) & TraceIdRatioBased.TRACE_ID_LIMIT < self._bound
        else:
            kept = random.random() < self._ratio  # noqa: S311 - a sampling decision, not a secret
        return self._sampled_rate if kept else None
