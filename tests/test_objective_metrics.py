"""The objective counter: every request counted exactly against its route's objectives, exported as
the counter the generated Prometheus rules read."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest
from flask import Blueprint, Flask, abort
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, Sum

from otel_flask_monitor import FlaskMonitor
from otel_flask_monitor.alert_rules import PROMETHEUS_METRIC
from otel_flask_monitor.objective_declarations import objective, parse_objectives
from otel_flask_monitor.objective_metrics import (
    METRIC_NAME,
    METRIC_UNIT,
    ObjectiveCounter,
    register_instrument,
)
from otel_flask_monitor.objectives import AppRoute, Latency
from tests.support.prometheus_names import prometheus_metric_name
from tests.test_aggregates import make_record

# Thresholds no request can miss or meet, whatever the machine's load: the outcome is deterministic.
NEVER_MISSED_MS = 3_600_000
ALWAYS_MISSED_MS = 1e-6

Points = dict[tuple[str, str, str, str], int]


def points(reader: InMemoryMetricReader, route_prefix: str) -> Points:
    """(method, route, objective, outcome) -> value of the counter's points under ``route_prefix``."""
    data = reader.get_metrics_data()
    found: Points = {}
    for resource_metrics in data.resource_metrics if data else ():
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if metric.name != METRIC_NAME:
                    continue
                for point in metric.data.data_points:
                    attributes: Any = point.attributes
                    if str(attributes["http.route"]).startswith(route_prefix):
                        key = (
                            attributes["http.request.method"],
                            attributes["http.route"],
                            attributes["objective"],
                            attributes["outcome"],
                        )
                        found[key] = int(point.value)
    return found


def create_app(**options: Any) -> Flask:
    """An app factory: the monitor first, routes and a blueprint after it, as factories often do."""
    app = Flask("objective-metrics")
    FlaskMonitor(app, **options)

    @app.get("/om/fast")
    def fast() -> Any:
        return {"ok": True}

    @app.get("/om/slow")
    def slow() -> Any:
        return {"ok": True}

    @app.get("/om/fail/<int:code>")
    def fail(code: int) -> Any:
        if code == 0:
            raise RuntimeError("boom")
        abort(code)

    @app.get("/om/never-called")
    def never_called() -> Any:
        return {}

    shop = Blueprint("om_shop", __name__)

    @shop.get("/orders")
    @objective(latency=Latency(threshold_ms=ALWAYS_MISSED_MS, target=99))
    def orders() -> Any:
        return []

    app.register_blueprint(shop, url_prefix="/om/bp")
    return app


OBJECTIVES = {
    "default": {"availability": 99.5},
    "GET /om/fast": {"latency": {"threshold_ms": NEVER_MISSED_MS, "target": 99}},
    "GET /om/slow": {"latency": {"threshold_ms": ALWAYS_MISSED_MS, "target": 99}},
    "/om/bp/**": {"availability": None},
}


@pytest.fixture
def app() -> Flask:
    return create_app(objectives=OBJECTIVES)


def test_requests_are_counted_against_their_routes_objectives(
    app: Flask, metric_reader: InMemoryMetricReader, caplog: pytest.LogCaptureFixture
) -> None:
    client = app.test_client()
    with caplog.at_level(logging.WARNING, logger="otel_flask_monitor"):
        for _ in range(3):
            assert client.get("/om/fast").status_code == 200
        assert client.get("/om/slow").status_code == 200
        assert client.get("/om/fail/404").status_code == 404
        assert client.get("/om/fail/503").status_code == 503
        assert client.get("/om/fail/0").status_code == 500
        assert client.get("/om/bp/orders").status_code == 200
        assert client.get("/om/no-such-route").status_code == 404
        assert client.get("/monitoring/health").status_code in (200, 401, 403)
    found = points(metric_reader, "/om/")
    assert {key: value for key, value in found.items() if key[0] == "GET"} == {
        ("GET", "/om/fast", "latency", "good"): 3,
        ("GET", "/om/fast", "latency", "bad"): 0,
        ("GET", "/om/fast", "availability", "good"): 3,
        ("GET", "/om/fast", "availability", "bad"): 0,
        ("GET", "/om/slow", "latency", "good"): 0,
        ("GET", "/om/slow", "latency", "bad"): 1,
        ("GET", "/om/slow", "availability", "good"): 1,
        ("GET", "/om/slow", "availability", "bad"): 0,
        # 4xx answers are the client's: available. 5xx and unhandled exceptions are not.
        ("GET", "/om/fail/<int:code>", "availability", "good"): 1,
        ("GET", "/om/fail/<int:code>", "availability", "bad"): 2,
        # Reported from the first request on, at zero: Prometheus sees each series start from 0.
        ("GET", "/om/never-called", "availability", "good"): 0,
        ("GET", "/om/never-called", "availability", "bad"): 0,
        # The decorator on a blueprint view registered after init_app; the glob switched its
        # availability off.
        ("GET", "/om/bp/orders", "latency", "good"): 0,
        ("GET", "/om/bp/orders", "latency", "bad"): 1,
    }
    # The methods Flask adds to every rule (HEAD, OPTIONS) have the same objectives, not called here.
    others = {key: value for key, value in found.items() if key[0] != "GET"}
    assert set(others.values()) == {0}
    assert {(method, route, kind) for method, route, kind, _ in others} == {
        (method, route, kind)
        for method in ("HEAD", "OPTIONS")
        for route, kind in [
            ("/om/fast", "availability"),
            ("/om/slow", "availability"),
            ("/om/fail/<int:code>", "availability"),
            ("/om/never-called", "availability"),
            ("/om/bp/orders", "latency"),
        ]
    }
    assert points(metric_reader, "/monitoring") == {}, "the monitor's own routes are never counted"
    assert not [r for r in caplog.records if "matches no route" in r.getMessage()]


