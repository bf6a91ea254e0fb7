"""A forked child starts with empty aggregates: what a store held describes its parent.

Without ``multiprocess_dir`` a ``--preload`` master that served requests (a warm-up, a health check at
import) used to hand its counts to every worker, which then showed them as its own. The fast test
calls the package's fork hook directly; the real one runs gunicorn ``--preload``, whose workers are
``os.fork()`` children of the master (gunicorn/arbiter.py ``spawn_worker``), where
``os.register_at_fork`` hooks run.
"""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import pytest
import requests

from otel_flask_monitor import aggregates
from otel_flask_monitor.aggregates.multiprocess import MultiprocessAggregates
from otel_flask_monitor.aggregates.store import _LIVE_STORES
from otel_flask_monitor.aggregates.workers import Identity
from tests.support.clock import FakeClock
from tests.support.real_processes import Gunicorn, base_env, free_port
from tests.test_aggregates import make_record, new_store

WORKERS = 2
READS = 20
WARM_UP_ROUTE = "/health-check"  # tests/support/apps.py; served by the master of tests/support/preload_app.py
WARM_UP_REQUESTS = 5


def test_the_fork_hook_empties_every_store_and_gives_every_exchange_a_new_writer(tmp_path: Path) -> None:
    clock = FakeClock()
    stores = [new_store(clock, window_seconds=60, slot_seconds=10) for _ in range(2)]
    for store in stores:
        store.record(make_record(status=500))
        clock.advance(10)
        store.record(make_record())
    exchange = MultiprocessAggregates(stores[1], str(tmp_path), identity=Identity(1, 1, "1-1"))
    exchange.write()

    aggregates.after_fork_in_child()

    merged = exchange.snapshot()  # the exchange reads the emptied store, with a fresh merger
    assert merged["totals"]["requests"] == 0
    assert merged["workers"] == [{"pid": 1, "requests": 0}]

    for store in stores:
        document = store.snapshot()
        assert document["totals"]["requests"] == 0
        assert document["recent_errors"] == []
        assert document["timeline"][-1]["requests"] == 0
        assert not store.has_recorded
        store.record(make_record())  # and it records afresh
        assert store.snapshot()["totals"]["requests"] == 1


def test_stores_are_held_weakly() -> None:
    store = new_store(FakeClock())
    assert store in _LIVE_STORES
    held = weakref.ref(store)
    gc.disable()
    try:
        del store
        assert held() is None  # freed on its last reference, no cycle
    finally:
        gc.enable()


@pytest.mark.slow
def test_preload_workers_do_not_show_the_masters_requests(tmp_path: Path) -> None:
    env = base_env(
        f"http://127.0.0.1:{free_port()}",
        OTEL_SDK_DISABLED="true",
        WARM_UP_ROUTE=WARM_UP_ROUTE,
        WARM_UP_REQUESTS=str(WARM_UP_REQUESTS),
    )
    app = "tests.support.preload_app:app"
    with Gunicorn(env, tmp_path, workers=WORKERS, preload=True, app=app, name="preload") as server:
        assert requests.get(server.base_url + "/items/1", timeout=10).status_code == 200
        for _ in range(READS):
            document = requests.get(server.base_url + "/monitoring/stats", timeout=10).json()
            assert document["per_process"] is True
            # One worker served /items/1, the other nothing; neither the master's warm-up requests.
            assert document["totals"]["requests"] in (0, 1), document["totals"]
            assert WARM_UP_ROUTE not in {row["route"] for row in document["routes"]}
            assert document["totals"]["requests"] < WARM_UP_REQUESTS
