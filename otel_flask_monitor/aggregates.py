"""Rolling-window per-route statistics in bounded memory. No Flask import: testable on its own.

The window is a ring of slots (``window_seconds / slot_seconds`` of them). Each request lands in the
newest slot only, so every older slot is immutable: a snapshot copies the newest slot under the lock
and merges the rest without it, and the per-request critical section is a handful of dict updates.

Latency percentiles use DDSketch's logarithmic key mapping (``ddsketch.mapping.LogarithmicMapping``
at 1 % relative accuracy): a latency is stored as the count of its bucket key, and the value read
back for a key is within 1 % of every value that maps to it, so any percentile is within 1 % of the
exact sample at that rank. The buckets are kept in a plain ``dict`` (sparse) instead of a
``DDSketch`` object per slot: a DDSketch's dense store allocates at least 128 bins, about 2.5 KB
per sketch against about 0.6 KB for the dict, and with one sketch per route per slot
(200 routes x 90 slots at the defaults) that difference is the memory bound. Merging slots is
adding counts per key, which is exactly DDSketch's merge.

Memory is bounded by ``max_routes + 1`` keys (the rest share ``<other>``) times the slot count, and
by ``recent_errors`` entries per error list; docs/dashboard.md gives the measured figures.
"""

from __future__ import annotations

import math
import threading
import time
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, Final, Protocol

from ddsketch.mapping import LogarithmicMapping

from otel_flask_monitor.record import UNMATCHED_ROUTE, RequestRecord

OVERFLOW_ROUTE: Final = "<other>"
"""Route key shared by every (method, route) pair beyond ``max_routes``."""
OVERFLOW_METHOD: Final = "*"
OTHER_METHOD: Final = "_OTHER"
"""Method key of requests with a non-standard method (as ``http.request.method`` spells it), so
clients inventing methods cannot create keys."""

KNOWN_METHODS: Final = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE", "QUERY"}
)
RELATIVE_ACCURACY: Final = 0.01
QUANTILES: Final = (0.5, 0.95, 0.99)
MAX_TEXT_LENGTH: Final = 300
"""Longest path or user agent kept in the recent-error lists (they are shown, not analysed)."""

# Durations are clamped to 1 ns so that the logarithmic mapping always has a key.
_MIN_LATENCY_MS: Final = 1e-6

_MAPPING: Final = LogarithmicMapping(RELATIVE_ACCURACY)
_bucket_key: Final = _MAPPING.key


class WindowSettings(Protocol):
    """The part of :class:`~otel_flask_monitor.config.MonitorSettings` the store reads (config.py
    imports Flask; this module must not)."""

    @property
    def window_seconds(self) -> int: ...
    @property
    def slot_seconds(self) -> int: ...
    @property
    def max_routes(self) -> int: ...
    @property
    def recent_errors(self) -> int: ...


RouteKey = tuple[str, str]
LatencyBuckets = dict[int, int]


def latency_key(duration_ms: float) -> int:
    """Bucket key of a duration; :func:`latency_of_key` gives it back within 1 %."""
    return int(_bucket_key(max(duration_ms, _MIN_LATENCY_MS)))


def latency_of_key(key: int) -> float:
    return float(_MAPPING.value(key))


def quantiles(buckets: LatencyBuckets, wanted: Iterable[float] = QUANTILES) -> list[float | None]:
    """Values at ranks ``q * (n - 1)`` of the counted durations (DDSketch's definition)."""
    keys = sorted(buckets)
    cumulative = list(accumulate(map(buckets.__getitem__, keys)))
    if not cumulative or cumulative[-1] == 0:
        return [None for _ in wanted]
    total = cumulative[-1]
    # The first key whose cumulative count exceeds the rank holds the sample at that rank.
    return [latency_of_key(keys[bisect_right(cumulative, q * (total - 1))]) for q in wanted]


def _merge_into(target: LatencyBuckets, source: LatencyBuckets) -> None:
    for key, count in source.items():
        target[key] = target.get(key, 0) + count


