"""The shop demo's HTTP contract, its stock logic, and its start-up banner."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from otel_flask_monitor import get_state
from otel_flask_monitor.dashboard import NOT_CONNECTED_REASON
from otel_flask_monitor.demo import create_app, traffic
from otel_flask_monitor.demo.__main__ import (
    SignalProbe,
    endpoint_address,
    parse_arguments,
    probe_telemetry,
    start_message,
)
from otel_flask_monitor.demo.shop import CATALOGUE, MAX_QUANTITY, OutOfStockError, Shop
from otel_flask_monitor.diagnostics import finding
from tests.conftest import Exported
from tests.support.browser import serving
from tests.support.real_processes import FAST_EXPORT, free_port, stop_process

TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def app() -> Flask:
    return create_app(shop=Shop(random.Random(7)), featured_delay_seconds=(0.0, 0.0))


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def json_of(response: Any) -> Any:
    assert response.mimetype == "application/json", response.get_data(as_text=True)
    return response.get_json()


def test_products_lists_the_catalogue_with_a_trace_id_header(client: FlaskClient) -> None:
    response = client.get("/api/products")

    assert response.status_code == 200
    body = json_of(response)
    assert body["count"] == len(CATALOGUE) == len(body["products"])
    assert {"id", "name", "category", "price", "rating", "stock"} <= set(body["products"][0])
    assert TRACE_ID.match(response.headers["X-Trace-Id"])


def test_product_by_id(client: FlaskClient) -> None:
    response = client.get("/api/products/1")

    assert response.status_code == 200
    assert json_of(response)["name"] == "Mechanical keyboard"


def test_unknown_product_is_a_json_404(client: FlaskClient) -> None:
    response = client.get("/api/products/999")

    assert response.status_code == 404
    assert json_of(response) == {"error": "Product not found", "product_id": 999}


@pytest.mark.parametrize("path", ["/api/products/abc", "/invalid/path", "/api/products/-1"])
def test_paths_no_route_matches_are_json_404s(client: FlaskClient, path: str) -> None:
    response = client.get(path)

    assert response.status_code == 404
    assert json_of(response) == {"error": "Not Found", "path": path}


def test_wrong_method_is_a_json_405_that_keeps_allow(client: FlaskClient) -> None:
    response = client.delete("/api/products")

    assert response.status_code == 405
    assert json_of(response)["error"] == "Method Not Allowed"
    assert "GET" in response.headers["Allow"]


def test_featured_is_not_shadowed_by_the_int_route() -> None:
    client = create_app(featured_delay_seconds=(0.1, 0.1)).test_client()

    started = time.perf_counter()
    response = client.get("/api/products/featured")
    elapsed = time.perf_counter() - started

    assert response.status_code == 200
    featured = json_of(response)["featured"]
    assert [product["rating"] for product in featured] == sorted(
        (product.rating for product in CATALOGUE), reverse=True
    )[:3]
    assert elapsed >= 0.1


def test_purchase_places_an_order_and_takes_stock(client: FlaskClient) -> None:
    stock_before = json_of(client.get("/api/products/2"))["stock"]

    response = client.post("/api/products/2/purchase", json={"quantity": 2})

    assert response.status_code == 201
    body = json_of(response)
    assert body["order"]["product_id"] == 2
    assert body["order"]["quantity"] == 2
    assert body["order"]["total"] == pytest.approx(59.98)
    assert body["remaining_stock"] == stock_before - 2
    orders = json_of(client.get("/api/orders"))
    assert orders["total_placed"] == 1
    assert orders["orders"][0]["id"] == body["order"]["id"]


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (None, None),
        ("", "application/json"),
        ("{not json", "application/json"),
        ('["quantity", 1]', "application/json"),
        ("{}", "application/json"),
        ('{"quantity": "two"}', "application/json"),
        ('{"quantity": 1.5}', "application/json"),
        ('{"quantity": true}', "application/json"),
        ('{"quantity": 0}', "application/json"),
        ('{"quantity": -3}', "application/json"),
        (f'{{"quantity": {MAX_QUANTITY + 1}}}', "application/json"),
        ("quantity=1", "application/x-www-form-urlencoded"),
    ],
)
def test_invalid_purchase_bodies_are_json_400s(
    client: FlaskClient, data: str | None, content_type: str | None
) -> None:
    response = client.post("/api/products/1/purchase", data=data, content_type=content_type)

    assert response.status_code == 400
    assert "error" in json_of(response)
    assert json_of(client.get("/api/orders"))["total_placed"] == 0


def test_purchase_of_an_unknown_product_is_a_404(client: FlaskClient) -> None:
    response = client.post("/api/products/999/purchase", json={"quantity": 1})

    assert response.status_code == 404
    assert json_of(response)["product_id"] == 999


def test_an_empty_shelf_answers_409_and_a_delivery_follows(client: FlaskClient) -> None:
    statuses = [
        client.post("/api/products/3/purchase", json={"quantity": MAX_QUANTITY}).status_code for _ in range(5)
    ]

    assert 409 in statuses, statuses
    shortage = statuses.index(409)
    assert 201 in statuses[shortage + 1 :], f"no restock after the shortage: {statuses}"
    body = json_of(client.post("/api/products/3/purchase", json={"quantity": MAX_QUANTITY}))
    if "available" in body:  # another shortage: the answer says what was there
        assert body["requested"] == MAX_QUANTITY > body["available"]


def test_about_one_purchase_in_ten_meets_an_empty_shelf() -> None:
    # The load scenarios buy 1-3 units of a random product: the rate the demo promises for them.
    shop = Shop(random.Random(42))
    buyer = random.Random(43)
    shortages = 0
    purchases = 4000
    for _ in range(purchases):
        try:
            shop.purchase(buyer.randint(1, len(CATALOGUE)), buyer.randint(1, 3))
        except OutOfStockError:
            shortages += 1

    assert 0.05 <= shortages / purchases <= 0.15


def test_concurrent_purchases_never_oversell() -> None:
    shop = Shop(random.Random(5))

    def buy_one(_: int) -> bool:
        try:
            shop.purchase(1, 1)
        except OutOfStockError:
            return False
        return True

    with ThreadPoolExecutor(max_workers=8) as pool:
        sold = sum(pool.map(buy_one, range(800)))

    orders, placed = shop.recent_orders()
    assert placed == sold
    assert len(orders) == min(sold, 100)
    assert shop.get_product(1)["stock"] >= 0


def test_simulate_error_is_the_monitors_json_500_with_the_trace_id(
    client: FlaskClient, exported: Exported
) -> None:
    response = client.get("/simulate-error")

    assert response.status_code == 500
    body = json_of(response)
    assert body["error"] == "Internal Server Error"
    assert TRACE_ID.match(body["trace_id"])
    assert response.headers["X-Trace-Id"] == body["trace_id"]
    spans = exported.server_spans()
    assert [format(span.context.trace_id, "032x") for span in spans if span.context] == [body["trace_id"]]
    logs = exported.request_logs()
    assert len(logs) == 1
    assert logs[0].log_record.attributes is not None
    assert logs[0].log_record.attributes["http.response.status_code"] == 500


def test_service_name_falls_back_to_shop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without OTEL_SERVICE_NAME the demo's records are labelled service_name="shop" in Loki; with
    it, the variable wins. (The providers of this test process are set up already, so the resource
    the monitor would build is rebuilt from the demo app's settings and name.)"""
    from otel_flask_monitor.telemetry import build_resource

    for name in ("OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES"):
        monkeypatch.delenv(name, raising=False)
    app = create_app()

    names = (get_state(app).settings.service_name, app.name)
    assert build_resource(*names).attributes["service.name"] == "shop"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "checkout")
    assert build_resource(*names).attributes["service.name"] == "checkout"


