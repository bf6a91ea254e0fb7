"""The monitoring routes: who may open them, what they answer, and that they stay out of the data."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from flask import Flask, Request
from flask.testing import FlaskClient
from jsonschema import validate
from werkzeug.middleware.proxy_fix import ProxyFix

from otel_flask_monitor import FlaskMonitor, get_state

REMOTE = {"REMOTE_ADDR": "10.1.2.3"}
MONITOR_ROUTES = ("/monitoring/dashboard", "/monitoring/health", "/monitoring/stats")
TOKEN = "s3cret-token-for-tests"

NUMBER = {"type": "number"}
NULLABLE_NUMBER = {"type": ["number", "null"]}
LATENCY = {
    "type": "object",
    "required": ["p50", "p95", "p99"],
    "properties": {"p50": NULLABLE_NUMBER, "p95": NULLABLE_NUMBER, "p99": NULLABLE_NUMBER},
}
COUNTS = {
    "requests": {"type": "integer"},
    "client_errors": {"type": "integer"},
    "server_errors": {"type": "integer"},
    "error_rate": NUMBER,
    "server_error_rate": NUMBER,
    "requests_per_second": NUMBER,
    "latency_ms": LATENCY,
    "request_bytes": {"type": "integer"},
    "response_bytes": {"type": "integer"},
}
RECENT_ERROR = {
    "type": "object",
    "required": [
        "time_unix",
        "method",
        "route",
        "path",
        "status_code",
        "exception_type",
        "trace_id",
        "user_agent",
    ],
    "properties": {
        "time_unix": NUMBER,
        "method": {"type": "string"},
        "route": {"type": "string"},
        "path": {"type": "string"},
        "status_code": {"type": "integer"},
        "exception_type": {"type": ["string", "null"]},
        "trace_id": {"type": ["string", "null"], "pattern": "^[0-9a-f]{32}$"},
        "user_agent": {"type": ["string", "null"]},
    },
}
STATS_SCHEMA = {
    "type": "object",
    "required": [
        "generated_at_unix",
        "window_seconds",
        "slot_seconds",
        "window_start_unix",
        "covered_seconds",
        "max_routes",
        "tracked_routes",
        "totals",
        "routes",
        "timeline",
        "recent_errors",
        "recent_client_errors",
    ],
    "properties": {
        "totals": {"type": "object", "required": list(COUNTS), "properties": COUNTS},
        "routes": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["method", "route", *COUNTS],
                "properties": {"method": {"type": "string"}, "route": {"type": "string"}, **COUNTS},
            },
        },
        "timeline": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["start_unix", "requests", "client_errors", "server_errors", "latency_ms"],
            },
        },
        "recent_errors": {"type": "array", "items": RECENT_ERROR},
        "recent_client_errors": {"type": "array", "items": RECENT_ERROR},
    },
}
HEALTH_SCHEMA = {
    "type": "object",
    "required": ["status", "reasons", "uptime_seconds", "system_metrics", "telemetry", "internal_failures"],
    "properties": {
        "status": {"enum": ["ok", "degraded"]},
        "uptime_seconds": NUMBER,
        "system_metrics": {
            "type": "object",
            "required": ["pid", "cpu_percent", "memory_rss_mb", "memory_percent", "threads"],
            "properties": {
                "cpu_percent": NUMBER,
                "memory_rss_mb": NUMBER,
                "memory_percent": NUMBER,
                "threads": {"type": "integer"},
            },
        },
        "telemetry": {"type": "object", "required": ["managed_by_monitor", "healthy", "signals"]},
        "internal_failures": {"type": "object", "additionalProperties": {"type": "integer"}},
    },
}


def shop_app(**options: Any) -> Flask:
    app = Flask("dashboard-tests")

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> Any:
        return {"id": item_id}

    @app.get("/boom")
    def boom() -> Any:
        raise RuntimeError("boom")

    FlaskMonitor(app, **options)
    return app


@pytest.fixture
def client() -> FlaskClient:
    return shop_app().test_client()


@pytest.mark.parametrize("route", MONITOR_ROUTES)
def test_loopback_clients_may_open_the_routes(client: FlaskClient, route: str) -> None:
    assert client.get(route).status_code == 200
    assert client.get(route, environ_base={"REMOTE_ADDR": "::1"}).status_code == 200


@pytest.mark.parametrize("route", [*MONITOR_ROUTES, "/monitoring/static/dashboard.js", "/monitoring/"])
def test_remote_clients_get_403_and_no_data(client: FlaskClient, route: str) -> None:
    client.get("/items/1")
    response = client.get(route, environ_base=REMOTE)
    assert response.status_code == 403
    assert response.get_json() == {"error": "forbidden"}
    assert b"items" not in response.data


def test_loopback_peer_with_forwarded_remote_client_is_remote(client: FlaskClient) -> None:
    """A same-host reverse proxy makes everyone look local; its forwarding headers give it away."""
    for header, value in (
        ("X-Forwarded-For", "203.0.113.7"),
        ("X-Forwarded-For", "127.0.0.1, 203.0.113.7"),  # a spoofed first hop does not help
        ("X-Real-IP", "203.0.113.7"),
        ("Forwarded", 'for="203.0.113.7:4711";proto=https'),
    ):
        assert client.get("/monitoring/stats", headers={header: value}).status_code == 403, header
    assert client.get("/monitoring/stats", headers={"X-Forwarded-For": "127.0.0.1"}).status_code == 200


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "localhost:5000",
        "LOCALHOST.",
        "127.0.0.1",
        "127.0.0.1:8080",
        "127.1.2.3",
        "[::1]",
        "[::1]:5000",
        "grafana.localhost:3000",
    ],
)
def test_loopback_clients_asking_for_a_loopback_name_are_local(client: FlaskClient, host: str) -> None:
    assert client.get("/monitoring/stats", headers={"Host": host}).status_code == 200


@pytest.mark.parametrize(
    "host",
    [
        "rebind.test:5055",
        "rebind.test",
        "evil.example",
        "127.0.0.1.nip.io",
        "localhost.evil.example",
        "10.0.0.5",
        "[2001:db8::1]:80",
        "0.0.0.0:5000",
    ],
)
def test_other_host_names_are_refused_even_from_loopback(client: FlaskClient, host: str) -> None:
    """#16 hole 5: a page whose name resolves to 127.0.0.1 (DNS rebinding) is same-origin with the
    app in the browser; its requests reach a loopback peer but carry the attacker's name."""
    response = client.get("/monitoring/stats", headers={"Host": host})
    assert response.status_code == 403, host
    assert b"routes" not in response.data


