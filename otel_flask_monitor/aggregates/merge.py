"""Combining windows: one or several processes' :class:`WindowState` -> the stats document's numbers.

Running sums keep a document from re-adding the whole window.

A source gives its closed slots one by one (``closed``: this process's store, whose closed slots are
immutable), or as a sum (``summed``: another worker's closed slots as it wrote them, see wire.py) minus
some of its slots (``removed``: those that have left the window since) plus slots one by one (those
closed since). Each such part is added to the running sums once, the first time it is seen, and
subtracted once, when it leaves the window or its source is gone; so a document costs
O(sources x routes x buckets) for the slots still written, not O(routes x slots x buckets). Slots are
numbered ``unix_time // slot_seconds``, so the slots of different processes line up.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Protocol

from otel_flask_monitor.aggregates.counts import RouteCounts, RouteKey, Slot, SummedSlots, summed
from otel_flask_monitor.aggregates.document import stats_document, timeline_entry

ObjectiveRows = Callable[[Mapping[RouteKey, RouteCounts], range], list[dict[str, Any]] | None]
"""(merged counts per route, window) -> the document's ``objectives`` list."""


class Counted(Protocol):
    """Counts per route plus their total: a :class:`Slot` or :class:`SummedSlots`."""

    @property
    def routes(self) -> dict[RouteKey, RouteCounts]: ...
    @property
    def total(self) -> RouteCounts: ...


@dataclass(frozen=True, slots=True)
class WindowState:
    """A consistent view of one process's window: what :meth:`AggregateStore.window_state` gives, what
    a worker writes for the others (otel_flask_monitor/aggregates/multiprocess.py), what a merge reads.

    ``closed`` slots are immutable; ``current`` is a private copy of the slot still written, numbered
    ``newest_number``. Error lists are newest first.
    """

    started_unix: float
    newest_number: int
    closed: Mapping[int, Slot]
    current: Slot | None
    recent_errors: list[dict[str, Any]]
    recent_client_errors: list[dict[str, Any]]
    tracked_routes: int
    summed: SummedSlots | None = None
    removed: Mapping[int, Slot] = field(default_factory=dict)
    """Slots of ``summed`` that do not count (any older than the window must be here), by number."""

    def slots(self) -> list[Slot]:
        """The slots held one by one: the closed ones and the one still written."""
        slots = list(self.closed.values())
        if self.current is not None:
            slots.append(self.current)
        return slots

    def requests_in_window(self, oldest: int) -> int:
        closed = sum(slot.total.requests for number, slot in self.closed.items() if number >= oldest)
        if self.summed is not None:
            closed += self.summed.total.requests - sum(slot.total.requests for slot in self.removed.values())
        current = self.current
        return closed + (current.total.requests if current is not None and current.number >= oldest else 0)


