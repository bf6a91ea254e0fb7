"""The rolling-window aggregate store on its own: no Flask app, an injected clock."""

from __future__ import annotations

import ast
import importlib
import math
import random
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import otel_flask_monitor.aggregates as package
from otel_flask_monitor.aggregates import OVERFLOW_ROUTE, AggregateStore
from otel_flask_monitor.config import resolve_settings
from otel_flask_monitor.record import UNMATCHED_ROUTE, ExceptionInfo, RequestRecord
from tests.support.clock import FakeClock
from tests.support.records import make_record as record_of


def new_store(clock: Callable[[], float] = time.time, **options: int) -> AggregateStore:
    """A store with the configuration's defaults (the store has none of its own) but for ``options``."""
    return AggregateStore.from_settings(resolve_settings(options, {}, {}), clock)


def make_record(
    route: str | None = "/items/<int:item_id>",
    *,
    status: int = 200,
    duration_ms: float = 10.0,
    **fields: Any,
) -> RequestRecord:
    """tests/support/records.py's record, positional by route and with the store tests' defaults."""
    defaults = {"response_size": 20, "cpu_ms": 0.1, "end_time_ns": 0}
    return record_of(**(defaults | fields), route=route, status_code=status, duration_ms=duration_ms)


def route_row(snapshot: dict[str, Any], route: str, method: str = "GET") -> dict[str, Any]:
    rows = [row for row in snapshot["routes"] if row["route"] == route and row["method"] == method]
    assert len(rows) == 1, (
        f"{method} {route} not in {[(r['method'], r['route']) for r in snapshot['routes']]}"
    )
    return rows[0]


def exact_percentile(samples: list[float], quantile: float) -> float:
    """The sample at rank q * (n - 1), the definition the store documents."""
    ordered = sorted(samples)
    return ordered[math.floor(quantile * (len(ordered) - 1))]


def _uniform(rng: random.Random) -> float:
    return rng.uniform(0.5, 2000.0)


def _log_normal(rng: random.Random) -> float:
    return rng.lognormvariate(3.0, 1.2)


def _bimodal(rng: random.Random) -> float:
    # A fast cache-hit mode and a slow database mode, 85/15.
    return abs(rng.gauss(4.0, 0.8)) + 0.01 if rng.random() < 0.85 else rng.gauss(450.0, 60.0)


@pytest.mark.parametrize("draw", [_uniform, _log_normal, _bimodal], ids=["uniform", "log-normal", "bimodal"])
def test_percentiles_are_within_two_percent_of_exact(draw: Callable[[random.Random], float]) -> None:
    rng = random.Random(20240531)
    samples = [draw(rng) for _ in range(20_000)]
    clock = FakeClock()
    store = new_store(clock, window_seconds=60, slot_seconds=10)
    for index, duration in enumerate(samples):
        if index % 5000 == 0:
            clock.advance(10)  # spread over several slots: window percentiles merge slots
        store.record(make_record(duration_ms=duration))

    snapshot = store.snapshot()
    latency = route_row(snapshot, "/items/<int:item_id>")["latency_ms"]
    for name, quantile in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        exact = exact_percentile(samples, quantile)
        assert latency[name] == pytest.approx(exact, rel=0.02), name
        assert snapshot["totals"]["latency_ms"][name] == pytest.approx(exact, rel=0.02), name


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.floats(min_value=0.001, max_value=600_000, allow_nan=False, allow_infinity=False),
        min_size=1,
        max_size=300,
    )
)
def test_percentiles_are_within_two_percent_on_any_sample(samples: list[float]) -> None:
    store = new_store(FakeClock(), window_seconds=60, slot_seconds=10)
    for duration in samples:
        store.record(make_record(duration_ms=duration))
    latency = store.snapshot()["totals"]["latency_ms"]
    for name, quantile in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        assert latency[name] == pytest.approx(exact_percentile(samples, quantile), rel=0.02)


