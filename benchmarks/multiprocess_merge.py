"""Cost of aggregates across workers (``multiprocess_dir``): file sizes, write time, merged /stats.

Run: .venv/bin/python benchmarks/multiprocess_merge.py [--quick]

Four workers' stores are filled to the worst case of benchmarks/aggregates.py (``max_routes`` routes
receiving records in every slot of a whole window); three write their files (under the identities of
three live helper processes, so that they count as live workers), the fourth answers
``GET /monitoring/stats`` merged over all four. Baseline in the same run: the same route on one
store alone (``multiprocess_dir`` unset).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from aggregates import FakeClock, fill_window, median_ms  # benchmarks/aggregates.py
from flask import Flask

from otel_flask_monitor import FlaskMonitor, get_state
from otel_flask_monitor.aggregates import AggregateStore
from otel_flask_monitor.extension import EXTENSION_KEY
from otel_flask_monitor.multiprocess import Identity, MultiprocessAggregates, process_start_ms

WORKERS = 4
SERVER = "bench-server"


def rss() -> int:
    gc.collect()
    return int(psutil.Process().memory_info().rss)


def size_of(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer records (a smoke run, not for the docs)")
    arguments = parser.parse_args()
    per_cell, repeat, max_routes = (2, 5, 200) if arguments.quick else (20, 30, 200)
    print(f"Python {sys.version.split()[0]} on {platform.machine()}, {psutil.cpu_count()} CPUs")

    helpers = [
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"]) for _ in range(WORKERS - 1)
    ]
    try:
        with tempfile.TemporaryDirectory(prefix="ofm-bench-") as temporary:
            directory = Path(temporary)
            clock = FakeClock()
            stores = [AggregateStore(max_routes=max_routes, clock=clock) for _ in range(WORKERS)]
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
            first = time.perf_counter()
            writers[0].write()
            first_write_ms = (time.perf_counter() - first) * 1e3
            for writer in writers[1:]:
                writer.write()
            steady_write_ms = median_ms(writers[0].write, repeat)
            one = directory / writers[0].identity.name
            state_size = (one / "state.json").stat().st_size
            slot_kib = size_of(one) / max(len(list(one.glob("slot-*.json"))), 1) / 1024
            slot_files = list(one.glob("slot-*.json"))
            print(
                f"one worker's files: {size_of(one) / 1_048_576:.1f} MiB in {len(slot_files) + 1} files "
                f"(state.json {state_size / 1024:.0f} KiB, a closed slot ~{slot_kib:.0f} KiB); "
                f"first write (every closed slot) {first_write_ms:.0f} ms, then per interval "
                f"{steady_write_ms:.1f} ms (the slot still written + state.json)"
            )

            app = Flask("bench")
            app.get("/ping")(lambda: "pong")
            FlaskMonitor(app, setup_telemetry=False, instrument_flask=False)
            client = app.test_client()
            state = get_state(app)
            own = psutil.Process()
            reader = MultiprocessAggregates(
                stores[0], str(directory), identity=Identity(own.pid, process_start_ms(own.pid) or 0, SERVER)
            )
            app.extensions[EXTENSION_KEY] = dataclasses.replace(state, aggregates=stores[0])
            client.get("/monitoring/stats")
            single_ms = median_ms(lambda: client.get("/monitoring/stats"), repeat)
            app.extensions[EXTENSION_KEY] = dataclasses.replace(state, aggregates=stores[0], exchange=reader)
            before = rss()
            started = time.perf_counter()
            response = client.get("/monitoring/stats")
            cold_ms = (time.perf_counter() - started) * 1e3
            held = rss() - before
            document = response.get_json()
            assert document["totals"]["requests"] == sum(
                store.window_state().current.total.requests  # type: ignore[union-attr]
                + sum(slot.total.requests for slot in store.window_state().closed.values())
                for store in stores
            ), "the merge lost requests"
            assert len(document["workers"]) == WORKERS
            merged_ms = median_ms(lambda: client.get("/monitoring/stats"), repeat)
            body = len(client.get("/monitoring/stats").data)
            print(
                f"GET /monitoring/stats merged over {WORKERS} workers at {max_routes} routes: "
                f"{merged_ms:.1f} ms, {body / 1024:.0f} KiB (one store alone: {single_ms:.1f} ms, "
                f"ratio {merged_ms / single_ms:.1f}x); "
                f"first read, loading {WORKERS - 1} x {len(slot_files)} closed slots: {cold_ms:.0f} ms, "
                f"RSS +{held / 1_048_576:.1f} MiB held for them"
            )
    finally:
        for helper in helpers:
            helper.kill()
            helper.wait(timeout=10)


if __name__ == "__main__":
    main()
