"""What the window counts: per (method, route) and slot, the counters, latency buckets and status codes.

:class:`RouteCounts` holds the counters of :data:`COUNTERS`, the latency buckets and the status-code
breakdown; :class:`Slot` groups them per slot, with each route's slowest requests (a top-N, which cannot
be subtracted, so it lives in the slot and is merged from the slots when read); :class:`SummedSlots`
adds closed slots together.

:data:`COUNTERS` is the one list of the counters: it drives the attributes, copying, adding,
subtracting and the wire form (otel_flask_monitor/aggregates/wire.py), so a new counter is one line
there, plus where the store bumps it (store.py) and where the document shows it (document.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Final

from otel_flask_monitor.aggregates.sketch import LatencyBuckets, add_buckets, subtract_buckets

COUNTERS: Final = (
    "requests",
    "client_errors",
    "server_errors",
    "request_bytes",
    "response_bytes",
    "latency_met",
)
"""Additive integer counters per (method, route) and slot, in the order of their wire form.

``latency_met``: requests answered within the route's latency objective (inclusive; always 0 for a route
without one, and in a slot's ``total``), so that the live objectives are exact counts, not read from the
buckets."""

STATUS_CODES_PER_ROUTE: Final = 16
"""Distinct status codes kept per route and slot; the others (and any code outside 100-599) are counted
under :data:`OTHER_STATUS`."""
OTHER_STATUS: Final = 0

SLOWEST_PER_SLOT: Final = 5
"""The slowest requests kept per route and slot: the window's slowest N are among them."""

SlowRequest = tuple[float, float, int, str, str]
"""(duration ms, time unix, status code, path (redacted, cut), trace id or ""): ordered by duration, so a
route's list is a min-heap with the fastest kept entry first."""

RouteKey = tuple[str, str]
"""(method, route template)."""

counter_values: Final = attrgetter(*COUNTERS)
"""The counters of a :class:`RouteCounts` as a tuple, in :data:`COUNTERS` order."""


class RouteCounts:
    """The counters and latency buckets of one (method, route) (or of all routes) over some slots.

    The recording path bumps the attributes by name, the fastest way CPython knows; everything that
    treats counters alike loops over :data:`COUNTERS`.
    """

    __slots__ = (*COUNTERS, "latency", "statuses")

    requests: int
    client_errors: int
    server_errors: int
    request_bytes: int
    response_bytes: int
    latency_met: int

    def __init__(self) -> None:
        for name in COUNTERS:
            setattr(self, name, 0)
        self.latency: LatencyBuckets = {}
        self.statuses: dict[int, int] = {}
        """Status code (or :data:`OTHER_STATUS`) -> requests answered with it."""

    @classmethod
    def of(
        cls, values: Sequence[int], latency: LatencyBuckets, statuses: dict[int, int] | None = None
    ) -> RouteCounts:
        """Counts with ``values`` in :data:`COUNTERS` order (the wire form's), ``latency`` and
        ``statuses`` (kept)."""
        counts = cls.__new__(cls)
        for name, value in zip(COUNTERS, values, strict=True):
            setattr(counts, name, value)
        counts.latency = latency
        counts.statuses = {} if statuses is None else statuses
        return counts

    def copy(self) -> RouteCounts:
        return RouteCounts.of(counter_values(self), dict(self.latency), dict(self.statuses))

    def add(self, other: RouteCounts) -> None:
        for name, mine, theirs in zip(COUNTERS, counter_values(self), counter_values(other), strict=True):
            setattr(self, name, mine + theirs)
        add_buckets(self.latency, other.latency)
        add_buckets(self.statuses, other.statuses)

    def subtract(self, other: RouteCounts) -> None:
        """Exact inverse of :meth:`add`, so a running sum can drop what it added."""
        for name, mine, theirs in zip(COUNTERS, counter_values(self), counter_values(other), strict=True):
            setattr(self, name, mine - theirs)
        subtract_buckets(self.latency, other.latency)
        subtract_buckets(self.statuses, other.statuses)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RouteCounts):
            return NotImplemented
        return (
            counter_values(self) == counter_values(other)
            and self.latency == other.latency
            and self.statuses == other.statuses
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        values = zip(COUNTERS, counter_values(self), strict=True)
        fields = ", ".join(f"{name}={value}" for name, value in values)
        return f"RouteCounts({fields}, latency={self.latency}, statuses={self.statuses})"


class Slot:
    """One slot of the window (``unix_time // slot_seconds``): counts per route key, and over all routes
    (``total``, what the timeline charts), and each route's :data:`SLOWEST_PER_SLOT` slowest requests
    (``slowest``, min-heaps). Immutable once the store has moved past it."""

    __slots__ = ("number", "routes", "slowest", "total")

    def __init__(self, number: int) -> None:
        self.number = number
        self.routes: dict[RouteKey, RouteCounts] = {}
        self.total = RouteCounts()
        self.slowest: dict[RouteKey, list[SlowRequest]] = {}

    def copy(self) -> Slot:
        clone = Slot(self.number)
        clone.routes = {key: counts.copy() for key, counts in self.routes.items()}
        clone.total = self.total.copy()
        clone.slowest = {key: list(heap) for key, heap in self.slowest.items()}
        return clone

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Slot):
            return NotImplemented
        mine = (self.number, self.routes, self.total, _sorted_slowest(self.slowest))
        return mine == (other.number, other.routes, other.total, _sorted_slowest(other.slowest))

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"Slot({self.number}, routes={len(self.routes)}, total={self.total!r})"


def _sorted_slowest(slowest: dict[RouteKey, list[SlowRequest]]) -> dict[RouteKey, list[SlowRequest]]:
    # Heaps holding the same entries may order them differently.
    return {key: sorted(heap) for key, heap in slowest.items()}


@dataclass(frozen=True, slots=True)
class SummedSlots:
    """Closed slots of one process added together: what a worker writes for the others (wire.py), so
    that a reader holds one sum per worker rather than every slot of it.

    ``generation`` numbers the sums a writer produced (a new one whenever a slot joins or leaves);
    ``slot_totals`` keeps each slot's ``total`` (the timeline's); a slot that has since left the
    reader's window is subtracted with its own file's counts (merge.py). The slots' slowest requests
    are not summed: the drill-down reads them from the slots' own files.
    """

    generation: int
    numbers: tuple[int, ...]
    routes: dict[RouteKey, RouteCounts]
    total: RouteCounts
    slot_totals: dict[int, RouteCounts]


def summed(parts: Iterable[RouteCounts]) -> RouteCounts:
    """The sum of some :class:`RouteCounts`, as a new one."""
    total = RouteCounts()
    for part in parts:
        total.add(part)
    return total