def test_window_rolls_over_slot_by_slot() -> None:
    clock = FakeClock(1_000_000.0)
    store = new_store(clock, window_seconds=60, slot_seconds=10)
    for _ in range(5):
        store.record(make_record(duration_ms=100.0))
    clock.advance(30)
    for _ in range(3):
        store.record(make_record(duration_ms=1.0))

    both = store.snapshot()
    assert both["totals"]["requests"] == 8
    assert len(both["timeline"]) == 6
    assert [slot["requests"] for slot in both["timeline"]][-4:] == [5, 0, 0, 3]
    assert both["timeline"][-1]["start_unix"] == 1_000_030.0
    # The store has existed for 30 s: throughput is over the time covered, not the whole window.
    assert both["totals"]["requests_per_second"] == pytest.approx(8 / 30, rel=1e-5)

    clock.advance(35)  # the first slot (t=1_000_000..1_000_010) has left the 60 s window
    later = store.snapshot()
    assert later["totals"]["requests"] == 3
    assert route_row(later, "/items/<int:item_id>")["latency_ms"]["p99"] == pytest.approx(1.0, rel=0.02)
    assert later["totals"]["requests_per_second"] == pytest.approx(3 / 60, rel=0.2)

    clock.advance(3600)
    empty = store.snapshot()
    assert empty["totals"]["requests"] == 0
    assert empty["routes"] == []
    assert empty["totals"]["latency_ms"] == {"p50": None, "p95": None, "p99": None}


def test_clock_stepping_back_does_not_rewrite_older_slots() -> None:
    clock = FakeClock(1_000_000.0)
    store = new_store(clock, window_seconds=60, slot_seconds=10)
    store.record(make_record())
    clock.advance(-25)
    store.record(make_record())
    assert store.snapshot()["totals"]["requests"] == 2


def test_counts_errors_bytes_and_recent_errors() -> None:
    store = new_store(FakeClock(), window_seconds=60, slot_seconds=10, recent_errors=3)
    store.record(make_record(status=200, request_size=100, response_size=1000))
    store.record(make_record(status=404, path="/items/404"))
    store.record(make_record(status=500, trace_id="ab" * 16))
    boom = ExceptionInfo(type="shop.TillOnFire", message="fire", stacktrace="...", escaped=True)
    for number in range(4):
        store.record(
            make_record(route="/boom", path="/boom", status=500, exception=boom, trace_id=f"{number:032x}")
        )

    snapshot = store.snapshot()
    items = route_row(snapshot, "/items/<int:item_id>")
    assert (items["requests"], items["client_errors"], items["server_errors"]) == (3, 1, 1)
    assert items["error_rate"] == pytest.approx(2 / 3)
    assert items["request_bytes"] == 100
    assert items["response_bytes"] == 1040
    assert route_row(snapshot, "/boom")["server_errors"] == 4
    assert snapshot["totals"]["server_errors"] == 5

    recent = snapshot["recent_errors"]
    assert len(recent) == 3  # bounded by recent_errors, newest first
    assert [error["trace_id"] for error in recent] == [f"{n:032x}" for n in (3, 2, 1)]
    assert recent[0]["exception_type"] == "shop.TillOnFire"
    assert recent[0]["status_code"] == 500
    assert recent[0]["route"] == "/boom"
    client = snapshot["recent_client_errors"]
    assert [(error["status_code"], error["path"]) for error in client] == [(404, "/items/404")]


def test_routes_beyond_max_routes_share_other() -> None:
    store = new_store(FakeClock(), window_seconds=60, slot_seconds=10, max_routes=3)
    for number in range(6):
        store.record(make_record(route=f"/route/{number}"))
    store.record(make_record(route="/route/0"))

    snapshot = store.snapshot()
    assert snapshot["tracked_routes"] == 3
    assert {row["route"] for row in snapshot["routes"]} == {
        "/route/0",
        "/route/1",
        "/route/2",
        OVERFLOW_ROUTE,
    }
    assert route_row(snapshot, "/route/0")["requests"] == 2
    assert route_row(snapshot, OVERFLOW_ROUTE, method="*")["requests"] == 3
    assert snapshot["totals"]["requests"] == 7


