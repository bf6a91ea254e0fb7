"""The shop demo's HTTP contract, its stock logic, and its start-up banner."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from otel_flask_monitor.demo import create_app
from otel_flask_monitor.demo.__main__ import describe_telemetry, endpoint_address, parse_arguments
from otel_flask_monitor.demo.shop import CATALOGUE, MAX_QUANTITY, OutOfStockError, Shop
from tests.conftest import Exported
from tests.real_processes import free_port, stop_process

TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
REPO_ROOT = Path(__file__).resolve().parents[1]
STARTUP_SECONDS = 60.0  # a deadline for what certainly happens; only a broken demo waits it out


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
    the monitor would build is rebuilt from exactly what the demo's init_app passed.)"""
    from otel_flask_monitor import extension
    from otel_flask_monitor.telemetry import build_resource

    for name in ("OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES"):
        monkeypatch.delenv(name, raising=False)
    passed: list[dict[str, Any]] = []
    real_setup = extension.setup_telemetry

    def recording_setup(**options: Any) -> Any:
        passed.append(options)
        return real_setup(**options)

    monkeypatch.setattr(extension, "setup_telemetry", recording_setup)
    create_app()

    (options,) = passed
    names = (options["service_name"], options["fallback_service_name"])
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


def test_banner_defaults_to_otlp_http_on_localhost_and_connects_once(otel_env: pytest.MonkeyPatch) -> None:
    attempts: list[tuple[str, int]] = []

    def unreachable(address: tuple[str, int]) -> bool:
        attempts.append(address)
        return False

    lines = describe_telemetry(unreachable)

    assert attempts == [("localhost", 4318)]
    assert len(lines) == 3
    assert lines[0].startswith(
        "traces   -> http://localhost:4318/v1/traces (OTLP http/protobuf): NOT reachable"
    )
    assert "http://localhost:4318/v1/logs" in lines[1]


def test_banner_follows_the_otel_variables(otel_env: pytest.MonkeyPatch) -> None:
    otel_env.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    otel_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector.internal:14317")
    otel_env.setenv("OTEL_METRICS_EXPORTER", "none")

    lines = describe_telemetry(lambda address: address == ("collector.internal", 14317))

    assert lines[0] == "traces   -> http://collector.internal:14317 (OTLP grpc): reachable"
    assert lines[2] == "metrics  not exported over OTLP (OTEL_METRICS_EXPORTER=none)"


def test_banner_says_when_the_sdk_is_disabled(otel_env: pytest.MonkeyPatch) -> None:
    otel_env.setenv("OTEL_SDK_DISABLED", "true")

    assert describe_telemetry(lambda _: pytest.fail("no connection attempt expected")) == [
        "telemetry: disabled (OTEL_SDK_DISABLED=true)"
    ]


@pytest.mark.parametrize(
    ("url", "protocol", "address"),
    [
        ("http://localhost:4318/v1/logs", "http/protobuf", ("localhost", 4318)),
        ("https://otel.example.com/v1/logs", "http/protobuf", ("otel.example.com", 443)),
        ("collector:4317", "grpc", ("collector", 4317)),
        ("http://[::1]:4317", "grpc", ("::1", 4317)),
        ("http://host:notaport", "grpc", None),
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


@pytest.fixture
def demo_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = free_port()
    closed_port = free_port()  # nothing listens there: the "no Collector" case
    env = {name: value for name, value in os.environ.items() if not name.startswith("OTEL_")}
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{closed_port}"
    env["OTEL_BSP_SCHEDULE_DELAY"] = "200"
    process = subprocess.Popen(
        [sys.executable, "-m", "otel_flask_monitor.demo", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        yield process, port
    finally:
        stop_process(process, timeout=15)


@pytest.mark.slow
def test_module_serves_and_prints_the_banner_once_without_a_collector(
    demo_process: tuple[subprocess.Popen[str], int],
) -> None:
    process, port = demo_process
    assert process.stdout is not None
    banner = [process.stdout.readline() for _ in range(5)]

    assert banner[0] == f"shop demo:  http://127.0.0.1:{port}/api/products\n"
    assert banner[1] == f"dashboard:  http://127.0.0.1:{port}/monitoring/dashboard\n"
    assert all("NOT reachable" in line for line in banner[2:5]), banner
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/products", timeout=5) as response:
                assert response.status == 200
                assert TRACE_ID.match(response.headers["X-Trace-Id"])
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    # An export to the closed port has failed (health says so) and still nothing is printed again.
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/monitoring/health", timeout=5) as response:
            if json.load(response)["telemetry"]["healthy"] is False:
                break
        assert time.monotonic() < deadline, "no failed export seen in /monitoring/health"
        time.sleep(0.1)
    process.terminate()
    rest, _ = process.communicate(timeout=15)
    assert "shop demo:" not in rest  # printed once
