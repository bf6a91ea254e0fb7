"""What counting a request against its route's objectives costs, next to what it replaces.

    python benchmarks/objective_counter.py                 # 7 interleaved rounds x 100 000 records
    python benchmarks/objective_counter.py --records 2000 --rounds 1

Per record, single thread (``time.process_time``):

  objective counter   ObjectiveCounter.record with a latency and an availability objective on the
                      route: what the monitor does per request (otel_flask_monitor.objective_metrics);
  sync counter        the same two outcomes through the SDK's synchronous Counter.add, the obvious
                      alternative (one add per objective, attributes prebuilt);
  collection          the observable counter's callback at export time, for 200 (method, route)
                      pairs with both objectives (per export, not per request).

Target: objective counter / sync counter <= 0.25 (the reason the counter is observable).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from aggregates import make_record  # benchmarks/aggregates.py: a record as the hooks build it
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel_flask_monitor.objective_declarations import parse_objectives
from otel_flask_monitor.objective_metrics import METRIC_NAME, ObjectiveCounter, register_instrument
from otel_flask_monitor.objectives import AppRoute
from otel_flask_monitor.record import RequestRecord

TARGET = 0.25
POLICY = parse_objectives(
    "objectives", {"default": {"availability": 99.9, "latency": {"threshold_ms": 300, "target": 99}}}
)
ROUTES = [
    AppRoute(f"/api/r{number}/<int:item_id>", frozenset({"GET"}), f"r{number}") for number in range(200)
]


def record(duration_ms: float, status: int) -> RequestRecord:
    return make_record("/api/r7/<int:item_id>", duration_ms, status)


def objective_counter_round(records: list[RequestRecord]) -> float:
    counter = ObjectiveCounter(POLICY, max_routes=200, routes=lambda: ROUTES)
    counter.record(records[0])  # reads the routes once, as at an app's first request
    started = time.process_time()
    for item in records:
        counter.record(item)
    return (time.process_time() - started) / len(records) * 1e6


def sync_counter_round(records: list[RequestRecord]) -> float:
    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    counter = provider.get_meter("bench").create_counter(METRIC_NAME + ".sync", unit="{request}")
    attributes = {
        (kind, outcome): {
            "http.route": records[0].route,
            "http.request.method": "GET",
            "objective": kind,
            "outcome": outcome,
        }
        for kind in ("latency", "availability")
        for outcome in ("good", "bad")
    }
    started = time.process_time()
    for item in records:
        counter.add(1, attributes[("latency", "good" if item.duration_ms <= 300 else "bad")])
        counter.add(1, attributes[("availability", "bad" if item.is_server_error else "good")])
    elapsed = time.process_time() - started
    provider.shutdown()
    return elapsed / len(records) * 1e6


def collection_round(_: list[RequestRecord]) -> float:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    counter = ObjectiveCounter(POLICY, max_routes=200, routes=lambda: ROUTES)
    counter.record(record(10.0, 200))
    register_instrument(provider.get_meter("bench"), lambda: [counter])
    started = time.process_time()
    for _ in range(20):
        reader.get_metrics_data()
    elapsed = time.process_time() - started
    provider.shutdown()
    return elapsed / 20 * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=7)
    arguments = parser.parse_args()
    records = [
        record(10.0 + index % 500, 503 if index % 97 == 0 else 200) for index in range(arguments.records)
    ]
    measures: dict[str, Callable[[list[RequestRecord]], float]] = {
        "objective counter": objective_counter_round,
        "sync counter": sync_counter_round,
    }
    results: dict[str, list[float]] = {name: [] for name in measures}
    collections: list[float] = []
    for _ in range(arguments.rounds):  # interleaved: load from elsewhere spreads over both
        for name, measure in measures.items():
            results[name].append(measure(records))
        collections.append(collection_round(records))
    print(f"\nper record (us), {arguments.rounds} interleaved rounds x {arguments.records} records")
    print(f"{'':<20} {'median':>8} {'min':>8} {'max':>8}")
    for name, values in results.items():
        print(f"{name:<20} {statistics.median(values):>8.2f} {min(values):>8.2f} {max(values):>8.2f}")
    print(
        f"{'collection':<20} {statistics.median(collections):>8.0f} us per export "
        f"(200 routes x 2 objectives x 2 outcomes = 800 points)"
    )
    ratio = statistics.median(results["objective counter"]) / statistics.median(results["sync counter"])
    verdict = "met" if ratio <= TARGET else "MISSED"
    print(f"target objective counter / sync counter = {ratio:.3f} (<= {TARGET:.2f}): {verdict}")


if __name__ == "__main__":
    main()
