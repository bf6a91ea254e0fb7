"""The monitor's own routes are recognised by their path alone: a query string or a Host header
cannot switch tracing off for an app request (#16 hole 3), and a Host outside ``TRUSTED_HOSTS``
stays Flask's 400 instead of an exception escaping the WSGI app (#18 item 1)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask, request
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from werkzeug.exceptions import SecurityError
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.test import Client

from otel_flask_monitor import get_state
from tests.conftest import Exported
from tests.support.apps import build_app

HEX32 = re.compile(r"^[0-9a-f]{32}$")


def trace_id_of_log(exported: Exported) -> str:
    (record,) = exported.request_logs()
    return format(record.log_record.trace_id or 0, "032x")


@pytest.mark.parametrize(
    "target",
    [
        "/items/1?x=://a/monitoring/",  # the issue's request
        "/items/1?x=://a/monitoring",
        "/items/1?next=http://localhost/monitoring/stats",
    ],
)
def test_a_query_string_cannot_switch_tracing_off(exported: Exported, target: str) -> None:
    response = build_app().test_client().get(target)

    assert response.status_code == 200
    (span,) = exported.server_spans()
    assert HEX32.match(response.headers["X-Trace-Id"])
    assert format(span.context.trace_id, "032x") == response.headers["X-Trace-Id"]
    assert trace_id_of_log(exported) == response.headers["X-Trace-Id"]  # not 0: emitted inside the span


def test_the_issues_request_on_the_root_route_is_traced(exported: Exported) -> None:
    app = build_app()

    @app.get("/")
    def root() -> Any:
        return "home"

    response = app.test_client().get("/?x=://a/monitoring/")
    assert HEX32.match(response.headers["X-Trace-Id"])
    assert trace_id_of_log(exported) == response.headers["X-Trace-Id"] != "0" * 32
    assert len(exported.server_spans()) == 1


@pytest.mark.parametrize(
    "path_info", ["/monitoring/stats", "//monitoring/stats", "/monitoring", "/monitoring/"]
)
def test_own_routes_get_no_span_no_record_and_no_instrumentation_warning(
    exported: Exported, caplog: pytest.LogCaptureFixture, path_info: str
) -> None:
    app = build_app()
    with caplog.at_level("WARNING"):
        response = app.test_client().get("/", environ_overrides={"PATH_INFO": path_info})
    assert response.status_code in (200, 302, 308)
    assert exported.server_spans() == []
    assert exported.request_logs() == []
    assert "X-Trace-Id" not in response.headers
    assert caplog.records == []  # e.g. the instrumentation's "span missing at _start_response"


def test_own_routes_are_matched_below_the_mount_point(exported: Exported) -> None:
    """``PATH_INFO`` is the path below ``SCRIPT_NAME``: the app mounted under /api keeps /api/monitoring
    out of its traces, and an app mounted at /monitoring has its own requests traced."""
    under_api = build_app("under-api")
    at_monitoring = build_app("at-monitoring")
    site = Client(DispatcherMiddleware(build_app("root"), {"/api": under_api, "/monitoring": at_monitoring}))

    local = {"REMOTE_ADDR": "127.0.0.1"}
    assert site.get("/api/monitoring/stats", environ_base=local).status_code == 200
    assert exported.server_spans() == []
    assert (
        site.get("/monitoring/items/1", environ_base=local).status_code == 200
    )  # at_monitoring's own /items/1
    assert len(exported.server_spans()) == 1
    assert len(exported.request_logs()) == 1
    assert get_state(at_monitoring).stats_document()["totals"]["requests"] == 1


def test_app_routes_under_the_prefix_are_traced_when_the_dashboard_is_off(exported: Exported) -> None:
    app = build_app(dashboard_enabled=False)

    @app.get("/monitoring/orders")
    def orders() -> Any:
        return {"orders": 3}

    assert app.test_client().get("/monitoring/orders").status_code == 200
    assert len(exported.server_spans()) == 1


def test_the_users_excluded_urls_still_match_the_full_url(
    monkeypatch: pytest.MonkeyPatch, exported: Exported
) -> None:
    monkeypatch.setenv("OTEL_PYTHON_FLASK_EXCLUDED_URLS", r"items/2\?quiet")  # the stock semantics
    client = build_app().test_client()
    client.get("/items/2?quiet=1")
    assert exported.server_spans() == []
    assert exported.request_logs() == []
    client.get("/items/2")
    assert len(exported.server_spans()) == 1


def test_uninstrumenting_the_app_still_works() -> None:
    app = build_app()
    FlaskInstrumentor().uninstrument_app(app)  # type: ignore[no-untyped-call]
    assert not getattr(app, "_is_instrumented_by_opentelemetry", True)
    assert app.test_client().get("/items/1").status_code == 200
    assert app.test_client().get("/monitoring/stats").status_code == 200


# --- TRUSTED_HOSTS ----------------------------------------------------------------------------------------


def trusting(app: Flask) -> Flask:
    app.config["TRUSTED_HOSTS"] = ["shop.example", ".shop.example"]
    return app


@pytest.mark.parametrize(
    "options",
    [{}, {"json_errors": False}, {"dashboard_enabled": False}],
    ids=["default", "no-json-errors", "no-dashboard"],
)
def test_an_untrusted_host_gets_flasks_400_not_an_exception(
    exported: Exported, options: dict[str, Any]
) -> None:
    bare = trusting(build_app("bare", monitor=False)).test_client()
    monitored_app = trusting(build_app("monitored", **options))
    monitored = monitored_app.test_client()

    for path in ("/items/1", "/boom", "/no/such/route", "/monitoring/stats", "/items/1?x=://a/monitoring/"):
        expected = bare.get(path, headers={"Host": "evil.example"})
        response = monitored.get(path, headers={"Host": "evil.example"})  # must not raise
        assert expected.status_code == 400
        assert (response.status_code, response.data) == (expected.status_code, expected.data), path
    assert monitored.get("/items/1", headers={"Host": "api.shop.example"}).status_code == 200
    assert get_state(monitored_app).failures.counts() == {}
    # The scanner's requests are traced and logged like any 400, without its Host in a URL.
    statuses = [
        dict(r.log_record.attributes or {})["http.response.status_code"] for r in exported.request_logs()
    ]
    # Every one but the monitoring route (when mounted).
    assert statuses.count(400) == (5 if options.get("dashboard_enabled") is False else 4)
    for span in exported.server_spans():
        for value in (span.attributes or {}).values():
            assert "evil.example/" not in str(value)


def test_the_app_still_cannot_read_the_rejected_host(exported: Exported) -> None:
    app = trusting(build_app())
    seen: dict[str, str] = {}

    @app.errorhandler(400)
    def bad_request(error: Exception) -> Any:
        try:
            seen["host"] = request.host
        except SecurityError:
            seen["host"] = "refused"
        seen["url"] = request.url
        return "bad host", 400

    response = app.test_client().get("/items/1?page=2", headers={"Host": "evil.example"})
    assert response.status_code == 400
    assert seen["host"] == "refused"
    assert "evil.example" not in seen["url"]
    assert seen["url"].endswith("/items/1?page=2")


def test_an_untrusted_host_is_harmless_when_the_user_applied_the_instrumentation(exported: Exported) -> None:
    app = trusting(build_app(monitor=False))
    FlaskInstrumentor().instrument_app(app)  # type: ignore[no-untyped-call]
    from otel_flask_monitor import FlaskMonitor

    FlaskMonitor(app)
    assert app.test_client().get("/items/1", headers={"Host": "evil.example"}).status_code == 400
    assert app.test_client().get("/items/1", headers={"Host": "shop.example"}).status_code == 200
    FlaskInstrumentor().uninstrument_app(app)  # type: ignore[no-untyped-call]