def test_more_host_names_can_be_allowed_for_loopback_clients() -> None:
    client = shop_app(loopback_hosts="build-box.internal, Monitor.Lan.").test_client()
    for host in ("build-box.internal:8000", "monitor.lan", "localhost"):
        assert client.get("/monitoring/stats", headers={"Host": host}).status_code == 200, host
    assert client.get("/monitoring/stats", headers={"Host": "evil.example"}).status_code == 403
    # The names only extend the loopback rule: a remote peer is still refused.
    assert (
        client.get("/monitoring/stats", headers={"Host": "monitor.lan"}, environ_base=REMOTE).status_code
        == 403
    )


def test_a_token_or_access_check_opens_the_routes_under_any_host_name() -> None:
    client = shop_app(access_token=TOKEN).test_client()
    headers = {"Host": "monitor.example.com", "Authorization": f"Bearer {TOKEN}"}
    assert client.get("/monitoring/stats", headers=headers).status_code == 200
    checked = shop_app(access_check=lambda request: True).test_client()
    assert checked.get("/monitoring/stats", headers={"Host": "monitor.example.com"}).status_code == 200


@pytest.mark.parametrize("cors_first", [True, False], ids=["cors-before-monitor", "cors-after-monitor"])
@pytest.mark.parametrize("instrument_flask", [True, False])
def test_monitoring_routes_never_carry_cors_headers(cors_first: bool, instrument_flask: bool) -> None:
    """#16 hole 5: with ``flask_cors.CORS(app)`` the monitoring routes answered any origin."""
    from flask_cors import CORS

    app = Flask("cors-shop")

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> Any:
        return {"id": item_id}

    if cors_first:
        CORS(app, supports_credentials=True)
    FlaskMonitor(app, access_token=TOKEN, instrument_flask=instrument_flask)
    if not cors_first:
        CORS(app, supports_credentials=True)
    client = app.test_client()
    origin = {"Origin": "https://evil.example"}
    preflight = {
        **origin,
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization",
    }

    answers = [
        client.get("/monitoring/stats", headers=origin),
        client.get("/monitoring/stats", headers={**origin, "Authorization": f"Bearer {TOKEN}"}),
        client.get("/monitoring/stats", headers=origin, environ_base=REMOTE),
        client.options("/monitoring/stats", headers=preflight),
        client.options("/monitoring/health", headers=preflight, environ_base=REMOTE),
        client.get("/monitoring/no-such-page", headers=origin),
        client.get("/monitoring/login", headers=origin, environ_base=REMOTE),
        client.get("/monitoring/static/dashboard.js", headers=origin),
    ]
    assert {answer.status_code for answer in answers} >= {200, 401, 404}
    for answer in answers:
        answer.close()  # the static file is streamed
        cors = [name for name, _ in answer.headers.items() if name.lower().startswith("access-control-")]
        assert cors == [], (answer.request.path, cors)
    # The app's own routes keep the CORS policy the app chose.
    assert (
        client.get("/items/1", headers=origin).headers["Access-Control-Allow-Origin"]
        == "https://evil.example"
    )


