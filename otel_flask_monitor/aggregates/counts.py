"""What the window counts: per (method, route) and slot, the counters and the latency buckets.

:class:`RouteCounts` holds the counters of :data:`COUNTERS` and the buckets; :class:`Slot` groups
them per slot, :class:`SummedSlots` adds closed slots together.

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

COUNTERS: Final = ("requests", "client_errors", "server_errors", "request_bytes", "response_bytes")
"""Additive integer counters per (method, route) and slot, in the order of their wire form."""

RouteKey = tuple[str, str]
"""(method, route template)."""

counter_values: Final = attrgetter(*COUNTERS)
"""The counters of a :class:`RouteCounts` as a tuple, in :data:`COUNTERS` order."""


class RouteCounts:
    """The counters and latency buckets of one (method, route) (or of all routes) over some slots.

    The recording path bumps the attributes by name, the fastest way CPython knows; everything that
    treats counters alike loops over :data:`COUNTERS`.
    """

    __slots__ = (*COUNTERS, "latency")

    requests: int
    client_errors: int
    server_errors: int
    request_bytes: int
    response_bytes: int

    def __init__(self) -> None:
        for name in COUNTERS:
            setattr(self, name, 0)
        self.latency: LatencyBuckets = {}

    @classmethod
    def of(cls, values: Sequence[int], latency: LatencyBuckets) -> RouteCounts:
        """Counts with ``values`` in :data:`COUNTERS` order (the wire form's) and ``latency`` (kept)."""
        counts = cls.__new__(cls)
        for name, value in zip(COUNTERS, values, strict=True):
            setattr(counts, name, value)
        counts.latency = latency
        return counts

    def copy(self) -> RouteCounts:
        return RouteCounts.of(counter_values(self), dict(self.latency))

    def add(self, other: RouteCounts) -> None:
        for name, mine, theirs in zip(COUNTERS, counter_values(self), counter_values(other), strict=True):
            setattr(self, name, mine + theirs)
        add_buckets(self.latency, other.latency)

    def subtract(self, other: RouteCounts) -> None:
        """Exact inverse of :meth:`add`, so a running sum can drop what it added."""
        for name, mine, theirs in zip(COUNTERS, counter_values(self), counter_values(other), strict=True):
            setattr(self, name, mine - theirs)
        subtract_buckets(self.latency, other.latency)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RouteCounts):
            return NotImplemented
        return counter_values(self) == counter_values(other) and self.latency == other.latency

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        values = zip(COUNTERS, counter_values(self), strict=True)
        fields = ", ".join(f"{name}={value}" for name, value in values)
        return f"RouteCounts({fields}, latency={self.latency})"


class Slot:
    """One slot of the window (``unix_time // slot_seconds``): counts per route key, and over all routes
    (``total``, what the timeline charts). Immutable once the store has moved past it."""

    __slots__ = ("number", "routes", "total")

    def __init__(self, number: int) -> None:
        self.number = number
        self.routes: dict[RouteKey, RouteCounts] = {}
        self.total = RouteCounts()

    def copy(self) -> Slot:
        clone = Slot(self.number)
        clone.routes = {key: counts.copy() for key, counts in self.routes.items()}
        clone.total = self.total.copy()
        return clone

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Slot):
            return NotImplemented
        return (self.number, self.routes, self.total) == (other.number, other.routes, other.total)

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"Slot({self.number}, routes={len(self.routes)}, total={self.total!r})"


@dataclass(frozen=True, slots=True)
class SummedSlots:
    """Closed slots of one process added together: what a worker writes for the others (wire.py), so
    that a reader holds one sum per worker rather than every slot of it.

    ``generation`` numbers the sums a writer produced (a new one whenever a slot joins or leaves);
    ``slot_totals`` keeps each slot's ``total`` (the timeline's); a slot that has since left the
    reader's window is subtracted with its own file's counts (merge.py).
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