class _RouteSlot:
    __slots__ = ("client_errors", "latency", "request_bytes", "requests", "response_bytes", "server_errors")

    def __init__(self) -> None:
        self.requests = 0
        self.client_errors = 0
        self.server_errors = 0
        self.request_bytes = 0
        self.response_bytes = 0
        self.latency: LatencyBuckets = {}

    def copy(self) -> _RouteSlot:
        clone = _RouteSlot()
        clone.requests = self.requests
        clone.client_errors = self.client_errors
        clone.server_errors = self.server_errors
        clone.request_bytes = self.request_bytes
        clone.response_bytes = self.response_bytes
        clone.latency = dict(self.latency)
        return clone

    def add(self, other: _RouteSlot) -> None:
        self.requests += other.requests
        self.client_errors += other.client_errors
        self.server_errors += other.server_errors
        self.request_bytes += other.request_bytes
        self.response_bytes += other.response_bytes
        _merge_into(self.latency, other.latency)

    def subtract(self, other: _RouteSlot) -> None:
        """Exact inverse of :meth:`add` (counts only), so a window sum can drop an expired slot."""
        self.requests -= other.requests
        self.client_errors -= other.client_errors
        self.server_errors -= other.server_errors
        self.request_bytes -= other.request_bytes
        self.response_bytes -= other.response_bytes
        latency = self.latency
        for key, count in other.latency.items():
            remaining = latency[key] - count
            if remaining:
                latency[key] = remaining
            else:
                del latency[key]


class _Slot:
    """One slot of the ring: per-route stats plus the global totals the timeline charts."""

    __slots__ = ("number", "routes", "timeline_entry", "total")

    def __init__(self, number: int) -> None:
        self.number = number
        self.routes: dict[RouteKey, _RouteSlot] = {}
        self.total = _RouteSlot()
        self.timeline_entry: dict[str, Any] | None = None
        """Computed once the slot is closed (immutable), then reused by every snapshot."""

    def copy(self) -> _Slot:
        clone = _Slot(self.number)
        clone.routes = {key: stats.copy() for key, stats in self.routes.items()}
        clone.total = self.total.copy()
        return clone


@dataclass(frozen=True, slots=True)
class RecentError:
    time_unix: float
    method: str
    route: str
    path: str
    status_code: int
    exception_type: str | None
    trace_id: str | None
    user_agent: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "time_unix": self.time_unix,
            "method": self.method,
            "route": self.route,
            "path": self.path,
            "status_code": self.status_code,
            "exception_type": self.exception_type,
            "trace_id": self.trace_id,
            "user_agent": self.user_agent,
        }


def _clip(text: str | None) -> str | None:
    if text is None or len(text) <= MAX_TEXT_LENGTH:
        return text
    return text[: MAX_TEXT_LENGTH - 3] + "..."


def _significant(value: float, digits: int = 6) -> float:
    return float(f"{value:.{digits}g}")