def test_proxyfix_makes_the_real_client_address_decide() -> None:
    app = shop_app()
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1)  # type: ignore[method-assign]
    client = app.test_client()
    remote = {"X-Forwarded-For": "203.0.113.7"}
    assert client.get("/monitoring/stats", headers=remote).status_code == 403
    local = {"X-Forwarded-For": "127.0.0.1"}
    assert client.get("/monitoring/stats", headers=local, environ_base=REMOTE).status_code == 200


def test_bearer_token_opens_the_routes_to_remote_clients() -> None:
    client = shop_app(access_token=TOKEN).test_client()
    for route in MONITOR_ROUTES:
        response = client.get(route, environ_base=REMOTE, headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 200, route

    missing = client.get("/monitoring/stats", environ_base=REMOTE)
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert "routes" not in (missing.get_json() or {})
    for header in (f"Bearer {TOKEN}x", "Bearer ", f"Basic {TOKEN}", TOKEN):
        wrong = client.get("/monitoring/stats", environ_base=REMOTE, headers={"Authorization": header})
        assert wrong.status_code == 401, header
        assert "routes" not in (wrong.get_json() or {})
    # Loopback stays open without the token.
    assert client.get("/monitoring/stats").status_code == 200


def test_access_check_callable_decides_instead_of_loopback() -> None:
    def only_admins(request: Request) -> bool:
        return request.headers.get("X-Role") == "admin"

    client = shop_app(access_check=only_admins).test_client()
    assert (
        client.get("/monitoring/stats", environ_base=REMOTE, headers={"X-Role": "admin"}).status_code == 200
    )
    assert client.get("/monitoring/stats", environ_base=REMOTE).status_code == 403
    assert client.get("/monitoring/stats").status_code == 403  # loopback no longer enough


def test_failing_access_check_denies_and_is_counted() -> None:
    def broken(request: Request) -> bool:
        raise RuntimeError("session store down")

    app = shop_app(access_check=broken)
    response = app.test_client().get("/monitoring/stats")
    assert response.status_code == 403
    assert "routes" not in response.get_json()
    assert get_state(app).failures.counts() == {"access_check": 1}


def test_stats_schema_and_content(client: FlaskClient) -> None:
    for item_id in range(3):
        client.get(f"/items/{item_id}")
    client.get("/boom")
    client.get("/no/such/path")
    stats = client.get("/monitoring/stats").get_json()
    validate(stats, STATS_SCHEMA)
    routes = {(row["method"], row["route"]): row for row in stats["routes"]}
    assert routes["GET", "/items/<int:item_id>"]["requests"] == 3
    assert routes["GET", "/boom"]["server_errors"] == 1
    assert routes["GET", "<unmatched>"]["client_errors"] == 1
    assert stats["recent_errors"][0]["route"] == "/boom"
    assert stats["recent_errors"][0]["exception_type"] == "RuntimeError"
    assert stats["recent_client_errors"][0]["path"] == "/no/such/path"


def test_health_schema(client: FlaskClient) -> None:
    health = client.get("/monitoring/health").get_json()
    validate(health, HEALTH_SCHEMA)
    assert health["status"] == "ok"
    assert health["uptime_seconds"] > 0


def test_monitor_routes_are_not_counted_logged_or_traced(client: FlaskClient, exported: Any) -> None:
    for _ in range(3):
        for route in MONITOR_ROUTES:
            assert client.get(route).status_code == 200
    with client.get("/monitoring/static/dashboard.css") as stylesheet:
        assert stylesheet.status_code == 200
    stats = client.get("/monitoring/stats").get_json()
    assert stats["totals"]["requests"] == 0
    assert stats["routes"] == []
    assert exported.request_logs() == []
    assert exported.server_spans() == []


def test_custom_prefix_and_disabled_dashboard() -> None:
    client = shop_app(url_prefix="/ops/monitor").test_client()
    assert client.get("/ops/monitor/stats").status_code == 200
    assert client.get("/monitoring/stats").status_code == 404
    disabled = shop_app(dashboard_enabled=False).test_client()
    assert disabled.get("/monitoring/stats").status_code == 404


def test_dashboard_page_is_served_with_a_strict_policy(client: FlaskClient) -> None:
    response = client.get("/monitoring/dashboard")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy
    assert "default-src 'none'" in policy
    assert "unsafe-inline" not in policy
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    page = response.get_data(as_text=True)
    assert "<script>" not in page  # no inline script: the policy would block it anyway
    assert 'src="/monitoring/static/dashboard.js"' in page
    assert 'data-stats-url="/monitoring/stats"' in page
    with client.get("/monitoring/static/dashboard.js") as response_js:
        script = response_js.get_data(as_text=True)
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"):
        assert sink not in script, sink
    with client.get("/monitoring/static/dashboard.css") as stylesheet:
        assert stylesheet.status_code == 200
        assert stylesheet.mimetype == "text/css"


def test_json_routes_are_not_cached(client: FlaskClient) -> None:
    for route in ("/monitoring/stats", "/monitoring/health"):
        assert client.get(route).headers["Cache-Control"] == "no-store"


def test_concurrent_requests_are_counted_exactly() -> None:
    app = shop_app()
    threads_count, per_thread = 8, 40
    start = threading.Barrier(threads_count)
    statuses: list[int] = []

    def work() -> None:
        client = app.test_client()
        start.wait()
        for item_id in range(per_thread):
            statuses.append(client.get(f"/items/{item_id}").status_code)

    threads = [threading.Thread(target=work) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert statuses.count(200) == threads_count * per_thread
    stats = app.test_client().get("/monitoring/stats").get_json()
    assert stats["totals"]["requests"] == threads_count * per_thread
    assert stats["routes"][0]["requests"] == threads_count * per_thread
