"""Cost of the rolling-window aggregates: per record, memory at max_routes, /monitoring/stats latency.

Run: .venv/bin/python benchmarks/aggregates.py [--quick] [--compare-with OTHER/aggregates.py]

Every figure is printed next to a baseline measured in the same run, because absolute timings depend
on the machine:
- ``AggregateStore.record`` vs calling a consumer that does nothing; with ``--compare-with``, also vs
  the ``AggregateStore`` of another version of the store (a file, e.g. ``git show
  main:otel_flask_monitor/aggregates.py > /tmp/main_aggregates.py``), the two timed in turn, same records;
- resident memory with every (route, slot) filled vs the process before the store existed: the worst
  case, every route with a latency objective, more distinct status codes than a slot keeps, and every
  request with its own 300-character path and trace id (each slot keeps its slowest requests' texts);
- the drill-down of one route (``route_detail``) over that full window vs ``snapshot()``;
- ``GET /monitoring/stats`` with ``max_routes`` routes over a full window vs ``GET /monitoring/health``
  and vs ``/stats`` of an empty store; the first ``snapshot()`` (every closed slot added to the running
  sums) vs the following ones.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib.util
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
from flask import Flask

from otel_flask_monitor import FlaskMonitor, get_state
from otel_flask_monitor.aggregates import AggregateStore
from otel_flask_monitor.config import resolve_settings
from otel_flask_monitor.objective_declarations import parse_objectives
from otel_flask_monitor.objective_metrics import ObjectiveCounter
from otel_flask_monitor.record import RequestRecord

DEFAULTS = resolve_settings({}, {}, {})
"""The documented option defaults: the store takes its settings from the configuration."""


class FakeClock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def store_with(clock: Callable[[], float] = time.time, **options: int) -> AggregateStore:
    """A store with the documented defaults but for ``options``, every route with a latency objective."""
    counter = ObjectiveCounter(parse_objectives("objectives", WORST_CASE_OBJECTIVES), max_routes=100_000)
    return AggregateStore.from_settings(dataclasses.replace(DEFAULTS, **options), clock, objectives=counter)


WORST_CASE_OBJECTIVES = {"default": {"latency": {"threshold_ms": 50, "target": 99}, "availability": 99.9}}
STATUSES = (
    200,
    201,
    202,
    204,
    301,
    302,
    304,
    400,
    401,
    403,
    404,
    409,
    422,
    429,
    500,
    502,
    503,
    504,
    418,
    207,
)
"""More distinct codes than a slot keeps per route (counts.STATUS_CODES_PER_ROUTE)."""


def make_record(
    route: str, duration_ms: float, status: int = 200, path: str | None = None, trace_id: str = "0" * 32
) -> RequestRecord:
    return RequestRecord(
        method="GET",
        route=route,
        path=route if path is None else path,
        query="",
        scheme="http",
        status_code=status,
        request_size=None,
        response_size=512,
        content_type="application/json",
        client_address="127.0.0.1",
        user_agent="bench",
        server_address="localhost",
        duration_ms=duration_ms,
        cpu_ms=0.1,
        end_time_ns=0,
        trace_id=trace_id,
    )


def per_call_us(
    function: Callable[[RequestRecord], None], records: list[RequestRecord], repeat: int
) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for record in records:
            function(record)
        best = min(best, (time.perf_counter() - start) / len(records))
    return best * 1e6


def bench_record(calls: int, compare_with: Path | None) -> None:
    rng = random.Random(1)
    records = [
        make_record(
            f"/api/r{rng.randrange(20)}", rng.lognormvariate(3, 1), 500 if rng.random() < 0.02 else 200
        )
        for _ in range(calls)
    ]
    store = store_with()

    def no_op(_: RequestRecord) -> None:
        return None

    baseline = per_call_us(no_op, records, repeat=5)
    cost = per_call_us(store.record, records, repeat=5)
    print(
        f"AggregateStore.record: {cost:.2f} us/call "
        f"(no-op consumer call: {baseline:.3f} us; ratio {cost / baseline:.0f}x)"
    )
    if compare_with is not None:
        compare_record(records, compare_with)


def compare_record(records: list[RequestRecord], path: Path, rounds: int = 15) -> None:
    """This store's record() against another version's, timed in turn on the same records."""
    spec = importlib.util.spec_from_file_location("other_aggregates", path)
    assert spec is not None
    assert spec.loader is not None
    other: Any = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = other  # dataclasses look their module up
    spec.loader.exec_module(other)
    window = {
        "window_seconds": DEFAULTS.window_seconds,
        "slot_seconds": DEFAULTS.slot_seconds,
        "max_routes": DEFAULTS.max_routes,
        "recent_errors": DEFAULTS.recent_errors,
    }
    this_us: list[float] = []
    other_us: list[float] = []
    for round_number in range(rounds):
        timings = [(this_us, AggregateStore(**window)), (other_us, other.AggregateStore(**window))]
        for samples, store in timings if round_number % 2 else reversed(timings):  # each first in turn
            samples.append(per_call_us(store.record, records, repeat=1))
    this, that = statistics.median(this_us), statistics.median(other_us)
    print(
        f"AggregateStore.record vs {path}: {this:.3f} us/call against {that:.3f} us/call "
        f"(median of {rounds} interleaved rounds; ratio {this / that:.3f})"
    )


def fill_window(store: AggregateStore, clock: FakeClock, records_per_route_slot: int) -> int:
    """Every tracked route gets records in every slot of one whole window: the memory worst case."""
    rng = random.Random(2)
    routes = [f"/api/v1/resource{number}/<int:item_id>" for number in range(store.max_routes)]
    recorded = 0
    for _ in range(store.slot_count):
        clock.now += store.slot_seconds
        for route in routes:
            for _ in range(records_per_route_slot):
                status = rng.choice(STATUSES)
                path = f"/api/v1/{rng.getrandbits(64):016x}/".ljust(300, "x")  # kept whole (300 = the cap)
                trace_id = f"{rng.getrandbits(128):032x}"
                store.record(make_record(route, rng.lognormvariate(3, 1.5), status, path, trace_id))
                recorded += 1
    return recorded


def rss() -> int:
    gc.collect()
    return int(psutil.Process().memory_info().rss)


def median_ms(function: Callable[[], object], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e3


def bench_memory_and_stats(max_routes: int, records_per_route_slot: int, repeat: int) -> None:
    app = Flask("bench")
    app.get("/ping")(lambda: "pong")
    FlaskMonitor(app, setup_telemetry=False, instrument_flask=False)
    client = app.test_client()
    client.get("/ping")
    request_ms = median_ms(lambda: client.get("/ping"), repeat * 20)
    record_us = per_call_us(get_state(app).aggregates.record, [make_record("/ping", 0.5)] * 20_000, 3)
    print(
        f"GET /ping through the test client with the monitor: {request_ms * 1000:.0f} us; "
        f"AggregateStore.record is {record_us:.2f} us of it ({record_us / (request_ms * 10):.1f} %)"
    )
    client.get("/monitoring/stats")  # warm up templates, imports, the sampler
    empty_stats_ms = median_ms(lambda: client.get("/monitoring/stats"), repeat)
    health_ms = median_ms(lambda: client.get("/monitoring/health"), repeat)

    before = rss()
    started = time.perf_counter()
    clock = FakeClock()
    store = store_with(clock, max_routes=max_routes)
    recorded = fill_window(store, clock, records_per_route_slot)
    fill_seconds = time.perf_counter() - started
    after = rss()
    cells = max_routes * store.slot_count
    delta = after - before
    print(
        f"memory, {max_routes} routes x {store.slot_count} slots, {records_per_route_slot} records each "
        f"({recorded:,} records in {fill_seconds:.1f} s): RSS +{delta / 1_048_576:.1f} MiB "
        f"(process before: {before / 1_048_576:.1f} MiB; ratio {after / before:.2f}x); "
        f"{delta / cells:.0f} bytes per (route, slot)"
    )

    full_app = Flask("bench-full")
    full_app.get("/ping")(lambda: "pong")
    FlaskMonitor(setup_telemetry=False, instrument_flask=False).init_app(full_app, aggregates=store)
    client = full_app.test_client()
    first_snapshot_ms = median_ms(store.snapshot, 1)
    snapshot_ms = median_ms(store.snapshot, repeat)
    full_stats_ms = median_ms(lambda: client.get("/monitoring/stats"), repeat)
    body = len(client.get("/monitoring/stats").data)
    print(
        f"snapshot() with {max_routes} routes over a full window: {snapshot_ms:.1f} ms "
        f"(the first, adding every closed slot to the running sums: {first_snapshot_ms:.0f} ms)"
    )
    key = ("GET", "/api/v1/resource0/<int:item_id>")
    detail_ms = median_ms(lambda: store.route_detail(key), repeat)
    detail = store.route_detail(key)
    assert detail is not None
    assert detail["summary"]["requests"] == store.slot_count * records_per_route_slot
    print(
        f"route_detail() of one route over that window: {detail_ms:.1f} ms "
        f"(snapshot(): {snapshot_ms:.1f} ms, ratio {detail_ms / snapshot_ms:.2f}x)"
    )
    print(
        f"GET /monitoring/stats with {max_routes} routes: {full_stats_ms:.1f} ms, {body / 1024:.0f} KiB "
        f"(empty store: {empty_stats_ms:.2f} ms, ratio {full_stats_ms / empty_stats_ms:.0f}x; "
        f"GET /monitoring/health: {health_ms:.2f} ms)"
    )

    # snapshot() keeps the window's closed slots until it subtracts them; with nobody reading for a
    # whole window, one window of expired slots is retained next to the live one.
    fill_window(store, clock, records_per_route_slot)
    retained = rss()
    print(
        f"worst case, a second full window without a snapshot: RSS +{(retained - before) / 1_048_576:.1f} MiB"
    )
    probe = make_record("/api/v1/resource0/<int:item_id>", 12.0)
    full_cost = per_call_us(store.record, [probe] * 50_000, 3)
    print(f"AggregateStore.record with the store full: {full_cost:.2f} us/call")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer records (a smoke run, not for the docs)")
    parser.add_argument(
        "--compare-with", type=Path, help="another version's aggregates module: record() timed against it"
    )
    arguments = parser.parse_args()
    print(f"Python {sys.version.split()[0]} on {platform.machine()}, {psutil.cpu_count()} CPUs")
    bench_record(20_000 if arguments.quick else 200_000, arguments.compare_with)
    bench_memory_and_stats(200, 2 if arguments.quick else 20, 5 if arguments.quick else 30)


if __name__ == "__main__":
    main()
