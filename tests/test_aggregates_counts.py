"""otel_flask_monitor.aggregates.counts: the one counter list drives every operation on the counts."""

from __future__ import annotations

import random

import pytest

from otel_flask_monitor.aggregates.counts import (
    COUNTERS,
    RouteCounts,
    Slot,
    counter_values,
    summed,
)


def random_counts(rng: random.Random) -> RouteCounts:
    latency = {rng.randrange(-10, 500): rng.randrange(1, 50) for _ in range(rng.randrange(0, 20))}
    values = tuple(rng.randrange(0, 10**6) for _ in COUNTERS)
    return RouteCounts.of(values, latency)


def test_every_counter_starts_at_zero_and_is_an_attribute() -> None:
    counts = RouteCounts()
    assert counter_values(counts) == (0,) * len(COUNTERS)
    assert counts.latency == {}
    for name in COUNTERS:
        assert getattr(counts, name) == 0


def test_add_then_subtract_is_the_identity_for_every_counter() -> None:
    rng = random.Random(5)
    for _ in range(200):
        base, other = random_counts(rng), random_counts(rng)
        before = base.copy()
        base.add(other)
        pairs = zip(counter_values(before), counter_values(other), strict=True)
        assert counter_values(base) == tuple(a + b for a, b in pairs)
        base.subtract(other)
        assert base == before


def test_a_copy_is_independent() -> None:
    original = RouteCounts.of(tuple(range(1, len(COUNTERS) + 1)), {3: 1})
    clone = original.copy()
    clone.add(original)
    assert original == RouteCounts.of(tuple(range(1, len(COUNTERS) + 1)), {3: 1})
    assert clone != original


def test_counts_of_the_wrong_length_are_refused() -> None:
    with pytest.raises(ValueError, match=r"shorter|longer"):
        RouteCounts.of((1,) * (len(COUNTERS) - 1), {})


def test_summed_adds_everything() -> None:
    rng = random.Random(8)
    parts = [random_counts(rng) for _ in range(5)]
    total = summed(parts)
    for part in parts:
        total.subtract(part)
    assert total == RouteCounts()


def test_a_slot_copy_is_deep() -> None:
    slot = Slot(7)
    slot.routes[("GET", "/a")] = RouteCounts.of((1,) + (0,) * (len(COUNTERS) - 1), {5: 1})
    slot.total = slot.routes[("GET", "/a")].copy()
    clone = slot.copy()
    assert clone == slot
    clone.routes[("GET", "/a")].requests += 1
    clone.total.latency[6] = 1
    assert slot.routes[("GET", "/a")].requests == 1
    assert slot.total.latency == {5: 1}
