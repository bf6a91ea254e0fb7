"""otel_flask_monitor.aggregates.wire: the worker files round-trip through JSON and refuse anything else."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from otel_flask_monitor.aggregates.counts import COUNTERS, SLOWEST_PER_SLOT, RouteCounts
from otel_flask_monitor.aggregates.wire import (
    FORMAT,
    MalformedStateError,
    WorkerHeader,
    decode_counts,
    decode_errors,
    decode_slot,
    decode_state,
    decode_summed,
    encode_counts,
    encode_slot,
    encode_state,
    encode_summed,
)
from tests.support.clock import FakeClock
from tests.test_aggregates import make_record, new_store
from tests.test_aggregates_merge import random_slot, sum_of

HEADER = WorkerHeader(pid=42, start_ms=1000, server="1-1", window_seconds=60, slot_seconds=10)
EXPECTED = {"server": "1-1", "window_seconds": 60, "slot_seconds": 10}


def through_json(data: Any) -> Any:
    return json.loads(json.dumps(data))


def test_counts_are_the_counters_in_order_then_the_buckets_then_the_status_codes() -> None:
    values = {"requests": 3, "client_errors": 0, "server_errors": 1, "request_bytes": 120}
    values |= {"response_bytes": 480, "latency_met": 2}
    assert set(values) == set(COUNTERS)
    in_order = [values[name] for name in COUNTERS]
    counts = RouteCounts.of(tuple(in_order), {})
    counts.latency = {7: 2, -3: 1}
    counts.statuses = {200: 2, 503: 1}
    encoded = encode_counts(counts)
    assert encoded == [*in_order, [7, 2, -3, 1], [200, 2, 503, 1]]
    assert decode_counts(through_json(encoded)) == counts


@pytest.mark.parametrize(
    "garbage",
    [
        None,
        [1, 2],
        [*([0] * len(COUNTERS)), [1], []],  # an odd bucket list
        [*([0] * len(COUNTERS)), "x", []],
        [*([0] * len(COUNTERS)), []],  # no status codes
        [-1, *([0] * (len(COUNTERS) - 1)), [], []],  # a negative count
        [True, *([0] * (len(COUNTERS) - 1)), [1, 1], [200, 1]],  # a bool is no count
        [1, *([0] * (len(COUNTERS) - 1)), ["1", 1], [200, 1]],  # a bucket key as a string
        [2, *([0] * (len(COUNTERS) - 1)), [1, 1], [200, 2]],  # buckets do not add up to the requests
        [2, *([0] * (len(COUNTERS) - 1)), [1, 2], [200, 1]],  # nor the status codes
        [1, *([0] * (len(COUNTERS) - 1)), [1, 1], [200, 1, 200, 0]],  # a status code twice
        [1, 1, 1, *([0] * (len(COUNTERS) - 3)), [1, 1], [500, 1]],  # more errors than requests
        [1, *([0] * (len(COUNTERS) - 2)), 2, [1, 1], [200, 1]],  # more met than requests
    ],
)
def test_malformed_counts_are_refused(garbage: object) -> None:
    with pytest.raises(MalformedStateError):
        decode_counts(garbage)


def test_a_slot_and_a_sum_round_trip() -> None:
    rng = random.Random(3)
    slots = [random_slot(rng, number) for number in range(5, 9)]
    assert decode_slot(through_json(encode_slot(slots[0]))) == slots[0]
    summed = sum_of(slots, 7)
    again = decode_summed(through_json(encode_summed(summed)), 7)
    assert again == summed


def test_a_malformed_slot_is_refused() -> None:
    slot = random_slot(random.Random(3), 4)
    for garbage in (None, [], {"number": "1", "routes": []}, {"number": 1, "routes": [["GET"]]}):
        with pytest.raises(MalformedStateError):
            decode_slot(garbage)
    broken = through_json(encode_slot(slot))
    counters = len(COUNTERS)
    broken["routes"][0][2][:counters] = [
        0
    ] * counters  # a route without requests would break the running sums' subtraction
    broken["routes"][0][2][-1] = []
    broken["routes"][0][2][-2] = []
    with pytest.raises(MalformedStateError, match="without requests"):
        decode_slot(broken)
    broken = through_json(encode_slot(slot))
    broken["total"][0] += 1  # one request more than the buckets count: subtracting it would break too
    with pytest.raises(MalformedStateError, match="do not add up"):
        decode_slot(broken)
    method, route, entries = encode_slot(slot)["slowest"][0]
    for slowest in (
        [[method, route, entries * (SLOWEST_PER_SLOT + 1)]],
        [["GET", "/not/in/the/slot", entries]],
        [[method, route, [[1.0, 2.0, "200", "/p", ""]]]],
        [[method, route, []]],
    ):
        with pytest.raises(MalformedStateError, match="slow"):
            decode_slot(through_json(encode_slot(slot)) | {"slowest": slowest})


def test_a_sum_of_another_generation_or_malformed_is_refused() -> None:
    summed = sum_of([random_slot(random.Random(1), number) for number in (1, 2)], 3)
    raw = through_json(encode_summed(summed))
    with pytest.raises(MalformedStateError, match="generation"):
        decode_summed(raw, 4)
    for change in ({"numbers": [1, 2, 3]}, {"numbers": [2, 1]}, {"numbers": None}, {"format": FORMAT - 1}):
        with pytest.raises(MalformedStateError):
            decode_summed(raw | change, 3)
    raw["slot_totals"].pop()
    with pytest.raises(MalformedStateError, match="slot totals"):
        decode_summed(raw, 3)


def a_state() -> Any:
    clock = FakeClock()
    store = new_store(clock, window_seconds=60, slot_seconds=10, recent_errors=3)
    store.record(make_record(status=500, trace_id="ab" * 16))
    clock.advance(10)
    store.record(make_record(status=404, user_agent=None))
    return store.window_state()


def test_a_state_round_trips_without_its_closed_slots() -> None:
    state = a_state()
    numbers = tuple(sorted(state.closed))
    raw = through_json(encode_state(HEADER, 123.0, state, numbers, 5))
    assert list(raw)[:2] == ["format", "counters"]
    assert raw["counters"] == list(COUNTERS)
    worker = decode_state(raw, **EXPECTED)
    assert worker.closed_numbers == numbers
    assert worker.sums_generation == 5
    assert worker.state.closed == {}
    assert worker.state.current == state.current
    assert worker.state.recent_errors == state.recent_errors
    assert worker.state.recent_client_errors == state.recent_client_errors
    assert worker.state.newest_number == state.newest_number
    assert worker.state.started_unix == state.started_unix


@pytest.mark.parametrize(
    "change",
    [
        {"format": FORMAT - 1},
        {"counters": [*COUNTERS, "a_new_counter"]},  # written by another version of the package
        {"server": "2-2"},
        {"window_seconds": 120},
        {"slot_seconds": 5},
        {"closed": ["x"]},
        {"sums": None},  # closed slots without their sums
        {"sums": "1"},
        {"started_unix": True},
        {"newest_number": 1.5},
        {"current": {"number": 1, "routes": "no"}},
        {"recent_errors": [{"time_unix": 1.0}]},
    ],
)
def test_a_state_of_another_writer_or_malformed_is_refused(change: dict[str, Any]) -> None:
    state = a_state()
    raw = through_json(encode_state(HEADER, 123.0, state, tuple(sorted(state.closed)), 5)) | change
    with pytest.raises(MalformedStateError):
        decode_state(raw, **EXPECTED)


def test_recent_errors_are_checked_field_by_field() -> None:
    good = a_state().recent_errors
    assert decode_errors(through_json(good)) == good
    for field, bad in (("status_code", "500"), ("trace_id", 5), ("time_unix", False), ("route", None)):
        with pytest.raises(MalformedStateError, match=field):
            decode_errors([{**good[0], field: bad}])