def test_idle_routes_give_their_place_to_new_ones_after_a_window() -> None:
    clock = FakeClock()
    store = new_store(clock, window_seconds=60, slot_seconds=10, max_routes=2)
    store.record(make_record(route="/old/a"))
    store.record(make_record(route="/old/b"))
    clock.advance(120)
    store.record(make_record(route="/new"))
    assert [row["route"] for row in store.snapshot()["routes"]] == ["/new"]


def test_unmatched_paths_and_invented_methods_do_not_create_keys() -> None:
    store = new_store(FakeClock(), window_seconds=60, slot_seconds=10, max_routes=5)
    for number in range(500):
        store.record(make_record(route=None, status=404, path=f"/scan/{number}"))
    for number in range(50):
        store.record(make_record(route=None, status=405, method=f"X-METHOD-{number}"))

    snapshot = store.snapshot()
    assert snapshot["tracked_routes"] == 2
    assert route_row(snapshot, UNMATCHED_ROUTE)["requests"] == 500
    assert route_row(snapshot, UNMATCHED_ROUTE, method="_OTHER")["requests"] == 50
    assert len(snapshot["recent_client_errors"]) == 50  # the default bound


def test_long_paths_and_user_agents_are_clipped_in_recent_errors() -> None:
    store = new_store(FakeClock())
    store.record(make_record(route=None, status=404, path="/" + "a" * 5000, user_agent="b" * 5000))
    error = store.snapshot()["recent_client_errors"][0]
    assert len(error["path"]) <= 300
    assert len(error["user_agent"]) <= 300


def test_concurrent_records_are_all_counted() -> None:
    store = new_store(window_seconds=60, slot_seconds=10)
    threads_count, per_thread = 8, 2500
    start = threading.Barrier(threads_count)

    def work(worker: int) -> None:
        start.wait()
        for number in range(per_thread):
            status = 500 if number % 10 == 0 else 200
            store.record(make_record(route=f"/r/{worker % 4}", status=status, duration_ms=number % 50 + 1))

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    snapshot = store.snapshot()
    assert snapshot["totals"]["requests"] == threads_count * per_thread
    assert snapshot["totals"]["server_errors"] == threads_count * per_thread // 10
    for worker in range(4):
        assert route_row(snapshot, f"/r/{worker}")["requests"] == 2 * per_thread


def test_invalid_window_is_rejected() -> None:
    with pytest.raises(ValueError, match="slot_seconds"):
        AggregateStore(window_seconds=5, slot_seconds=10, max_routes=200, recent_errors=50)


def test_importable_without_flask() -> None:
    code = (
        "import importlib, pkgutil, sys; sys.modules['flask'] = None\n"
        "import otel_flask_monitor.aggregates as package\n"
        "for module in pkgutil.iter_modules(package.__path__):\n"
        "    importlib.import_module(f'otel_flask_monitor.aggregates.{module.name}')\n"
        "from otel_flask_monitor.aggregates import AggregateStore\n"
        "from otel_flask_monitor.record import RequestRecord\n"
        "store = AggregateStore(window_seconds=900, slot_seconds=10, max_routes=200, recent_errors=50)\n"
        "print(store.snapshot()['totals']['requests'])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0"


def test_the_package_modules_import_one_way() -> None:
    """Each module of the package imports only modules listed before it in the package's docstring."""
    order = re.findall(r"^- ``(\w+)``", package.__doc__ or "", re.MULTILINE)
    modules = [path.stem for path in Path(package.__path__[0]).glob("*.py") if path.stem != "__init__"]
    assert sorted(order) == sorted(modules)
    for position, name in enumerate(order):
        module = importlib.import_module(f"otel_flask_monitor.aggregates.{name}")
        tree = ast.parse(Path(str(module.__file__)).read_text())
        imported = {
            node.module.rsplit(".", 1)[-1]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom)
            and node.module is not None
            and node.module.startswith("otel_flask_monitor.aggregates.")
        }
        assert imported <= set(order[:position]), (name, imported - set(order[:position]))
