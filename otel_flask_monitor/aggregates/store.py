"""The rolling window of one process: a ring of slots fed one :class:`RequestRecord` at a time.

The window is a ring of ``window_seconds / slot_seconds`` slots. Each request lands in the newest slot
only, so every older slot is immutable: a snapshot copies the newest slot under the lock and merges the
rest without it (merge.py), and the per-request critical section is a handful of attribute and dict
updates. Memory is bounded by ``max_routes + 1`` keys (the rest share ``<other>``) times the slot
count (each with at most ``counts.STATUS_CODES_PER_ROUTE + 1`` status codes and
``counts.SLOWEST_PER_SLOT`` slowest requests), and by ``recent_errors`` entries per error list;
docs/performance.md gives the measured figures.
"""

from __future__ import annotations

import heapq
import math
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from operator import attrgetter
from typing import Any, Final, Protocol

from otel_flask_monitor.aggregates.counts import (
    OTHER_STATUS,
    SLOWEST_PER_SLOT,
    STATUS_CODES_PER_ROUTE,
    RouteCounts,
    RouteKey,
    Slot,
    SlowRequest,
)
from otel_flask_monitor.aggregates.drill import RouteSlot, RouteSlots, route_detail, route_slots_of
from otel_flask_monitor.aggregates.live_objectives import (
    ObjectiveCounts,
    ObjectiveSource,
    add_objective_counts,
    objective_rows,
    short_counts,
    short_window,
)
from otel_flask_monitor.aggregates.merge import (
    ObjectiveRows,
    WindowMerger,
    WindowState,
    covered_seconds,
    window_bounds,
)
from otel_flask_monitor.aggregates.sketch import MIN_LATENCY_MS, raw_bucket_key
from otel_flask_monitor.record import UNMATCHED_ROUTE, RequestRecord, method_key
from otel_flask_monitor.redaction import truncate

OVERFLOW_ROUTE: Final = "<other>"
"""Route key shared by every (method, route) pair beyond ``max_routes``."""
OVERFLOW_METHOD: Final = "*"
MAX_TEXT_LENGTH: Final = 300
"""Longest path or user agent kept in the recent-error lists (they are shown, not analysed)."""


class WindowSettings(Protocol):
    """The part of :class:`~otel_flask_monitor.config.MonitorSettings` the store reads (config.py
    imports Flask; this package must not)."""

    @property
    def window_seconds(self) -> int: ...
    @property
    def slot_seconds(self) -> int: ...
    @property
    def max_routes(self) -> int: ...
    @property
    def recent_errors(self) -> int: ...


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
        return dict(zip(ERROR_FIELDS, _error_values(self), strict=True))


ERROR_FIELDS: Final = tuple(f.name for f in fields(RecentError))
"""The keys of a recent error in the stats document, in order."""
_error_values: Final = attrgetter(*ERROR_FIELDS)


def _clipped(text: str | None) -> str | None:
    return None if text is None else truncate(text, MAX_TEXT_LENGTH)