def window_bounds(now: float, newest_numbers: Iterable[int], slot_seconds: int, slot_count: int) -> range:
    """The slot numbers of the window at ``now``: ``slot_count`` of them, ending at the newest slot any
    source writes (a clock stepping back never moves the window back)."""
    newest = max([int(now // slot_seconds), *newest_numbers])
    return range(newest - slot_count + 1, newest + 1)


def covered_seconds(now: float, window: range, slot_seconds: int, started_unix: float) -> float:
    """Seconds the window's figures cover: since its start, or since the oldest source started."""
    return max(now - max(window.start * slot_seconds, started_unix), 1.0)


class RunningSums:
    """Counts per route and in total over a set of parts, each kept under a key: a part with sign +1
    is added, one with sign -1 subtracted. :meth:`sync` applies only the difference to the last set.
    Parts are held by reference and must not change while held."""

    def __init__(self) -> None:
        self.routes: dict[RouteKey, RouteCounts] = {}
        self.total = RouteCounts()
        self._parts: dict[Hashable, tuple[int, Counted]] = {}

    def replace(self, keys: Iterable[Hashable], key: Hashable, part: Counted) -> None:
        """Hold ``part`` (sign +1) under ``key`` instead of the parts under ``keys``, leaving the sums as
        they are: ``part`` must be exactly those parts' signed sum (:func:`fold` makes one). Does
        nothing unless every one of ``keys`` is held (the next :meth:`sync` then does the arithmetic)."""
        keys = list(keys)
        if key in self._parts or not all(old in self._parts for old in keys):
            return
        for old in keys:
            del self._parts[old]
        self._parts[key] = (1, part)

    def sync(self, parts: Mapping[Hashable, tuple[int, Counted]]) -> bool:
        """Make the sums those of ``parts``; True if anything changed."""
        leaving = [key for key in self._parts if key not in parts]
        entering = [key for key in parts if key not in self._parts]
        # Counts never go below zero on the way: a subtraction is taken back before what it was
        # subtracted from, and applied after it.
        leaving.sort(key=lambda key: self._parts[key][0])
        entering.sort(key=lambda key: -parts[key][0])
        for key in leaving:
            sign, part = self._parts.pop(key)
            self._apply(part, -sign)
        for key in entering:
            sign, part = self._parts[key] = parts[key]
            self._apply(part, sign)
        return bool(leaving or entering)

    def _apply(self, part: Counted, sign: int) -> None:
        routes = self.routes
        if sign > 0:
            self.total.add(part.total)
            for route, counts in part.routes.items():
                existing = routes.get(route)
                if existing is None:
                    routes[route] = counts.copy()
                else:
                    existing.add(counts)
            return
        self.total.subtract(part.total)
        for route, counts in part.routes.items():
            remaining = routes[route]
            remaining.subtract(counts)
            if not remaining.requests:
                del routes[route]


class WindowMerger:
    """Builds the ``/monitoring/stats`` document from one or several :class:`WindowState` (one per
    process), keeping running sums of their closed slots between calls. Not thread-safe: callers
    serialise."""

    def __init__(
        self, *, window_seconds: int, slot_seconds: int, max_routes: int, recent_errors: int
    ) -> None:
        self.window_seconds = window_seconds
        self.slot_seconds = slot_seconds
        self.slot_count = math.ceil(window_seconds / slot_seconds)
        self.max_routes = max_routes
        self.recent_errors = recent_errors
        self._sums = RunningSums()
        # Slot number -> (the sources whose closed slots made it, its timeline entry).
        self._timeline: dict[int, tuple[frozenset[str], dict[str, Any]]] = {}

    def replace_parts(self, keys: Iterable[Hashable], key: Hashable, part: Counted) -> None:
        """:meth:`RunningSums.replace` on the sums of the closed slots (keys: :func:`slot_key`, ...)."""
        self._sums.replace(keys, key, part)

    def window(self, now: float, states: Iterable[WindowState]) -> range:
        return window_bounds(now, (s.newest_number for s in states), self.slot_seconds, self.slot_count)

    def document(
        self,
        sources: Mapping[str, WindowState],
        now: float,
        window: range | None = None,
        objectives: ObjectiveRows | None = None,
    ) -> dict[str, Any]:
        """The document at ``now`` over ``window`` (default: :meth:`window`). A source's ``removed``
        must hold every slot of its ``summed`` older than the window. ``objectives``, given the merged
        counts per route and the window, makes the ``objectives`` list (live_objectives.py)."""
        if not sources:
            raise ValueError("need at least one source")
        if window is None:
            window = self.window(now, sources.values())
        parts, closed_totals = _closed_parts(sources, window)
        currents = [
            state.current
            for state in sources.values()
            if state.current is not None and state.current.number in window
        ]
        started = min(state.started_unix for state in sources.values())
        window_start = window.start * self.slot_seconds
        covered = covered_seconds(now, window, self.slot_seconds, started)

        self._sums.sync(parts)
        total = self._sums.total.copy()
        routes = dict(self._sums.routes)
        owned: set[RouteKey] = set()  # entries this call may change (the others belong to the sums)
        for current in currents:
            total.add(current.total)
            for key, counts in current.routes.items():
                existing = routes.get(key)
                if existing is None:
                    routes[key] = counts
                elif key in owned:
                    existing.add(counts)
                else:
                    merged = existing.copy()
                    merged.add(counts)
                    routes[key] = merged
                    owned.add(key)
        document = stats_document(
            generated_at_unix=now,
            window_seconds=self.window_seconds,
            slot_seconds=self.slot_seconds,
            window_start_unix=window_start,
            covered_seconds=covered,
            max_routes=self.max_routes,
            tracked_routes=max(state.tracked_routes for state in sources.values()),
            total=total,
            routes=routes,
            timeline=self._timeline_entries(window, closed_totals, currents),
            recent_errors=self._newest_errors([s.recent_errors for s in sources.values()]),
            recent_client_errors=self._newest_errors([s.recent_client_errors for s in sources.values()]),
        )
        rows = objectives(routes, window) if objectives is not None else None
        if rows is not None:
            document["objectives"] = rows
        return document

    def _newest_errors(self, lists: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
        if len(lists) == 1:
            return lists[0][: self.recent_errors]
        merged = heapq.merge(*lists, key=lambda error: float(error["time_unix"]), reverse=True)
        return list(islice(merged, self.recent_errors))

    def _timeline_entries(
        self,
        window: range,
        closed_totals: Mapping[int, list[tuple[str, RouteCounts]]],
        currents: list[Slot],
    ) -> list[dict[str, Any]]:
        current_by_number: dict[int, list[Slot]] = {}
        for current in currents:
            current_by_number.setdefault(current.number, []).append(current)
        for number in [n for n in self._timeline if n < window.start]:
            del self._timeline[number]
        timeline = []
        for number in window:
            start = number * self.slot_seconds
            parts = closed_totals.get(number, [])
            writing = current_by_number.get(number)
            if writing:
                totals = [counts for _, counts in parts] + [slot.total for slot in writing]
                timeline.append(timeline_entry(start, summed(totals)))
                continue
            # Closed slots never change: the entry is computed once per set of sources.
            sources = frozenset(source for source, _ in parts)
            cached = self._timeline.get(number)
            if cached is None or cached[0] != sources:
                entry = timeline_entry(start, summed(counts for _, counts in parts))
                cached = self._timeline[number] = (sources, entry)
            timeline.append(dict(cached[1]))
        return timeline


def _closed_parts(
    sources: Mapping[str, WindowState], window: range
) -> tuple[dict[Hashable, tuple[int, Counted]], dict[int, list[tuple[str, RouteCounts]]]]:
    """The parts of the running sums over ``window``, and the closed slots' totals by slot number."""
    parts: dict[Hashable, tuple[int, Counted]] = {}
    closed_totals: dict[int, list[tuple[str, RouteCounts]]] = {}
    for source, state in sources.items():
        for number, slot in state.closed.items():
            if number in window:
                parts[slot_key(source, number)] = (1, slot)
                closed_totals.setdefault(number, []).append((source, slot.total))
        sums = state.summed
        if sums is None:
            continue
        parts[sum_key(source, sums)] = (1, sums)
        for number, slot in state.removed.items():
            parts[removed_key(source, sums, number)] = (-1, slot)
        for number in sums.numbers:
            if number in state.removed:
                continue
            if number < window.start:
                raise ValueError(f"slot {number} of {source!r}'s sum left the window but was not removed")
            closed_totals.setdefault(number, []).append((source, sums.slot_totals[number]))
    return parts, closed_totals


def slot_key(source: str, number: int) -> Hashable:
    """The key of a closed slot given one by one (a slot's counts never change once closed)."""
    return ("slot", source, number)


def sum_key(source: str, summed: SummedSlots) -> Hashable:
    """The key of a :class:`SummedSlots`: the object itself (held while its key is)."""
    return ("sum", source, id(summed))


def removed_key(source: str, summed: SummedSlots, number: int) -> Hashable:
    """The key of a slot subtracted from that sum."""
    return ("removed", source, id(summed), number)


def fold(base: SummedSlots, added: Mapping[int, Slot], removed: Mapping[int, Slot]) -> SummedSlots:
    """``base`` plus the ``added`` slots minus the ``removed`` ones, as one new sum."""
    sums = RunningSums()
    parts: dict[Hashable, tuple[int, Counted]] = {"base": (1, base)}
    parts.update({("added", number): (1, slot) for number, slot in added.items()})
    parts.update({("removed", number): (-1, slot) for number, slot in removed.items()})
    sums.sync(parts)
    kept = [number for number in base.numbers if number not in removed]
    slot_totals = {number: base.slot_totals[number] for number in kept}
    slot_totals.update({number: slot.total for number, slot in added.items()})
    return SummedSlots(
        generation=base.generation,
        numbers=tuple(sorted(slot_totals)),
        routes=sums.routes,
        total=sums.total,
        slot_totals=slot_totals,
    )


@dataclass(frozen=True, slots=True)
class FollowedSum:
    """Another worker's closed slots as a reader holds them: a sum read once (``base``), kept exact as
    the window moves by subtracting the ``removed`` slots of it and adding the ``added`` ones (closed
    since), each loaded once."""

    base: SummedSlots
    added: dict[int, Slot]
    removed: dict[int, Slot]

    @property
    def followed(self) -> int:
        """How many slots it holds beside its sum."""
        return len(self.added) + len(self.removed)

    def following(self, counted: set[int], load: Callable[[int], Slot]) -> FollowedSum:
        """The same sum made to count exactly the slots ``counted``, loading those it lacks."""
        in_base = set(self.base.numbers)
        to_remove, to_add = in_base - counted, counted - in_base
        removed = {n: self.removed[n] if n in self.removed else load(n) for n in sorted(to_remove)}
        added = {n: self.added[n] if n in self.added else load(n) for n in sorted(to_add)}
        return FollowedSum(self.base, added, removed)

    def folded(self) -> FollowedSum:
        """The same counts as one sum (:func:`fold`)."""
        return FollowedSum(fold(self.base, self.added, self.removed), {}, {})

    def keys(self, source: str) -> list[Hashable]:
        """The keys of its parts in a merger's running sums, as ``source``'s."""
        keys = [sum_key(source, self.base)]
        keys += [slot_key(source, number) for number in self.added]
        keys += [removed_key(source, self.base, number) for number in self.removed]
        return keys