# --- python -m otel_flask_monitor.demo ----------------------------------------------------------


@pytest.fixture
def otel_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_probe_defaults_to_otlp_http_on_localhost_and_connects_once(otel_env: pytest.MonkeyPatch) -> None:
    attempts: list[tuple[str, int]] = []

    def unreachable(address: tuple[str, int]) -> bool:
        attempts.append(address)
        return False

    probes = probe_telemetry(unreachable)

    assert attempts == [("localhost", 4318)]
    assert [probe.signal for probe in probes] == ["traces", "logs", "metrics"]
    assert (
        probes[0].line
        == "traces   -> http://localhost:4318/v1/traces (OTLP http/protobuf): nothing listening"
    )
    assert "http://localhost:4318/v1/logs" in probes[1].line
    assert {probe.unreachable for probe in probes} == {"nothing accepts connections at localhost:4318"}


def test_probe_follows_the_otel_variables(otel_env: pytest.MonkeyPatch) -> None:
    otel_env.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    otel_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector.internal:14317")
    otel_env.setenv("OTEL_METRICS_EXPORTER", "none")

    probes = probe_telemetry(lambda address: address == ("collector.internal", 14317))

    assert probes[0].line == "traces   -> http://collector.internal:14317 (OTLP grpc): reachable"
    assert probes[0].unreachable is None
    assert probes[2].line == "metrics  not exported over OTLP (OTEL_METRICS_EXPORTER=none)"


