"""A monitored app is freed when its last reference goes, with the cycle collector off (Flask's own
``test_app_freed_on_zero_refcount``): no reference cycle through the app, nothing module-level
holding it, whatever the monitor was configured to do and whatever the app served."""

from __future__ import annotations

import gc
import logging
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from flask import Blueprint, Flask
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from werkzeug.middleware.proxy_fix import ProxyFix

from otel_flask_monitor import FlaskMonitor
from otel_flask_monitor.extension import get_state
from tests.support.apps import build_app


@contextmanager
def cycle_collector_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def serve_successful_requests(app: Flask) -> None:
    client = app.test_client()
    client.get("/items/3")
    client.post("/items", json={"name": "tea"})
    client.get("/stream").close()
    if "otel_flask_monitor" in app.blueprints:
        client.get("/monitoring/health")


def serve_failing_requests(app: Flask) -> None:
    client = app.test_client()
    # Flask logs an unhandled exception with its traceback, whose frames hold the app: a log handler
    # that keeps records (pytest's capture) would keep the app alive for reasons not the monitor's.
    logging.disable(logging.ERROR)
    try:
        for path in ("/boom", "/abort-500", "/items/404", "/no/such/route"):
            client.get(path)
        client.post("/items", data="{not json", content_type="application/json")
    finally:
        logging.disable(logging.NOTSET)


def _freed_on_del(make: Callable[[], Flask], serve: Callable[[Flask], None] | None = None) -> bool:
    with cycle_collector_off():
        app = make()
        if serve is not None:
            serve(app)
        weak = weakref.ref(app)
        del app
        return weak() is None


CONFIGURATIONS: dict[str, dict[str, Any]] = {
    "defaults (instrumented by the monitor, dashboard, JSON 500)": {},
    "not instrumented": {"instrument_flask": False},
    "no dashboard, no JSON 500": {"dashboard_enabled": False, "json_errors": False},
    "no span enrichment, no logs": {"enrich_spans": False, "emit_logs": False},
}


@pytest.mark.parametrize("serve", [None, serve_successful_requests], ids=["unused", "after requests"])
@pytest.mark.parametrize("options", CONFIGURATIONS.values(), ids=CONFIGURATIONS.keys())
def test_a_monitored_app_is_freed_on_zero_refcount(
    options: dict[str, Any], serve: Callable[[Flask], None] | None
) -> None:
    assert _freed_on_del(lambda: build_app(**options), serve)


def test_an_app_that_answered_errors_leaves_nothing_behind() -> None:
    """Flask itself makes a cycle when a request fails (the exception's traceback holds frames that
    hold the app), so such an app waits for the cycle collector, monitored or not; but nothing of the
    monitor (a stored exception, a record, a span) may keep it alive beyond that."""
    app = build_app()
    serve_failing_requests(app)
    weak = weakref.ref(app)
    del app
    gc.collect()
    assert weak() is None


def test_an_app_sharing_aggregates_across_workers_is_freed_and_stops_sharing(tmp_path: Path) -> None:
    writers: list[threading.Thread] = []

    def make() -> Flask:
        before = set(_writer_threads())
        app = build_app(multiprocess_dir=str(tmp_path))
        writers.extend(t for t in _writer_threads() if t not in before)
        return app

    def serve_and_share(app: Flask) -> None:
        serve_successful_requests(app)
        exchange = get_state(app).exchange
        assert exchange is not None
        exchange.write()
        assert _files(tmp_path)

    assert _freed_on_del(make, serve_and_share)
    # Its writer thread stops and its files go with it (its counts leave the server's totals).
    assert len(writers) == 1
    writers[0].join(timeout=5)
    assert not writers[0].is_alive()
    assert _files(tmp_path) == []


def _writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "otel-flask-monitor-multiprocess"]


def _files(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.is_file()]


def test_an_app_with_blueprints_and_hooks_of_its_own_is_freed() -> None:
    def make() -> Flask:
        app = Flask("lifetime")
        shop = Blueprint("shop", __name__)

        @shop.get("/shop")
        def index() -> str:
            return "shop"

        @shop.errorhandler(Exception)
        def shop_error(error: Exception) -> tuple[str, int]:
            return "sorry", 500

        FlaskMonitor(app)
        app.register_blueprint(shop)
        app.test_client().get("/shop")
        return app

    assert _freed_on_del(make)


def test_middleware_the_app_installed_first_stays_in_the_chain() -> None:
    """The monitor only stands in for Flask's own ``wsgi_app``; a wrapper the app put there is kept
    (and its reference to the app is the app's business)."""
    app = build_app(monitor=False)
    app.wsgi_app = ProxyFix(app.wsgi_app)  # type: ignore[method-assign]
    FlaskMonitor(app)

    @app.get("/client")
    def client_address() -> str:
        from flask import request

        return str(request.remote_addr)

    response = app.test_client().get("/client", headers={"X-Forwarded-For": "203.0.113.9"})
    assert response.data == b"203.0.113.9"


def test_uninstrumenting_an_app_the_monitor_instrumented_leaves_it_serving() -> None:
    app = build_app()
    FlaskInstrumentor.uninstrument_app(app)  # type: ignore[no-untyped-call]

    assert app.test_client().get("/items/3").get_json() == {"id": 3}
    assert get_state(app).aggregates.snapshot()["totals"]["requests"] == 1