class AggregateStore:
    """Rolling-window statistics per (method, route key), fed one :class:`RequestRecord` at a time.

    The window's settings have no defaults here: they are options (docs/configuration.md), resolved
    once by the configuration; :meth:`from_settings` takes them from there. ``clock`` returns Unix
    seconds; tests inject their own. ``latency_threshold`` gives a route's latency objective (the
    ``latency_met`` counter counts requests within it). Thread-safe.
    """

    def __init__(
        self,
        *,
        window_seconds: int,
        slot_seconds: int,
        max_routes: int,
        recent_errors: int,
        clock: Callable[[], float] = time.time,
        objectives: ObjectiveSource | None = None,
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
        self.objectives = objectives
        self._start_afresh()
        _LIVE_STORES.add(self)

    @classmethod
    def from_settings(
        cls,
        settings: WindowSettings,
        clock: Callable[[], float] = time.time,
        objectives: ObjectiveSource | None = None,
    ) -> AggregateStore:
        return cls(
            window_seconds=settings.window_seconds,
            slot_seconds=settings.slot_seconds,
            max_routes=settings.max_routes,
            recent_errors=settings.recent_errors,
            clock=clock,
            objectives=objectives,
        )

    def _start_afresh(self) -> None:
        self._lock = threading.Lock()
        self._started_unix = self.clock()
        self._newest_number = self._slot_number(self._started_unix)
        self._ring: list[Slot | None] = [None] * self.slot_count
        # Tracked keys and the newest slot each was seen in; keys idle for a whole window are
        # forgotten (at most once per slot) so that a new route can take their place.
        self._tracked: dict[RouteKey, int] = {}
        self._pruned_at_number = self._newest_number
        self._recent_server_errors: deque[RecentError] = deque(maxlen=self.recent_errors)
        self._recent_client_errors: deque[RecentError] = deque(maxlen=self.recent_errors)
        self._window_lock = threading.Lock()
        self._merger = self.merger()

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
        master that served requests, say), and a parent's thread may have held the locks at fork time."""
        self._start_afresh()

    def _slot_number(self, unix_seconds: float) -> int:
        return int(unix_seconds // self.slot_seconds)

    def record(self, record: RequestRecord) -> None:
        """The consumer: count one finished request."""
        now = self.clock()
        method = method_key(record.method)
        route = record.route if record.route is not None else UNMATCHED_ROUTE
        duration = record.duration_ms
        bucket = raw_bucket_key(duration if duration > MIN_LATENCY_MS else MIN_LATENCY_MS)
        status = record.status_code
        server_error = status >= 500 or record.exception is not None
        client_error = not server_error and status >= 400
        path = truncate(record.path, MAX_TEXT_LENGTH)
        error = _recent_error(record, now, method, route, path) if server_error or client_error else None
        request_bytes = record.request_size or 0
        response_bytes = record.response_size or 0
        latency_met = self._latency_met(method, record)
        slow: SlowRequest = (duration, now, status, path, record.trace_id or "")
        code = status if 100 <= status <= 599 else OTHER_STATUS
        key = (method, route)
        with self._lock:
            slot, key = self._slot_locked(now, key)
            counts = slot.routes.get(key)
            if counts is None:
                counts = slot.routes[key] = RouteCounts()
            total = slot.total
            # Every counter of counts.COUNTERS that a request changes, by name (the fast way).
            counts.requests += 1
            total.requests += 1
            counts.latency[bucket] = counts.latency.get(bucket, 0) + 1
            total.latency[bucket] = total.latency.get(bucket, 0) + 1
            counts.request_bytes += request_bytes
            total.request_bytes += request_bytes
            counts.response_bytes += response_bytes
            total.response_bytes += response_bytes
            _count_breakdowns(slot, key, code, slow, latency_met)
            if error is not None:
                if server_error:
                    counts.server_errors += 1
                    total.server_errors += 1
                    self._recent_server_errors.append(error)
                else:
                    counts.client_errors += 1
                    total.client_errors += 1
                    self._recent_client_errors.append(error)

    def _slot_locked(self, now: float, key: RouteKey) -> tuple[Slot, RouteKey]:
        """The slot ``now`` writes to (started if new) and the key ``key`` is counted under."""
        number = int(now // self.slot_seconds)
        if number < self._newest_number:
            number = self._newest_number  # a clock stepping back never rewrites an older slot
        else:
            self._newest_number = number
        index = number % self.slot_count
        slot = self._ring[index]
        if slot is None or slot.number != number:
            slot = self._ring[index] = Slot(number)
        if key in self._tracked:
            self._tracked[key] = number
        else:
            key = self._admit_locked(key, number)
        return slot, key

    def _latency_met(self, method: str, record: RequestRecord) -> bool:
        """Whether the request met its route's latency objective (False: missed it, or none)."""
        objectives = self.objectives
        if objectives is None or record.route is None:
            return False
        try:
            threshold = objectives.latency_threshold_ms(method, record.route)
        except Exception:  # the objective counter, a consumer of the same record, reports it
            return False
        return threshold is not None and record.duration_ms <= threshold

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
            closed: dict[int, Slot] = {}
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
        objectives = self.objective_rows(lambda short: [short_counts(state.slots(), short)])
        with self._window_lock:
            document = self._merger.document({"": state}, now, objectives=objectives)
        document["per_process"] = True
        return document

    def objective_rows(
        self, short_counts: Callable[[range], list[dict[RouteKey, ObjectiveCounts]]]
    ) -> ObjectiveRows | None:
        """How a merger makes the ``objectives`` list, given the sources' counts over a short window
        (None without objectives)."""
        source = self.objectives
        if source is None:
            return None

        def rows(routes: Mapping[RouteKey, RouteCounts], window: range) -> list[dict[str, Any]] | None:
            table = source.objective_table()
            if not table:
                return None  # nothing declared (or resolved yet): the document has no objectives list
            short: dict[RouteKey, ObjectiveCounts] = {}
            for counts in short_counts(short_window(window, self.slot_seconds)):
                add_objective_counts(short, counts)
            return objective_rows(table, routes, short)

        return rows

    def window_of(self, now: float, newest_numbers: Iterable[int]) -> range:
        return window_bounds(now, newest_numbers, self.slot_seconds, self.slot_count)

    def route_detail(self, key: RouteKey) -> dict[str, Any] | None:
        """The drill-down of ``key`` over this process's window (None: no request in it)."""
        now = self.clock()
        state = self.window_state()
        window = self.window_of(now, [state.newest_number])
        detail = self.route_detail_of(
            key, [route_slots_of(state.slots(), key)], now, window, state.started_unix
        )
        if detail is not None:
            detail["per_process"] = True
        return detail

    def route_detail_of(
        self,
        key: RouteKey,
        parts: Iterable[Iterable[RouteSlot]],
        now: float,
        window: range,
        started_unix: float,
    ) -> dict[str, Any] | None:
        """The drill-down from the route's slots of each source ((number, counts, slowest) each)."""
        slots = RouteSlots(key)
        for part in parts:
            for number, counts, slowest in part:
                if number in window:
                    slots.add(number, counts, slowest)
        return route_detail(
            slots,
            generated_at_unix=now,
            window=window,
            window_seconds=self.window_seconds,
            slot_seconds=self.slot_seconds,
            covered_seconds=covered_seconds(now, window, self.slot_seconds, started_unix),
        )


def _recent_error(record: RequestRecord, now: float, method: str, route: str, path: str) -> RecentError:
    return RecentError(
        time_unix=now,
        method=method,
        route=route,
        path=path,
        status_code=record.status_code,
        exception_type=record.exception.type if record.exception is not None else None,
        trace_id=record.trace_id,
        user_agent=_clipped(record.user_agent),
    )


def _count_breakdowns(slot: Slot, key: RouteKey, code: int, slow: SlowRequest, latency_met: bool) -> None:
    """The counts beside the counters: the objective's, status codes, the route's slowest requests."""
    counts = slot.routes[key]
    if latency_met:
        counts.latency_met += 1
    _count_status(counts.statuses, code)
    _count_status(slot.total.statuses, code)
    slowest = slot.slowest.get(key)
    if slowest is None:
        slot.slowest[key] = [slow]
    elif len(slowest) < SLOWEST_PER_SLOT:
        heapq.heappush(slowest, slow)
    elif slow > slowest[0]:
        heapq.heapreplace(slowest, slow)


def _count_status(statuses: dict[int, int], code: int) -> None:
    if code not in statuses and len(statuses) >= STATUS_CODES_PER_ROUTE:
        code = OTHER_STATUS
    statuses[code] = statuses.get(code, 0) + 1


_LIVE_STORES: Final[weakref.WeakSet[AggregateStore]] = weakref.WeakSet()
"""Every store of this process, held weakly: a store goes with its app."""


def reset_stores_after_fork() -> None:
    """In a forked child: every store starts afresh (see :meth:`AggregateStore.after_fork_in_child`)."""
    for store in list(_LIVE_STORES):
        store.after_fork_in_child()
