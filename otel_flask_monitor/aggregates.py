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

A snapshot is built by a :class:`WindowMerger` from one or several :class:`WindowState` (one per
process): the store's own for ``snapshot()``; under a pre-fork server, also the other workers' windows
read back from files (otel_flask_monitor/multiprocess.py, :func:`encode_slot`/:func:`decode_slot`).
Slots are numbered ``unix_time // slot_seconds``, so the slots of different processes line up.

Memory is bounded by ``max_routes + 1`` keys (the rest share ``<other>``) times the slot count, and
by ``recent_errors`` entries per error list; docs/dashboard.md gives the measured figures.
"""

from __future__ import annotations

import heapq
import math
import threading
import time
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from itertools import accumulate, islice
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


@dataclass(frozen=True, slots=True)
class WindowState:
    """A consistent view of one store's window: what :meth:`AggregateStore.snapshot` reads, what a
    worker writes for the others (otel_flask_monitor/multiprocess.py), and what a merge combines.

    ``closed`` slots are immutable (the store never writes them again); ``current`` is a private copy
    of the slot still written, numbered ``newest_number``. Error lists are newest first.
    """

    started_unix: float
    newest_number: int
    closed: dict[int, _Slot]
    current: _Slot | None
    recent_errors: list[dict[str, Any]]
    recent_client_errors: list[dict[str, Any]]
    tracked_routes: int


class WindowMerger:
    """Builds the ``/monitoring/stats`` document from one or several :class:`WindowState` (one per
    process), keeping running sums of their closed slots between calls.

    A closed slot is added to the sums once, the first time it is seen, and subtracted once, when it
    leaves the window or its source is gone, so a document costs O(sources x routes x buckets) for
    the slots still written, not O(routes x slots x buckets). Not thread-safe: callers serialise.
    """

    def __init__(
        self, *, window_seconds: int, slot_seconds: int, max_routes: int, recent_errors: int
    ) -> None:
        self.window_seconds = window_seconds
        self.slot_seconds = slot_seconds
        self.slot_count = math.ceil(window_seconds / slot_seconds)
        self.max_routes = max_routes
        self.recent_errors = recent_errors
        self._slots: dict[tuple[str, int], _Slot] = {}
        self._routes: dict[RouteKey, _RouteSlot] = {}
        self._total = _RouteSlot()
        # Slot number -> (the sources whose closed slots were merged, the merged timeline entry).
        self._timeline: dict[int, tuple[frozenset[str], dict[str, Any]]] = {}

    def held_slot(self, source: str, number: int) -> _Slot | None:
        """A closed slot already in the sums (so a reader need not load it again)."""
        return self._slots.get((source, number))

    def document(self, sources: Mapping[str, WindowState], now: float) -> dict[str, Any]:
        if not sources:
            raise ValueError("need at least one source")
        newest = max(int(now // self.slot_seconds), *(state.newest_number for state in sources.values()))
        oldest = newest - self.slot_count + 1
        closed = {
            (source, number): slot
            for source, state in sources.items()
            for number, slot in state.closed.items()
            if oldest <= number <= newest
        }
        currents = [
            state.current
            for state in sources.values()
            if state.current is not None and oldest <= state.current.number <= newest
        ]
        started = min(state.started_unix for state in sources.values())
        window_start = oldest * self.slot_seconds
        covered_seconds = max(now - max(window_start, started), 1.0)

        self._sync(closed)
        total = self._total.copy()
        route_stats = dict(self._routes)
        owned: set[RouteKey] = set()  # entries this call may mutate (the rest belong to the sums)
        for current in currents:
            total.add(current.total)
            for key, stats in current.routes.items():
                existing = route_stats.get(key)
                if existing is None:
                    route_stats[key] = stats
                elif key in owned:
                    existing.add(stats)
                else:
                    merged = existing.copy()
                    merged.add(stats)
                    route_stats[key] = merged
                    owned.add(key)
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
            "tracked_routes": max(state.tracked_routes for state in sources.values()),
            "totals": _route_row(None, None, total, covered_seconds),
            "routes": route_rows,
            "timeline": self._timeline_entries(oldest, newest, closed, currents),
            "recent_errors": self._newest_errors([s.recent_errors for s in sources.values()]),
            "recent_client_errors": self._newest_errors([s.recent_client_errors for s in sources.values()]),
        }

    def _newest_errors(self, lists: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
        if len(lists) == 1:
            return lists[0][: self.recent_errors]
        merged = heapq.merge(*lists, key=lambda error: float(error["time_unix"]), reverse=True)
        return list(islice(merged, self.recent_errors))

    def _sync(self, closed_in_window: Mapping[tuple[str, int], _Slot]) -> None:
        routes = self._routes
        for key in [k for k in self._slots if k not in closed_in_window]:
            expired = self._slots.pop(key)
            self._total.subtract(expired.total)
            for route, stats in expired.routes.items():
                remaining = routes[route]
                remaining.subtract(stats)
                if not remaining.requests:
                    del routes[route]
        for key, slot in closed_in_window.items():
            if key in self._slots:
                continue
            self._slots[key] = slot
            self._total.add(slot.total)
            for route, stats in slot.routes.items():
                existing = routes.get(route)
                if existing is None:
                    routes[route] = stats.copy()
                else:
                    existing.add(stats)

    def _timeline_entries(
        self,
        oldest: int,
        newest: int,
        closed: Mapping[tuple[str, int], _Slot],
        currents: list[_Slot],
    ) -> list[dict[str, Any]]:
        closed_by_number: dict[int, list[tuple[str, _Slot]]] = {}
        for (source, number), slot in closed.items():
            closed_by_number.setdefault(number, []).append((source, slot))
        current_by_number: dict[int, list[_Slot]] = {}
        for current in currents:
            current_by_number.setdefault(current.number, []).append(current)
        for number in [n for n in self._timeline if n < oldest]:
            del self._timeline[number]
        timeline = []
        for number in range(oldest, newest + 1):
            start = number * self.slot_seconds
            parts = closed_by_number.get(number, [])
            writing = current_by_number.get(number, [])
            if not writing and len(parts) == 1:
                slot = parts[0][1]
                if slot.timeline_entry is None:
                    slot.timeline_entry = _timeline_entry(start, slot.total)
                timeline.append(dict(slot.timeline_entry))
                continue
            if not writing and parts:
                sources = frozenset(source for source, _ in parts)
                cached = self._timeline.get(number)
                if cached is None or cached[0] != sources:
                    merged = _RouteSlot()
                    for _, slot in parts:
                        merged.add(slot.total)
                    cached = self._timeline[number] = (sources, _timeline_entry(start, merged))
                timeline.append(dict(cached[1]))
                continue
            stats = _RouteSlot()
            for _, slot in parts:
                stats.add(slot.total)
            for slot in writing:
                stats.add(slot.total)
            timeline.append(_timeline_entry(start, stats))
        return timeline


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
        self.recent_errors = recent_errors
        self.slot_count = math.ceil(window_seconds / slot_seconds)
        self.clock = clock
        self._lock = threading.Lock()
        self._started_unix = clock()
        self._newest_number = self._slot_number(self._started_unix)
        self._ring: list[_Slot | None] = [None] * self.slot_count
        # Tracked keys and the newest slot each was seen in; keys idle for a whole window are
        # forgotten (at most once per slot) so that a new route can take their place.
        self._tracked: dict[RouteKey, int] = {}
        self._pruned_at_number = self._newest_number
        self._window_lock = threading.Lock()
        self._merger = self.merger()
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

    def merger(self) -> WindowMerger:
        """A new :class:`WindowMerger` with this store's window settings."""
        return WindowMerger(
            window_seconds=self.window_seconds,
            slot_seconds=self.slot_seconds,
            max_routes=self.max_routes,
            recent_errors=self.recent_errors,
        )

    def after_fork_in_child(self) -> None:
        """Start afresh in a forked child: what the store holds describes the parent (a preloading
        master, say), and a parent's thread may have held the locks at fork time."""
        self._lock = threading.Lock()
        self._window_lock = threading.Lock()
        self._started_unix = self.clock()
        self._newest_number = self._slot_number(self._started_unix)
        self._ring = [None] * self.slot_count
        self._tracked = {}
        self._pruned_at_number = self._newest_number
        self._merger = self.merger()
        self._recent_server_errors.clear()
        self._recent_client_errors.clear()

    def _slot_number(self, unix_seconds: float) -> int:
        return int(unix_seconds // self.slot_seconds)

    def record(self, record: RequestRecord) -> None:
        """The consumer: count one finished request."""
        now = self.clock()
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

    @property
    def has_recorded(self) -> bool:
        """Whether any request was recorded since the store started (or the process forked): a slot
        leaves the ring only when a newer one takes its place, never empty-handed."""
        return any(slot is not None for slot in self._ring)

    def window_state(self) -> WindowState:
        """A consistent view of the window: the closed slots as they are (immutable), a copy of the
        slot still written, the recent errors. Holds the recording lock only for the copy."""
        with self._lock:
            writable = self._newest_number
            closed: dict[int, _Slot] = {}
            current = None
            for slot in self._ring:
                if slot is None:
                    continue
                if slot.number == writable:
                    current = slot.copy()
                else:
                    closed[slot.number] = slot
            server_errors = [error.as_dict() for error in reversed(self._recent_server_errors)]
            client_errors = [error.as_dict() for error in reversed(self._recent_client_errors)]
            tracked_routes = len(self._tracked)
        return WindowState(
            started_unix=self._started_unix,
            newest_number=writable,
            closed=closed,
            current=current,
            recent_errors=server_errors,
            recent_client_errors=client_errors,
            tracked_routes=tracked_routes,
        )

    def snapshot(self) -> dict[str, Any]:
        """The JSON document served at ``/monitoring/stats`` (schema: docs/dashboard.md)."""
        now = self.clock()
        state = self.window_state()
        with self._window_lock:
            document = self._merger.document({"": state}, now)
        document["per_process"] = True
        return document


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


# The wire form of a slot, for the files workers exchange (otel_flask_monitor/multiprocess.py): plain
# JSON lists, bucket maps flattened to [key, count, key, count, ...] (JSON object keys are strings).


class MalformedStateError(ValueError):
    """Exchanged data that is not what :func:`encode_slot` or :meth:`RecentError.as_dict` wrote."""


def _encode_stats(stats: _RouteSlot) -> list[Any]:
    flat: list[int] = []
    for key, count in stats.latency.items():
        flat.append(key)
        flat.append(count)
    return [
        stats.requests,
        stats.client_errors,
        stats.server_errors,
        stats.request_bytes,
        stats.response_bytes,
        flat,
    ]


def _count(value: object) -> int:
    if type(value) is not int or value < 0:
        raise MalformedStateError(f"not a count: {value!r}")
    return value


def _decode_stats(raw: object) -> _RouteSlot:
    if not isinstance(raw, list) or len(raw) != 6 or not isinstance(raw[5], list) or len(raw[5]) % 2:
        raise MalformedStateError("malformed route statistics")
    stats = _RouteSlot()
    stats.requests = _count(raw[0])
    stats.client_errors = _count(raw[1])
    stats.server_errors = _count(raw[2])
    stats.request_bytes = _count(raw[3])
    stats.response_bytes = _count(raw[4])
    flat = raw[5]
    for index in range(0, len(flat), 2):
        key = flat[index]
        if type(key) is not int:
            raise MalformedStateError(f"not a bucket key: {key!r}")
        stats.latency[key] = stats.latency.get(key, 0) + _count(flat[index + 1])
    return stats


def encode_slot(slot: _Slot) -> dict[str, Any]:
    """A slot as JSON-ready data; :func:`decode_slot` gives back an equal slot."""
    return {
        "number": slot.number,
        "total": _encode_stats(slot.total),
        "routes": [[method, route, _encode_stats(stats)] for (method, route), stats in slot.routes.items()],
    }


def decode_slot(raw: object) -> _Slot:
    """The inverse of :func:`encode_slot`; raises :class:`MalformedStateError` on anything malformed."""
    if (
        not isinstance(raw, dict)
        or type(raw.get("number")) is not int
        or not isinstance(raw.get("routes"), list)
    ):
        raise MalformedStateError("malformed slot")
    slot = _Slot(raw["number"])
    slot.total = _decode_stats(raw.get("total"))
    for entry in raw["routes"]:
        if not isinstance(entry, list) or len(entry) != 3:
            raise MalformedStateError("malformed route entry")
        method, route, stats = entry
        if not isinstance(method, str) or not isinstance(route, str):
            raise MalformedStateError("malformed route key")
        route_stats = _decode_stats(stats)
        if route_stats.requests == 0:
            # A recorded route always has a request; the running sums assume so when they subtract it.
            raise MalformedStateError("route statistics without requests")
        slot.routes[(method, route)] = route_stats
    return slot


_ERROR_FIELDS: Final = {
    "time_unix": (int, float),
    "method": (str,),
    "route": (str,),
    "path": (str,),
    "status_code": (int,),
    "exception_type": (str, type(None)),
    "trace_id": (str, type(None)),
    "user_agent": (str, type(None)),
}


def decode_errors(raw: object) -> list[dict[str, Any]]:
    """A recent-error list as :meth:`RecentError.as_dict` wrote it (newest first), checked."""
    if not isinstance(raw, list):
        raise MalformedStateError("malformed error list")
    errors: list[dict[str, Any]] = []
    for entry in raw:
        if not isinstance(entry, dict):
            raise MalformedStateError("malformed error entry")
        error = {name: entry.get(name) for name in _ERROR_FIELDS}
        for name, kinds in _ERROR_FIELDS.items():
            if not isinstance(error[name], kinds) or isinstance(error[name], bool):
                raise MalformedStateError(f"malformed error field {name!r}")
        errors.append(error)
    return errors