def _ratio(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def _latency_dict(buckets: LatencyBuckets, names: tuple[str, ...] = ("p50", "p95", "p99")) -> dict[str, Any]:
    wanted = {"p50": 0.5, "p95": 0.95, "p99": 0.99}
    values = quantiles(buckets, [wanted[name] for name in names])
    # 4 significant digits: readable JSON, and at most 0.05 % on top of the mapping's 1 %.
    return {
        name: None if value is None else _significant(value, 4)
        for name, value in zip(names, values, strict=True)
    }


class AggregateStore:
    """Rolling-window statistics per (method, route key), fed one :class:`RequestRecord` at a time.

    ``clock`` returns Unix seconds; tests inject their own. Thread-safe.
    """

    def __init__(
        self,
        *,
        window_seconds: int = 900,
        slot_seconds: int = 10,
        max_routes: int = 200,
        recent_errors: int = 50,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if slot_seconds <= 0 or window_seconds < slot_seconds:
            raise ValueError("need 0 < slot_seconds <= window_seconds")
        if max_routes <= 0 or recent_errors <= 0:
            raise ValueError("max_routes and recent_errors must be positive")
        self.window_seconds = window_seconds
        self.slot_seconds = slot_seconds
        self.max_routes = max_routes
        self.slot_count = math.ceil(window_seconds / slot_seconds)
        self._clock = clock
        self._lock = threading.Lock()
        self._started_unix = clock()
        self._newest_number = self._slot_number(self._started_unix)
        self._ring: list[_Slot | None] = [None] * self.slot_count
        # Tracked keys and the newest slot each was seen in; keys idle for a whole window are
        # forgotten (at most once per slot) so that a new route can take their place.
        self._tracked: dict[RouteKey, int] = {}
        self._pruned_at_number = self._newest_number
        # Running sums over the closed slots of the window (every slot but the one still written), kept
        # by snapshot(): a slot is added once when it closes and subtracted once when it expires, so
        # a snapshot costs O(routes x buckets), not O(routes x slots x buckets).
        self._window_lock = threading.Lock()
        self._closed_slots: dict[int, _Slot] = {}
        self._closed_routes: dict[RouteKey, _RouteSlot] = {}
        self._closed_total = _RouteSlot()
        self._recent_server_errors: deque[RecentError] = deque(maxlen=recent_errors)
        self._recent_client_errors: deque[RecentError] = deque(maxlen=recent_errors)

    @classmethod
    def from_settings(
        cls, settings: WindowSettings, clock: Callable[[], float] = time.time
    ) -> AggregateStore:
        return cls(
            window_seconds=settings.window_seconds,
            slot_seconds=settings.slot_seconds,
            max_routes=settings.max_routes,
            recent_errors=settings.recent_errors,
            clock=clock,
        )

    def _slot_number(self, unix_seconds: float) -> int:
        return int(unix_seconds // self.slot_seconds)

    def record(self, record: RequestRecord) -> None:
        """The consumer: count one finished request."""
        now = self._clock()
        method = record.method if record.method in KNOWN_METHODS else OTHER_METHOD
        route = record.route if record.route is not None else UNMATCHED_ROUTE
        duration = record.duration_ms
        bucket = _bucket_key(duration if duration > _MIN_LATENCY_MS else _MIN_LATENCY_MS)
        status = record.status_code
        server_error = status >= 500 or record.exception is not None
        client_error = not server_error and status >= 400
        error = None
        if server_error or client_error:
            error = RecentError(
                time_unix=now,
                method=method,
                route=route,
                path=_clip(record.path) or "",
                status_code=status,
                exception_type=record.exception.type if record.exception is not None else None,
                trace_id=record.trace_id,
                user_agent=_clip(record.user_agent),
            )
        request_bytes = record.request_size or 0
        response_bytes = record.response_size or 0
        key = (method, route)
        with self._lock:
            number = int(now // self.slot_seconds)
            if number < self._newest_number:
                number = self._newest_number  # a clock stepping back never rewrites an older slot
            else:
                self._newest_number = number
            index = number % self.slot_count
            slot = self._ring[index]
            if slot is None or slot.number != number:
                slot = self._ring[index] = _Slot(number)
            if key in self._tracked:
                self._tracked[key] = number
            else:
                key = self._admit_locked(key, number)
            stats = slot.routes.get(key)
            if stats is None:
                stats = slot.routes[key] = _RouteSlot()
            total = slot.total
            stats.requests += 1
            total.requests += 1
            stats.latency[bucket] = stats.latency.get(bucket, 0) + 1
            total.latency[bucket] = total.latency.get(bucket, 0) + 1
            stats.request_bytes += request_bytes
            total.request_bytes += request_bytes
            stats.response_bytes += response_bytes
            total.response_bytes += response_bytes
            if error is not None:
                if server_error:
                    stats.server_errors += 1
                    total.server_errors += 1
                    self._recent_server_errors.append(error)
                else:
                    stats.client_errors += 1
                    total.client_errors += 1
                    self._recent_client_errors.append(error)

    def _admit_locked(self, key: RouteKey, number: int) -> RouteKey:
        """Track a new key if there is room (forgetting keys idle for a window), else ``<other>``."""
        tracked = self._tracked
        if len(tracked) >= self.max_routes and self._pruned_at_number != number:
            self._pruned_at_number = number
            oldest_live = number - self.slot_count + 1
            for stale in [k for k, seen in tracked.items() if seen < oldest_live]:
                del tracked[stale]
        if len(tracked) < self.max_routes:
            tracked[key] = number
            return key
        return (OVERFLOW_METHOD, OVERFLOW_ROUTE)

    def snapshot(self) -> dict[str, Any]:
        """The JSON document served at ``/monitoring/stats`` (schema: docs/dashboard.md)."""
        now = self._clock()
        with self._lock:
            newest = max(self._slot_number(now), self._newest_number)
            oldest = newest - self.slot_count + 1
            writable = self._newest_number
            live = {slot.number: slot for slot in self._ring if slot is not None and slot.number >= oldest}
            # Only the slot numbered _newest_number is still written to: copy it; every older slot is
            # immutable and is read below without this lock.
            current = live[writable].copy() if writable in live else None
            server_errors = [error.as_dict() for error in reversed(self._recent_server_errors)]
            client_errors = [error.as_dict() for error in reversed(self._recent_client_errors)]
            tracked_routes = len(self._tracked)

        window_start = oldest * self.slot_seconds
        covered_seconds = max(now - max(window_start, self._started_unix), 1.0)
        timeline = []
        for number in range(oldest, newest + 1):
            start = number * self.slot_seconds
            slot = live.get(number)
            if slot is None:
                timeline.append(_timeline_entry(start, _RouteSlot()))
            elif number == writable and current is not None:
                timeline.append(_timeline_entry(start, current.total))
            else:
                if slot.timeline_entry is None:
                    slot.timeline_entry = _timeline_entry(start, slot.total)
                timeline.append(dict(slot.timeline_entry))
        with self._window_lock:
            self._sync_closed_locked({n: slot for n, slot in live.items() if n != writable})
            total = self._closed_total.copy()
            route_stats = dict(self._closed_routes)
            if current is not None:
                total.add(current.total)
                for key, stats in current.routes.items():
                    closed = route_stats.get(key)
                    if closed is None:
                        route_stats[key] = stats
                    else:
                        merged = closed.copy()
                        merged.add(stats)
                        route_stats[key] = merged
            route_rows = [
                _route_row(method, route, stats, covered_seconds)
                for (method, route), stats in route_stats.items()
                if stats.requests
            ]
        route_rows.sort(key=lambda row: (-row["requests"], row["route"], row["method"]))
        return {
            "generated_at_unix": now,
            "window_seconds": self.window_seconds,
            "slot_seconds": self.slot_seconds,
            "window_start_unix": float(window_start),
            "covered_seconds": round(covered_seconds, 3),
            "max_routes": self.max_routes,
            "tracked_routes": tracked_routes,
            "totals": _route_row(None, None, total, covered_seconds),
            "routes": route_rows,
            "timeline": timeline,
            "recent_errors": server_errors,
            "recent_client_errors": client_errors,
        }

    def _sync_closed_locked(self, closed_in_window: dict[int, _Slot]) -> None:
        routes = self._closed_routes
        for number in [n for n in self._closed_slots if n not in closed_in_window]:
            expired = self._closed_slots.pop(number)
            self._closed_total.subtract(expired.total)
            for key, stats in expired.routes.items():
                remaining = routes[key]
                remaining.subtract(stats)
                if not remaining.requests:
                    del routes[key]
        for number, slot in closed_in_window.items():
            if number in self._closed_slots:
                continue
            self._closed_slots[number] = slot
            self._closed_total.add(slot.total)
            for key, stats in slot.routes.items():
                existing = routes.get(key)
                if existing is None:
                    routes[key] = stats.copy()
                else:
                    existing.add(stats)


def _route_row(method: str | None, route: str | None, stats: _RouteSlot, seconds: float) -> dict[str, Any]:
    errors = stats.client_errors + stats.server_errors
    row: dict[str, Any] = {} if method is None else {"method": method, "route": route}
    row.update(
        {
            "requests": stats.requests,
            "client_errors": stats.client_errors,
            "server_errors": stats.server_errors,
            "error_rate": _significant(_ratio(errors, stats.requests)),
            "server_error_rate": _significant(_ratio(stats.server_errors, stats.requests)),
            "requests_per_second": _significant(stats.requests / seconds),
            "latency_ms": _latency_dict(stats.latency),
            "request_bytes": stats.request_bytes,
            "response_bytes": stats.response_bytes,
        }
    )
    return row


def _timeline_entry(start_unix: int, stats: _RouteSlot) -> dict[str, Any]:
    return {
        "start_unix": float(start_unix),
        "requests": stats.requests,
        "client_errors": stats.client_errors,
        "server_errors": stats.server_errors,
        "latency_ms": _latency_dict(stats.latency, ("p50", "p95")),
    }
