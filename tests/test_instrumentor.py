"""FlaskMonitorInstrumentor in-process: attach once, lazily, never at the app's expense.

The end-to-end runs under ``opentelemetry-instrument`` are in tests/test_zero_code.py.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from importlib.metadata import entry_points

import flask
import flask.app
import pytest

from otel_flask_monitor import FlaskMonitor
from otel_flask_monitor.extension import EXTENSION_KEY
from otel_flask_monitor.instrumentor import FlaskMonitorInstrumentor
from tests.conftest import Exported

ORIGINAL_CALL = flask.app.Flask.__call__


@pytest.fixture
def instrumentor() -> Iterator[FlaskMonitorInstrumentor]:
    instance = FlaskMonitorInstrumentor()
    instance.instrument()
    try:
        yield instance
    finally:
        if instance.is_instrumented_by_opentelemetry:
            instance.uninstrument()
        assert flask.app.Flask.__call__ is ORIGINAL_CALL


def _app(name: str = "zero-code-unit") -> flask.Flask:
    app = flask.Flask(name)

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    return app


def _monitor_hook_count(app: flask.Flask) -> int:
    return sum(
        1
        for hook in app.before_request_funcs.get(None, [])
        if type(getattr(hook, "__self__", None)).__name__ == "RequestLifecycle"
    )


@pytest.mark.usefixtures("instrumentor")
def test_attaches_on_first_request_not_before(exported: Exported) -> None:
    app = _app()
    assert EXTENSION_KEY not in app.extensions  # set-up is still the app's own

    for item_id in range(3):
        assert app.test_client().get(f"/items/{item_id}").status_code == 200

    assert EXTENSION_KEY in app.extensions
    assert _monitor_hook_count(app) == 1
    assert len(exported.request_logs()) == 3
    assert all(record.log_record.trace_id for record in exported.request_logs())


@pytest.mark.usefixtures("instrumentor")
def test_app_monitored_by_its_own_code_is_left_alone(exported: Exported) -> None:
    app = _app()
    FlaskMonitor(app, service_name="explicit")

    assert app.test_client().get("/items/1").status_code == 200

    assert _monitor_hook_count(app) == 1
    assert len(exported.request_logs()) == 1


@pytest.mark.usefixtures("instrumentor")
def test_concurrent_first_requests_attach_once(exported: Exported) -> None:
    app = _app()
    start = threading.Barrier(8)
    statuses: list[int] = []

    def first_request() -> None:
        start.wait()
        statuses.append(app.test_client().get("/items/1").status_code)

    threads = [threading.Thread(target=first_request) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert statuses == [200] * 8
    assert _monitor_hook_count(app) == 1
    assert len(exported.request_logs()) == 8


@pytest.mark.usefixtures("instrumentor")
def test_failed_attach_is_reported_once_and_the_app_keeps_serving(
    exported: Exported, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_FLASK_MONITOR_MAX_ROUTES", "many")
    app = _app()

    with caplog.at_level(logging.WARNING, logger="otel_flask_monitor"):
        statuses = [app.test_client().get("/items/1").status_code for _ in range(3)]

    assert statuses == [200, 200, 200]
    assert EXTENSION_KEY not in app.extensions
    assert exported.request_logs() == []
    warnings = [r for r in caplog.records if "could not attach" in r.getMessage()]
    assert len(warnings) == 1
    assert "OTEL_FLASK_MONITOR_MAX_ROUTES" in str(warnings[0].exc_info[1] if warnings[0].exc_info else "")


def test_app_that_already_served_is_not_touched(caplog: pytest.LogCaptureFixture) -> None:
    app = _app()
    assert app.test_client().get("/items/1").status_code == 200
    instance = FlaskMonitorInstrumentor()
    instance.instrument()
    try:
        with caplog.at_level(logging.WARNING, logger="otel_flask_monitor"):
            assert app.test_client().get("/items/2").status_code == 200
            assert app.test_client().get("/items/3").status_code == 200
    finally:
        instance.uninstrument()

    assert EXTENSION_KEY not in app.extensions
    ours = [r.getMessage() for r in caplog.records if r.name == "otel_flask_monitor"]
    assert len(ours) == 1
    assert "already handled requests" in ours[0]


def test_uninstrument_restores_flask_and_stops_attaching(exported: Exported) -> None:
    instance = FlaskMonitorInstrumentor()
    instance.instrument()
    monitored = _app("monitored")
    assert monitored.test_client().get("/items/1").status_code == 200
    instance.uninstrument()

    assert flask.app.Flask.__call__ is ORIGINAL_CALL
    unmonitored = _app("unmonitored")
    assert unmonitored.test_client().get("/items/1").status_code == 200
    assert monitored.test_client().get("/items/2").status_code == 200

    assert EXTENSION_KEY not in unmonitored.extensions
    assert len(exported.request_logs()) == 2  # the app monitored before stays monitored


def test_declares_the_flask_versions_it_supports() -> None:
    assert FlaskMonitorInstrumentor().instrumentation_dependencies() == ("flask >= 3.0",)


def test_registered_for_opentelemetry_instrument_as_flask_monitor() -> None:
    group = entry_points(group="opentelemetry_instrumentor")
    (entry_point,) = [ep for ep in group if ep.name == "flask_monitor"]
    assert entry_point.load() is FlaskMonitorInstrumentor