def test_a_pattern_matching_no_route_warns_at_the_first_request(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="otel_flask_monitor"):
        app = create_app(objectives={**OBJECTIVES, "/om/fsat": {"availability": 99}})
        assert not [r for r in caplog.records if "matches no route" in r.getMessage()], "routes come later"
        client = app.test_client()
        client.get("/om/fast")
        client.get("/om/fast")
    warnings = [r.getMessage() for r in caplog.records if "matches no route" in r.getMessage()]
    assert len(warnings) == 1
    assert "'/om/fsat'" in warnings[0]
    assert "/om/fast" in warnings[0], "the warning lists the app's routes"


RECORD_ROUTES = [AppRoute(f"/r{number}", frozenset({"GET"}), f"r{number}") for number in range(5)]


def counted(counter: ObjectiveCounter) -> dict[tuple[str, str, str], int]:
    return {
        (str(o.attributes["http.route"]), str(o.attributes["objective"]), str(o.attributes["outcome"])): int(
            o.value
        )  # type: ignore[index]
        for o in counter.observations()
    }


def test_concurrent_requests_are_all_counted() -> None:
    policy = parse_objectives("objectives", {"default": {"availability": 99}})
    counter = ObjectiveCounter(policy, max_routes=10, routes=lambda: RECORD_ROUTES)
    threads, per_thread = 8, 500

    def worker(index: int) -> None:
        for number in range(per_thread):
            counter.record(make_record("/r0", status=500 if (index + number) % 10 == 0 else 200))

    pool = [threading.Thread(target=worker, args=(index,)) for index in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=60)
    found = counted(counter)
    assert (
        found[("/r0", "availability", "good")] + found[("/r0", "availability", "bad")] == threads * per_thread
    )
    assert found[("/r0", "availability", "bad")] == threads * per_thread // 10


def test_pairs_beyond_max_routes_are_not_tracked(caplog: pytest.LogCaptureFixture) -> None:
    policy = parse_objectives("objectives", {"default": {"availability": 99}})
    counter = ObjectiveCounter(policy, max_routes=2, routes=lambda: RECORD_ROUTES)
    with caplog.at_level(logging.WARNING, logger="otel_flask_monitor"):
        for route in RECORD_ROUTES:
            counter.record(make_record(route.rule))
    assert {route for route, _, _ in counted(counter)} == {"/r0", "/r1"}
    assert len([r for r in caplog.records if "max_routes=2" in r.getMessage()]) == 1


def test_without_the_route_list_routes_resolve_on_first_request() -> None:
    policy = parse_objectives("objectives", {"/r1": {"latency": {"threshold_ms": 50, "target": 99}}})
    counter = ObjectiveCounter(policy, max_routes=10)
    counter.record(make_record("/r1", duration_ms=50.0))  # the threshold is inclusive
    counter.record(make_record("/r1", duration_ms=50.5))
    counter.record(make_record("/r2"))
    counter.record(make_record(None))
    assert counted(counter) == {("/r1", "latency", "good"): 1, ("/r1", "latency", "bad"): 1}


def test_a_forked_worker_starts_counting_from_zero() -> None:
    policy = parse_objectives("objectives", {"default": {"availability": 99}})
    counter = ObjectiveCounter(policy, max_routes=10, routes=lambda: RECORD_ROUTES)
    counter.record(make_record("/r0"))
    counter.after_fork_in_child()
    counter.record(make_record("/r0", status=502))
    assert counted(counter)[("/r0", "availability", "good")] == 0
    assert counted(counter)[("/r0", "availability", "bad")] == 1


def test_prometheus_stores_the_counter_under_the_name_the_rules_read() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    policy = parse_objectives("objectives", {"default": {"availability": 99}})
    counter = ObjectiveCounter(policy, max_routes=10, routes=lambda: RECORD_ROUTES)
    counter.record(make_record("/r0"))
    try:
        register_instrument(provider.get_meter("objectives-test"), lambda: [counter])
        data = reader.get_metrics_data()
    finally:
        provider.shutdown()
    assert data is not None
    (metric,) = [m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics]
    assert isinstance(metric.data, Sum)
    assert metric.data.is_monotonic, "a monotonic sum: Prometheus stores a counter"
    assert (metric.name, metric.unit) == (METRIC_NAME, METRIC_UNIT)
    assert prometheus_metric_name(metric.name, metric.unit or "", "counter") == PROMETHEUS_METRIC