def test_probe_shows_no_credentials_of_the_endpoint(otel_env: pytest.MonkeyPatch) -> None:
    otel_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "https://shop:s3cret@otel.example.com")

    probes = probe_telemetry(lambda address: address == ("otel.example.com", 443))

    assert probes[1].line == "logs     -> https://otel.example.com/v1/logs (OTLP http/protobuf): reachable"
    assert not any("s3cret" in probe.line for probe in probes)


def test_probe_tries_nothing_when_the_sdk_is_disabled(otel_env: pytest.MonkeyPatch) -> None:
    otel_env.setenv("OTEL_SDK_DISABLED", "true")

    assert probe_telemetry(lambda _: pytest.fail("no connection attempt expected")) == []


@pytest.mark.parametrize(
    ("url", "protocol", "address"),
    [
        ("http://localhost:4318/v1/logs", "http/protobuf", ("localhost", 4318)),
        ("https://otel.example.com/v1/logs", "http/protobuf", ("otel.example.com", 443)),
        ("collector:4317", "grpc", ("collector", 4317)),
        ("http://[::1]:4317", "grpc", ("::1", 4317)),
        ("http://host:notaport", "grpc", None),
        ("http://[::1", "grpc", None),  # an unclosed IPv6 bracket: no address, no crash at start
    ],
)
def test_endpoint_address(url: str, protocol: str, address: tuple[str, int] | None) -> None:
    assert endpoint_address(url, protocol) == address


def test_port_comes_from_the_flag_then_port_then_the_default() -> None:
    assert parse_arguments([], {}).port == 5001
    assert parse_arguments([], {"PORT": "8000"}).port == 8000
    assert parse_arguments(["--port", "9000"], {"PORT": "8000"}).port == 9000
    assert parse_arguments(["--host", "0.0.0.0"], {}).host == "0.0.0.0"
    with pytest.raises(SystemExit):
        parse_arguments([], {"PORT": "eighty"})


def test_traffic_is_off_by_default_bounded_and_only_for_a_server_reachable_on_loopback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert parse_arguments([], {}).traffic is None
    assert parse_arguments(["--traffic"], {}).traffic == traffic.DEFAULT_SECONDS
    assert parse_arguments(["--traffic", "30", "--host", "0.0.0.0"], {}).traffic == 30
    for refused in (["--traffic", "0"], ["--traffic", "-5"], ["--host", "192.0.2.7", "--traffic"]):
        with pytest.raises(SystemExit):
            parse_arguments(refused, {})
    assert "talks to 127.0.0.1 only" in capsys.readouterr().err


def readme_locust_commands() -> list[str]:
    readme = (REPO_ROOT / "README.md").read_text()
    return [
        line.strip() for line in readme.splitlines() if line.startswith("locust -f loadtest/locustfile.py")
    ]


def test_start_message_explains_a_missing_collector_once_and_how_to_drive_the_demo() -> None:
    missing = finding("collector_not_reached", endpoint="http://localhost:4318", prefix="/monitoring")

    message = start_message(
        base_url="http://127.0.0.1:5001",
        prefix="/monitoring",
        probes=[SignalProbe("traces", "traces   -> ...: nothing listening", "nothing accepts connections")],
        findings=[missing],
        traffic_seconds=None,
        locustfile="loadtest/locustfile.py",
    )

    flat = " ".join(message.split())
    assert flat.count("No Collector has answered at http://localhost:4318") == 1
    for promise in (
        "the dashboard, /monitoring/health and /monitoring/stats work",
        "docker compose up",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "collector_not_reached (info)",
        "--traffic",
    ):
        assert promise in flat, promise
    assert "http://127.0.0.1:5001/monitoring/dashboard" in message
    # The README's three scenarios, pointed at this demo.
    commands = [line.strip() for line in message.splitlines() if line.strip().startswith("locust -f")]
    assert commands == readme_locust_commands()
    assert [command.rsplit(" ", 1)[-1] for command in commands[1:]] == [
        "HighLoadTester",
        "InvalidRequestTester",
    ]


def test_start_message_without_findings_or_a_clone_of_the_repository() -> None:
    message = start_message(
        base_url="http://127.0.0.1:8000",
        prefix="/ops",
        probes=[],
        findings=[],
        traffic_seconds=120,
        locustfile=None,
    )

    assert "disabled (OTEL_SDK_DISABLED=true)" in message
    assert "\n  none\n" in message
    assert "for 2 min" in message
    assert "from a clone of the repository" in message
    assert "--host http://127.0.0.1:8000 HighLoadTester" in message


