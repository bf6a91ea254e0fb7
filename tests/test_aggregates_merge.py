"""otel_flask_monitor.aggregates.merge: running sums; a window given summed equals it slot by slot."""

from __future__ import annotations

import dataclasses
import heapq
import random
from collections.abc import Hashable

from otel_flask_monitor.aggregates.counts import SLOWEST_PER_SLOT, RouteCounts, Slot, SummedSlots, summed
from otel_flask_monitor.aggregates.merge import Counted, RunningSums, WindowState, fold, window_bounds
from otel_flask_monitor.aggregates.sketch import latency_key
from tests.support.clock import FakeClock
from tests.test_aggregates import make_record, new_store

ROUTES = [("GET", f"/r{number}") for number in range(6)]


def random_slot(rng: random.Random, number: int) -> Slot:
    slot = Slot(number)
    for key in rng.sample(ROUTES, rng.randrange(1, len(ROUTES))):
        counts = RouteCounts()
        for _ in range(rng.randrange(1, 20)):
            counts.requests += 1
            counts.server_errors += rng.random() < 0.1
            counts.response_bytes += rng.randrange(0, 1000)
            duration = rng.lognormvariate(2, 1)
            bucket = latency_key(duration)
            counts.latency[bucket] = counts.latency.get(bucket, 0) + 1
            counts.latency_met += duration <= 10
            status = 500 if rng.random() < 0.1 else rng.choice((200, 201, 404))
            counts.statuses[status] = counts.statuses.get(status, 0) + 1
            slowest = slot.slowest.setdefault(key, [])
            entry = (duration, number * 10.0, status, f"/p/{rng.randrange(99)}", rng.choice(("", "ab" * 16)))
            if len(slowest) < SLOWEST_PER_SLOT:
                heapq.heappush(slowest, entry)
            else:
                heapq.heappushpop(slowest, entry)
        slot.routes[key] = counts
        slot.total.add(counts)
    return slot


def sum_of(slots: list[Slot], generation: int) -> SummedSlots:
    routes: dict[tuple[str, str], RouteCounts] = {}
    for slot in slots:
        for key, counts in slot.routes.items():
            routes.setdefault(key, RouteCounts()).add(counts)
    return SummedSlots(
        generation=generation,
        numbers=tuple(slot.number for slot in slots),
        routes=routes,
        total=summed(slot.total for slot in slots),
        slot_totals={slot.number: slot.total for slot in slots},
    )


def test_running_sums_equal_the_parts_whatever_joins_and_leaves() -> None:
    rng = random.Random(11)
    slots = [random_slot(rng, number) for number in range(12)]
    sums = RunningSums()
    for generation in range(60):
        chosen = sorted(rng.sample(range(12), rng.randrange(0, 8)))
        alone = [slots[n] for n in chosen[: len(chosen) // 2]]
        in_sum = [slots[n] for n in chosen[len(chosen) // 2 :]]
        taken_out = in_sum[: rng.randrange(0, len(in_sum) + 1)]
        parts: dict[Hashable, tuple[int, Counted]] = {("slot", s.number): (1, s) for s in alone}
        parts[("sum", generation % 3)] = (1, sum_of(in_sum, generation % 3))  # keys come back
        parts.update({("out", generation % 3, s.number): (-1, s) for s in taken_out})
        sums.sync(parts)

        expected = [s for s in alone + in_sum if s not in taken_out]
        assert sums.total == summed(s.total for s in expected), generation
        routes = sum_of(expected, 0).routes
        assert sums.routes == routes, generation


def test_sync_says_whether_anything_changed() -> None:
    slot = random_slot(random.Random(2), 1)
    sums = RunningSums()
    assert sums.sync({1: (1, slot)}) is True
    assert sums.sync({1: (1, slot)}) is False
    assert sums.sync({}) is True
    assert sums.total == RouteCounts()
    assert sums.routes == {}


def test_a_folded_sum_is_its_parts_and_replaces_them_without_arithmetic() -> None:
    rng = random.Random(6)
    slots = {number: random_slot(rng, number) for number in range(10)}
    base = sum_of([slots[n] for n in range(6)], 3)
    added = {n: slots[n] for n in (6, 7, 8)}
    removed = {n: slots[n] for n in (0, 1)}
    folded = fold(base, added, removed)
    assert folded == sum_of([slots[n] for n in range(2, 9)], 3)

    parts: dict[Hashable, tuple[int, Counted]] = {"base": (1, base)}
    parts.update({("added", n): (1, slot) for n, slot in added.items()})
    parts.update({("removed", n): (-1, slot) for n, slot in removed.items()})
    sums = RunningSums()
    sums.sync(parts)
    before = (sums.total.copy(), {key: counts.copy() for key, counts in sums.routes.items()})
    sums.replace(list(parts), "folded", folded)
    assert sums.sync({"folded": (1, folded)}) is False  # held already: nothing added twice
    assert (sums.total, sums.routes) == before
    sums.replace(["not held"], "other", base)  # not every key held: left to the next sync
    assert sums.sync({"folded": (1, folded)}) is False
    assert sums.sync({}) is True
    assert sums.total == RouteCounts()


def test_a_window_given_summed_minus_its_removed_slots_equals_it_slot_by_slot() -> None:
    clock = FakeClock(1_000_000.0)
    store = new_store(clock, window_seconds=60, slot_seconds=10)  # 6 slots
    rng = random.Random(4)
    for number in range(300):
        clock.advance(0.3)
        store.record(
            make_record(
                f"/r{rng.randrange(5)}",
                status=rng.choice([200, 404, 500]),
                duration_ms=rng.lognormvariate(2, 1),
                path=f"/p/{number}",
            )
        )
    state = store.window_state()
    by_slot = store.merger()
    by_sum = store.merger()
    all_closed = sorted(state.closed.values(), key=lambda slot: slot.number)
    for step in range(4):  # the window moves on; the sum still holds slots that have left it
        now = clock()
        window = by_slot.window(now, [state])
        as_summed = dataclasses.replace(
            state,
            closed={},
            summed=sum_of(all_closed, 1),
            removed={slot.number: slot for slot in all_closed if slot.number < window.start},
        )
        one_by_one = by_slot.document({"worker": state}, now)
        assert by_sum.document({"worker": as_summed}, now) == one_by_one, step
        assert as_summed.requests_in_window(window.start) == one_by_one["totals"]["requests"]
        clock.advance(10)


def test_the_window_ends_at_the_newest_slot_any_source_writes() -> None:
    assert window_bounds(100.0, [3], 10, 6) == range(5, 11)
    assert window_bounds(100.0, [12, 4], 10, 6) == range(7, 13)  # a source ahead of this clock
    assert window_bounds(40.0, [], 10, 3) == range(2, 5)


def test_a_single_store_document_does_not_change_between_reads() -> None:
    clock = FakeClock()
    store = new_store(clock, window_seconds=60, slot_seconds=10)
    merger = store.merger()
    store.record(make_record())
    clock.advance(10)
    store.record(make_record(status=500))
    state: WindowState = store.window_state()
    first = merger.document({"": state}, clock())
    assert merger.document({"": state}, clock()) == first  # the running sums are not added twice
    assert first["totals"]["requests"] == 2
