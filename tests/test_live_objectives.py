"""The live objectives (aggregates/live_objectives.py) and the route drill-down (aggregates/drill.py):
figures against hand-computed cases, on a store with a fake clock and through the app's routes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from flask import Flask

from otel_flask_monitor import FlaskMonitor, objective
from otel_flask_monitor.aggregates import AggregateStore
from otel_flask_monitor.aggregates.counts import SLOWEST_PER_SLOT, STATUS_CODES_PER_ROUTE
from otel_flask_monitor.aggregates.drill import HISTOGRAM_BARS
from otel_flask_monitor.aggregates.multiprocess import MultiprocessAggregates
from otel_flask_monitor.aggregates.sketch import bucket_bounds, latency_key
from otel_flask_monitor.aggregates.workers import Identity, process_start_ms
from otel_flask_monitor.burn_rate import MIN_REQUESTS
from otel_flask_monitor.objective_declarations import parse_objectives
from otel_flask_monitor.objective_metrics import ObjectiveCounter
from tests.support.clock import FakeClock
from tests.test_aggregates import make_record
from tests.test_aggregates_golden import SERVER, START, fixed_record
from tests.test_multiprocess import worker_standing_in

ROUTE = "/pay/<int:order>"
OBJECTIVES = {f"GET {ROUTE}": {"latency": {"threshold_ms": 100, "target": 99}, "availability": 99.5}}


def store_with_objectives(clock: FakeClock) -> AggregateStore:
    """A store whose latency thresholds come from the real objective counter (resolved per route)."""
    counter = ObjectiveCounter(parse_objectives("objectives", OBJECTIVES), max_routes=50)
    return AggregateStore(
        window_seconds=900, slot_seconds=10, max_routes=50, recent_errors=5, clock=clock, objectives=counter
    )


def objective_rows(document: dict[str, Any], method: str = "GET") -> dict[str, dict[str, Any]]:
    return {
        row["objective"]: row
        for row in document["objectives"]
        if row["route"] == ROUTE and row["method"] == method
    }


def test_attained_ratio_budget_and_burn_rates_over_the_window_and_the_last_5_minutes() -> None:
    clock = FakeClock()
    store = store_with_objectives(clock)
    # Ten minutes ago: 200 requests, 4 of them slower than 100 ms, 2 server errors.
    for n in range(200):
        store.record(
            make_record(ROUTE, duration_ms=150.0 if n < 4 else 100.0, status=500 if n >= 198 else 200)
        )
    clock.advance(600)
    # Now: 50 requests, 5 slow, 1 server error (an exception counts as one too).
    for n in range(50):
        store.record(make_record(ROUTE, duration_ms=250.0 if n < 5 else 3.0, status=503 if n == 49 else 200))

    rows = objective_rows(store.snapshot())
    latency, availability = rows["latency"], rows["availability"]
    # Latency, 99 % within 100 ms (inclusive): 9 of 250 missed it. Budget 1 %.
    assert (latency["requests"], latency["good"]) == (250, 241)
    assert latency["attained_ratio"] == pytest.approx(241 / 250)  # 0.964
    assert latency["burn_rate"] == pytest.approx(3.6)  # (9 / 250) / 0.01
    assert latency["error_budget_left"] == pytest.approx(-2.6)
    assert latency["last_5m"] == {"requests": 50, "good": 45, "burn_rate": pytest.approx(10.0)}  # 0.1 / 0.01
    assert latency["threshold_ms"] == 100
    assert latency["target_percent"] == 99
    # Availability, 99.5 %: 3 of 250 were server errors. Budget 0.5 %.
    assert (availability["requests"], availability["good"]) == (250, 247)
    assert availability["burn_rate"] == pytest.approx(2.4)  # (3 / 250) / 0.005
    assert availability["error_budget_left"] == pytest.approx(-1.4)
    assert availability["last_5m"]["burn_rate"] == pytest.approx(4.0)  # (1 / 50) / 0.005
    assert availability["threshold_ms"] is None
    assert not latency["burning"]
    assert not availability["burning"]

    # The ten-minute-old slot leaves the window: only the newest requests count.
    clock.advance(600)
    rows = objective_rows(store.snapshot())
    assert (rows["latency"]["requests"], rows["latency"]["good"]) == (50, 45)
    assert rows["latency"]["last_5m"] == {"requests": 0, "good": 0, "burn_rate": None}
    assert rows["latency"]["burning"] is False


def test_a_route_burns_when_both_windows_burn_faster_than_the_page_factor() -> None:
    clock = FakeClock()
    store = store_with_objectives(clock)
    for n in range(100):
        store.record(make_record(ROUTE, status=500 if n < 8 else 200))  # 8 % errors: 16x a 0.5 % budget
    rows = objective_rows(store.snapshot())
    assert rows["availability"]["burn_rate"] == pytest.approx(16.0)
    assert rows["availability"]["burning"] is True
    assert rows["latency"]["burning"] is False  # 10 ms each: all within 100 ms


def test_a_nearly_idle_route_does_not_burn_on_its_first_failures() -> None:
    clock = FakeClock()
    store = store_with_objectives(clock)
    for n in range(MIN_REQUESTS - 1):
        store.record(make_record(ROUTE, status=500 if n < 3 else 200))
    row = objective_rows(store.snapshot())["availability"]
    assert row["burn_rate"] == pytest.approx(3 / (MIN_REQUESTS - 1) / 0.005)  # far past 14.4x
    assert row["burning"] is False
    store.record(make_record(ROUTE))
    assert objective_rows(store.snapshot())["availability"]["burning"] is True


def test_without_requests_the_figures_are_null_not_zero() -> None:
    clock = FakeClock()
    store = store_with_objectives(clock)
    store.record(make_record("/other"))  # resolves the table: the objective route exists, unvisited
    assert "objectives" not in store.snapshot()  # without a route list, a pair resolves on its request
    store.record(make_record(ROUTE))
    clock.advance(900)
    row = objective_rows(store.snapshot())["availability"]
    assert (row["requests"], row["attained_ratio"], row["burn_rate"], row["error_budget_left"]) == (
        0,
        None,
        None,
        None,
    )


def test_a_store_without_objectives_has_no_objectives_list_and_counts_none_met() -> None:
    store = AggregateStore(
        window_seconds=60, slot_seconds=10, max_routes=5, recent_errors=5, clock=FakeClock()
    )
    store.record(make_record(ROUTE))
    assert "objectives" not in store.snapshot()
    assert store.window_state().current.routes[("GET", ROUTE)].latency_met == 0  # type: ignore[union-attr]


def test_the_drill_down_of_a_route_per_slot() -> None:
    clock = FakeClock()
    store = store_with_objectives(clock)
    for n in range(7):
        store.record(make_record(ROUTE, duration_ms=float(n + 1), path=f"/pay/{n}", trace_id=f"{n:032x}"))
    store.record(make_record(ROUTE, status=404, duration_ms=0.5))
    clock.advance(10)
    store.record(make_record(ROUTE, status=500, duration_ms=50.0, path="/pay/slow", trace_id="f" * 32))
    store.record(make_record("/elsewhere", duration_ms=900.0))

    detail = store.route_detail(("GET", ROUTE))
    assert detail is not None
    assert (detail["method"], detail["route"], detail["per_process"]) == ("GET", ROUTE, True)
    assert len(detail["timeline"]) == 90
    first, second = detail["timeline"][-2:]
    assert (first["requests"], first["client_errors"], first["server_errors"]) == (8, 1, 0)
    assert (second["requests"], second["client_errors"], second["server_errors"]) == (1, 0, 1)
    assert first["requests_per_second"] == 0.8
    assert second["latency_ms"]["p99"] == pytest.approx(50.0, rel=0.01)
    assert sum(entry["requests"] for entry in detail["timeline"]) == detail["summary"]["requests"] == 9
    assert detail["status_codes"] == [
        {"status_code": 200, "requests": 7},
        {"status_code": 404, "requests": 1},
        {"status_code": 500, "requests": 1},
    ]
    # The window's slowest of this route (not of another), newest slots' and older ones' together.
    slowest = detail["slowest"]
    assert len(slowest) == SLOWEST_PER_SLOT
    assert [entry["path"] for entry in slowest] == ["/pay/slow", "/pay/6", "/pay/5", "/pay/4", "/pay/3"]
    assert slowest[0] == {
        "time_unix": clock.now,
        "method": "GET",
        "route": ROUTE,
        "path": "/pay/slow",
        "status_code": 500,
        "duration_ms": 50.0,
        "trace_id": "f" * 32,
    }
    histogram = detail["latency_histogram"]
    assert 0 < len(histogram) <= HISTOGRAM_BARS
    assert sum(bar["requests"] for bar in histogram) == 9
    assert histogram[0]["from_ms"] < 0.5 <= histogram[0]["to_ms"]
    assert histogram[-1]["from_ms"] < 50.0 <= histogram[-1]["to_ms"]
    assert store.route_detail(("POST", ROUTE)) is None


def test_memory_per_route_and_slot_stays_bounded_whatever_the_traffic() -> None:
    clock = FakeClock()
    store = store_with_objectives(clock)
    for n in range(2_000):
        store.record(make_record(ROUTE, status=100 + n % 600, duration_ms=float(n % 97), path=f"/pay/{n}"))
    slot = store.window_state().current
    assert slot is not None
    assert len(slot.slowest[("GET", ROUTE)]) == SLOWEST_PER_SLOT
    assert len(slot.routes[("GET", ROUTE)].statuses) == STATUS_CODES_PER_ROUTE + 1  # + the "other" count
    assert sum(slot.routes[("GET", ROUTE)].statuses.values()) == 2_000
    detail = store.route_detail(("GET", ROUTE))
    assert detail is not None
    assert detail["status_codes"][-1]["status_code"] is None  # the rest, counted together


def test_bucket_bounds_hold_the_durations_of_their_key() -> None:
    for duration in (0.001, 0.37, 1.0, 99.5, 12_345.6):
        key = latency_key(duration)
        low, high = bucket_bounds(key)
        assert low < duration <= high * (1 + 1e-12)
        # The bounds are the edges (up to floating-point rounding at the edge itself).
        assert latency_key(high * (1 - 1e-9)) == key
        assert latency_key(low * (1 + 1e-9)) == key


# -- through the app's routes -------------------------------------------------------------------------


def objectives_app() -> tuple[Flask, FakeClock]:
    app = Flask("pay")

    @app.get("/pay/<int:order>")
    def pay(order: int) -> Any:
        return ({"error": "declined"}, 500) if order >= 1000 else {"order": order}

    clock = FakeClock(START)
    FlaskMonitor(setup_telemetry=False, objectives=OBJECTIVES).init_app(app, clock=clock)
    return app, clock


def test_stats_and_health_show_the_burn_of_a_route() -> None:
    app, clock = objectives_app()
    client = app.test_client()
    for order in range(90):
        assert client.get(f"/pay/{order}").status_code == 200
    clock.advance(600)
    for order in range(1000, 1010):
        assert client.get(f"/pay/{order}").status_code == 500

    availability = objective_rows(client.get("/monitoring/stats").get_json())["availability"]
    # 10 of 100 failed: (0.1 / 0.005) = 20x; the last 5 minutes all failed: 200x.
    assert (availability["requests"], availability["good"], availability["attained_ratio"]) == (100, 90, 0.9)
    assert availability["burn_rate"] == pytest.approx(20.0)
    assert availability["error_budget_left"] == pytest.approx(-19.0)
    assert availability["last_5m"] == {"requests": 10, "good": 0, "burn_rate": pytest.approx(200.0)}
    assert availability["burning"] is True
    health = client.get("/monitoring/health").get_json()
    assert health["objectives_burning"] == [
        {
            "method": "GET",
            "route": ROUTE,
            "objective": "availability",
            "burn_rate": pytest.approx(20.0),
            "burn_rate_5m": pytest.approx(200.0),
        }
    ]


def test_objectives_declared_by_the_decorator_alone_are_live_too() -> None:
    app = Flask("pay-decorated")

    @app.get("/pay/<int:order>")
    @objective(availability=99.5)
    def pay(order: int) -> Any:
        return ({"error": "declined"}, 500) if order >= 1000 else {"order": order}

    FlaskMonitor(setup_telemetry=False).init_app(app, clock=FakeClock(START))
    client = app.test_client()
    for order in range(1000, 1010):
        assert client.get(f"/pay/{order}").status_code == 500

    availability = objective_rows(client.get("/monitoring/stats").get_json())["availability"]
    assert (availability["requests"], availability["good"], availability["burning"]) == (10, 0, True)
    burning = client.get("/monitoring/health").get_json()["objectives_burning"]
    assert [(entry["route"], entry["objective"]) for entry in burning] == [(ROUTE, "availability")]


def test_without_any_objective_stats_and_health_carry_none() -> None:
    app = Flask("plain")
    app.get("/pay/<int:order>")(lambda order: {"order": order})
    FlaskMonitor(setup_telemetry=False).init_app(app)
    client = app.test_client()
    assert client.get("/pay/1").status_code == 200
    assert "objectives" not in client.get("/monitoring/stats").get_json()
    assert client.get("/monitoring/health").get_json()["objectives_burning"] == []


def test_the_route_detail_answers_400_404_or_the_route() -> None:
    app, _ = objectives_app()
    client = app.test_client()
    assert client.get("/pay/1").status_code == 200
    missing = client.get("/monitoring/stats/route?method=GET")
    assert missing.status_code == 400
    assert "error" in missing.get_json()
    unknown = client.get("/monitoring/stats/route", query_string={"method": "GET", "route": "/nope"})
    assert unknown.status_code == 404
    assert "error" in unknown.get_json()
    found = client.get("/monitoring/stats/route", query_string={"method": "GET", "route": ROUTE})
    assert found.status_code == 200
    assert found.get_json()["summary"]["requests"] == 1
    assert found.headers["Cache-Control"] == "no-store"


def test_the_route_detail_is_behind_the_same_access_check_as_stats() -> None:
    app = Flask("guarded")
    FlaskMonitor(app, setup_telemetry=False, access_token="s3cret-token-for-tests")

    @app.get("/x")
    def x() -> Any:
        return {}

    client = app.test_client()
    client.get("/x")
    query = {"method": "GET", "route": "/x"}
    remote = {"REMOTE_ADDR": "10.1.2.3"}
    denied = client.get("/monitoring/stats/route", query_string=query, environ_base=remote)
    assert denied.status_code == 401
    assert "summary" not in denied.get_json()
    authorized = {"Authorization": "Bearer s3cret-token-for-tests"}
    answer = client.get(
        "/monitoring/stats/route", query_string=query, headers=authorized, environ_base=remote
    )
    assert answer.status_code == 200


# -- across workers: the files give what one store holding every request gives ------------------------


@pytest.fixture
def other_worker() -> Iterator[Identity]:
    with worker_standing_in(SERVER) as identity:
        yield identity


def test_merged_from_the_files_the_drill_down_and_objectives_equal_one_store_of_every_request(
    tmp_path: Path, other_worker: Identity
) -> None:
    clock = FakeClock(START)
    policy = parse_objectives(
        "objectives", {"default": {"latency": {"threshold_ms": 2, "target": 99}, "availability": 99}}
    )

    def new_store() -> AggregateStore:
        counter = ObjectiveCounter(policy, max_routes=50)
        return AggregateStore(
            window_seconds=60,
            slot_seconds=10,
            max_routes=50,
            recent_errors=3,
            clock=clock,
            objectives=counter,
        )

    mine, theirs, everything = new_store(), new_store(), new_store()
    own_pid = psutil.Process().pid
    own_start = process_start_ms(own_pid)
    assert own_start is not None
    writer = MultiprocessAggregates(theirs, str(tmp_path), identity=other_worker)
    reader = MultiprocessAggregates(mine, str(tmp_path), identity=Identity(own_pid, own_start, SERVER))
    for number in range(420):  # 155 s: slots close, and leave the 60 s window
        clock.advance(0.37)
        request = fixed_record(number)
        everything.record(request)
        (theirs if number % 3 else mine).record(request)
        if number % 7 == 0:
            writer.write()
            reader.snapshot()  # the reader follows the window as it moves
    writer.write()

    merged, single = reader.snapshot(), everything.snapshot()
    assert merged["objectives"] == single["objectives"]
    assert {row["objective"] for row in merged["objectives"]} == {"latency", "availability"}
    for row in single["routes"]:
        key = (row["method"], row["route"])
        detail, expected = reader.route_detail(key), everything.route_detail(key)
        assert detail is not None
        assert expected is not None
        assert (detail.pop("per_process"), detail.pop("served_by")) == (False, own_pid)
        expected.pop("per_process")
        assert detail == expected, key
        assert detail["slowest"]