def test_traffic_mix_uses_only_the_demos_routes_and_no_simulated_failure() -> None:
    rng = random.Random(3)
    app = create_app(shop=Shop(random.Random(4)), featured_delay_seconds=(0.0, 0.0), monitored=False)
    adapter = app.url_map.bind("127.0.0.1")
    planned = [traffic.plan_request(rng) for _ in range(400)]

    kinds = {(request.method, adapter.match(request.path, method=request.method)[0]) for request in planned}
    assert kinds == {
        ("GET", "list_products"),
        ("GET", "get_product"),
        ("POST", "purchase"),
        ("GET", "list_orders"),
        ("GET", "featured_products"),
    }
    assert all(request.body is not None for request in planned if request.method == "POST")
    assert not any("simulate-error" in request.path for request in planned)


def test_traffic_drives_the_demo_within_its_budget_and_stops_when_told() -> None:
    app = create_app(shop=Shop(random.Random(5)), featured_delay_seconds=(0.0, 0.0))
    with serving(app) as server:
        report = traffic.drive(
            server.port, 2.0, threading.Event(), rng=random.Random(6), requests_per_second=10
        )
        stopped = threading.Event()
        stopped.set()
        assert traffic.drive(server.port, 60.0, stopped).sent == 0

        # Every request of the mix reaches the app and is recorded (a record may land just after
        # its response: wait for it, bounded).
        deadline = time.monotonic() + 10
        while get_state(app).stats_document()["totals"]["requests"] < report.sent < 100:
            assert time.monotonic() < deadline, "the traffic's requests were not all recorded"
            time.sleep(0.05)

    assert 1 <= report.sent <= 20  # two seconds' worth at ten a second, never more
    assert report.failed == 0
    assert get_state(app).stats_document()["totals"]["requests"] == report.sent


@pytest.mark.slow
def test_module_explains_a_missing_collector_once_and_drives_itself(tmp_path: Path) -> None:
    port = free_port()
    closed_port = free_port()  # nothing listens there: the "no Collector" case
    env = {name: value for name, value in os.environ.items() if not name.startswith("OTEL_")}
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{closed_port}"
    env.update(FAST_EXPORT)
    stderr_path = tmp_path / "demo.stderr"
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "otel_flask_monitor.demo", "--port", str(port), "--traffic", "60"],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    try:
        assert process.stdout is not None
        message = []
        while sum(line.startswith("    locust -f") for line in message) < 3 and len(message) < 80:
            message.append(process.stdout.readline())
        base = f"http://127.0.0.1:{port}"
        stats = wait_for_json(
            f"{base}/monitoring/stats", lambda document: len(document["routes"]) >= 3, timeout=30
        )
        own_status = fetch_status(f"{base}/api/orders")
        health = wait_for_json(f"{base}/monitoring/health", lambda document: True, timeout=5)
    finally:
        stop_process(process, timeout=15)
    rest = process.stdout.read()
    process.stdout.close()

    text = " ".join("".join(message).split())
    assert text.count("No Collector has answered at") == 1, message
    assert f"No Collector has answered at http://127.0.0.1:{closed_port} since this process started" in text
    assert text.count("nothing listening") == 3
    assert "built in: on" in text
    assert f"--host {base} InvalidRequestTester" in text
    assert "Collector" not in rest  # said once, at start
    # The page and the JSON say the same: degraded (telemetry is dropped), because never connected.
    assert health["status"] == "degraded"
    assert health["reasons"] == [NOT_CONNECTED_REASON]
    assert health["telemetry"]["connection"] == "never_reached"
    assert {signal["connection"] for signal in health["telemetry"]["signals"]} == {"never_reached"}
    assert [item["code"] for item in health["diagnostics"]] == ["collector_not_reached"]
    assert stats["totals"]["requests"] >= 3
    assert own_status == 200
    # The built-in traffic stays out of the access log; the test's own request is in it; and the
    # monitor does not repeat the start message's news as a warning.
    logged = stderr_path.read_text()
    assert [line for line in logged.splitlines() if '"GET /api/' in line or '"POST /api/' in line] == [
        line for line in logged.splitlines() if '"GET /api/orders' in line
    ]
    assert logged.count('"GET /api/orders') == 1
    assert "telemetry export to" not in logged


def fetch_status(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as response:
        return int(response.status)


def wait_for_json(url: str, done: Callable[[Any], bool], timeout: float) -> Any:
    """GET ``url`` until it answers JSON that ``done`` accepts, within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                last = json.loads(response.read())
            if done(last):
                return last
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not answer as expected within {timeout}s; last answer: {last}")
