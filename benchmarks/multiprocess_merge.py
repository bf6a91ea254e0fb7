"""Cost of aggregates across workers (``multiprocess_dir``): file sizes, write time, merged /stats.

Run: .venv/bin/python benchmarks/multiprocess_merge.py [--quick]

Four workers' stores are filled to the worst case of benchmarks/aggregates.py (``max_routes`` routes
receiving records in every slot of a whole window); three write their files (under the identities of
three live helper processes, so that they count as live workers), the fourth answers
``GET /monitoring/stats`` merged over all four. Baseline in the same run: the same route on one
store alone (``multiprocess_dir`` unset).

Reads are timed in three situations: nothing written since the last read; every other worker wrote
its state since the last read (the dashboard's case: it polls every 5 s, workers write every 1 s);
and just after a slot boundary, where every worker has a new sum to be read and a slot left the window.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil
from aggregates import FakeClock, fill_window, make_record, median_ms, store_with  # benchmarks/aggregates.py
from flask import Flask

from otel_flask_monitor import FlaskMonitor, get_state
from otel_flask_monitor.aggregates import AggregateStore
from otel_flask_monitor.aggregates.multiprocess import MultiprocessAggregates
from otel_flask_monitor.aggregates.workers import Identity, process_start_ms
from otel_flask_monitor.extension import EXTENSION_KEY

WORKERS = 4
SERVER = "bench-server"


def rss() -> int:
    gc.collect()
    return int(psutil.Process().memory_info().rss)


def size_of(directory: Path, pattern: str = "*") -> int:
    return sum(path.stat().st_size for path in directory.glob(pattern) if path.is_file())


def timed_ms(function: Callable[[], object]) -> float:
    started = time.perf_counter()
    function()
    return (time.perf_counter() - started) * 1e3


def next_slot(stores: list[AggregateStore], clock: FakeClock, rng: random.Random) -> None:
    """A slot boundary: the clock moves into the next slot and every route of every worker gets a request."""
    clock.now += stores[0].slot_seconds
    for store in stores:
        for number in range(store.max_routes):
            store.record(make_record(f"/api/v1/resource{number}/<int:item_id>", rng.lognormvariate(3, 1.5)))


def requests_in_window(stores: list[AggregateStore], now: float) -> int:
    """What every store counted in the window at ``now`` (its oldest slots may have left it)."""
    total = 0
    for store in stores:
        state = store.window_state()
        oldest = max(int(now // store.slot_seconds), state.newest_number) - store.slot_count + 1
        slots = [*state.closed.values(), *([state.current] if state.current is not None else [])]
        total += sum(slot.total.requests for slot in slots if slot.number >= oldest)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer records (a smoke run, not for the docs)")
    arguments = parser.parse_args()
    per_cell, repeat, boundaries, max_routes = (2, 5, 2, 200) if arguments.quick else (20, 30, 12, 200)
    print(f"Python {sys.version.split()[0]} on {platform.machine()}, {psutil.cpu_count()} CPUs")
    rng = random.Random(3)

    helpers = [
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"]) for _ in range(WORKERS - 1)
    ]
    try:
        with tempfile.TemporaryDirectory(prefix="ofm-bench-") as temporary:
            directory = Path(temporary)
            clock = FakeClock()
            stores = [store_with(clock, max_routes=max_routes) for _ in range(WORKERS)]
            started = time.perf_counter()
            window_begins = clock.now
            for store in stores:  # the same window for every worker
                clock.now = window_begins
                fill_window(store, clock, per_cell)
            print(
                f"{WORKERS} stores filled ({max_routes} routes x {stores[0].slot_count} slots, {per_cell} "
                f"records each) in {time.perf_counter() - started:.1f} s"
            )
            writers = []
            for helper, store in zip(helpers, stores[1:], strict=True):
                start_ms = process_start_ms(helper.pid)
                assert start_ms is not None
                identity = Identity(helper.pid, start_ms, SERVER)
                writers.append(MultiprocessAggregates(store, str(directory), identity=identity))

            def write_all() -> None:
                for writer in writers:
                    writer.write()

            before_write = rss()
            first_write_ms = timed_ms(writers[0].write)
            writer_rss = rss() - before_write
            for writer in writers[1:]:
                writer.write()
            samples = []
            for _ in range(repeat):
                clock.now += 0.01  # written_at changes: the state is written anew
                samples.append(timed_ms(writers[0].write))
            steady_write_ms = statistics.median(samples)
            samples = []
            for _ in range(boundaries):
                next_slot(stores, clock, rng)
                samples.append(timed_ms(writers[0].write))
                for writer in writers[1:]:
                    writer.write()
            boundary_write_ms = statistics.median(samples)
            one = directory / writers[0].identity.name
            slot_files = list(one.glob("slot-*.json"))
            print(
                f"one worker's files: {size_of(one) / 1_048_576:.1f} MiB in {len(list(one.iterdir()))} files "
                f"(state.json {size_of(one, 'state.json') / 1024:.0f} KiB, a closed slot "
                f"~{size_of(one, 'slot-*.json') / max(len(slot_files), 1) / 1024:.0f} KiB, its sums "
                f"{size_of(one, 'sums-*.json') / len(list(one.glob('sums-*.json'))) / 1024:.0f} KiB); "
                f"first write (every closed slot and their sum) {first_write_ms:.0f} ms, the writer's "
                f"running sums RSS +{writer_rss / 1_048_576:.1f} MiB; then per interval "
                f"{steady_write_ms:.1f} ms (the slot still written + state.json), "
                f"at a slot boundary {boundary_write_ms:.1f} ms (+ the closed slot and a new sum)"
            )

            app = Flask("bench")
            app.get("/ping")(lambda: "pong")
            FlaskMonitor(setup_telemetry=False, instrument_flask=False).init_app(app, aggregates=stores[0])
            client = app.test_client()
            state = get_state(app)
            own = psutil.Process()
            reader = MultiprocessAggregates(
                stores[0], str(directory), identity=Identity(own.pid, process_start_ms(own.pid) or 0, SERVER)
            )
            client.get("/monitoring/stats")
            single_ms = median_ms(lambda: client.get("/monitoring/stats"), repeat)
            # No public seam hands an app a reader of other processes' files under a made-up server
            # identity (multiprocess_dir builds its own from the real parent): swap it in here.
            app.extensions[EXTENSION_KEY] = dataclasses.replace(state, exchange=reader)
            before = rss()
            cold_ms = timed_ms(lambda: client.get("/monitoring/stats"))
            held = rss() - before
            document = client.get("/monitoring/stats").get_json()
            assert document["totals"]["requests"] == requests_in_window(stores, clock.now), "requests lost"
            assert len(document["workers"]) == WORKERS
            unchanged_ms = median_ms(lambda: client.get("/monitoring/stats"), repeat)
            samples = []
            for _ in range(repeat):
                clock.now += 0.01
                write_all()
                samples.append(timed_ms(lambda: client.get("/monitoring/stats")))
            rewritten_ms = statistics.median(samples)
            samples = []
            for _ in range(boundaries):
                next_slot(stores, clock, rng)
                write_all()
                samples.append(timed_ms(lambda: client.get("/monitoring/stats")))
            boundary_ms, boundary_mean_ms = statistics.median(samples), statistics.mean(samples)
            document = client.get("/monitoring/stats").get_json()
            assert document["totals"]["requests"] == requests_in_window(stores, clock.now), "requests lost"
            body = len(client.get("/monitoring/stats").data)
            print(
                f"GET /monitoring/stats merged over {WORKERS} workers at {max_routes} routes, "
                f"{body / 1024:.0f} KiB: {rewritten_ms:.1f} ms with every worker's state rewritten since "
                f"the last read (ratio {rewritten_ms / single_ms:.1f}x one store alone: {single_ms:.1f} ms), "
                f"{unchanged_ms:.1f} ms with nothing rewritten; at a slot boundary (per worker a slot "
                f"closed, one left the window) median {boundary_ms:.1f} ms, mean {boundary_mean_ms:.1f} ms "
                f"over {boundaries}; first read {cold_ms:.0f} ms, RSS +{held / 1_048_576:.1f} MiB held for "
                f"the other {WORKERS - 1} workers"
            )
    finally:
        for helper in helpers:
            helper.kill()
            helper.wait(timeout=10)


if __name__ == "__main__":
    main()
