"""The ``endpoints`` of ``/monitoring/stats``: every (method, URL rule) of the app, the monitor's own and
static files left out, marked called when the routes table has it in the window, bounded by
``max_routes``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Blueprint, Flask
from werkzeug.routing import Rule

from otel_flask_monitor import FlaskMonitor
from otel_flask_monitor.dashboard import BLUEPRINT_NAME
from otel_flask_monitor.endpoints import Endpoint, app_endpoints, endpoints_section
from otel_flask_monitor.state import get_state


def shop(**options: Any) -> Flask:
    app = Flask("endpoints-shop", static_folder=str(Path(__file__).parent))

    @app.route("/items/<int:item_id>", methods=["GET", "DELETE"])
    def item(item_id: int) -> Any:
        return {"id": item_id}

    @app.post("/orders")
    def order() -> Any:
        return {"ok": True}, 201

    @app.route("/cache", methods=["PURGE"])
    def purge() -> Any:
        return "", 204

    @app.route("/cors", methods=["OPTIONS"], provide_automatic_options=False)
    def cors() -> Any:
        return "", 204

    admin = Blueprint("admin", __name__, static_folder=str(Path(__file__).parent), url_prefix="/admin")

    @admin.get("/users")
    def users() -> Any:
        return []

    app.register_blueprint(admin)
    FlaskMonitor(app, **options)
    return app


def listed(document: dict[str, Any]) -> dict[tuple[str, str], bool | None]:
    return {(entry["method"], entry["rule"]): entry["called"] for entry in document["endpoints"]}


def test_every_endpoint_is_listed_and_those_called_are_marked() -> None:
    app = shop()
    client = app.test_client()
    assert client.get("/items/1").status_code == 200
    assert client.open("/cache", method="PURGE").status_code == 204
    assert client.get("/admin/users").status_code == 200
    assert client.get("/monitoring/health").status_code == 200  # the monitor's own: not an endpoint

    document = client.get("/monitoring/stats").get_json()

    assert listed(document) == {
        ("DELETE", "/items/<int:item_id>"): False,
        ("GET", "/items/<int:item_id>"): True,
        ("POST", "/orders"): False,
        ("PURGE", "/cache"): True,  # counted under _OTHER, as the routes table shows it
        ("OPTIONS", "/cors"): False,  # asked for by the app, unlike Flask's automatic OPTIONS
        ("GET", "/admin/users"): True,
    }
    # The never-called first, by rule; each entry names its view.
    assert [entry["endpoint"] for entry in document["endpoints"][:3]] == ["cors", "item", "order"]
    assert document["endpoints"][2] == {
        "method": "POST",
        "rule": "/orders",
        "endpoint": "order",
        "called": False,
    }
    assert (document["endpoints_total"], document["endpoints_called"], document["endpoints_not_called"]) == (
        6,
        3,
        3,
    )


def test_a_head_request_calls_the_get_view_and_an_automatic_options_calls_nothing() -> None:
    app = shop()
    client = app.test_client()
    assert client.head("/items/7").status_code == 200
    assert client.options("/orders").status_code == 200

    called = listed(client.get("/monitoring/stats").get_json())

    assert called[("GET", "/items/<int:item_id>")] is True
    assert called[("POST", "/orders")] is False
    assert ("HEAD", "/items/<int:item_id>") not in called
    assert ("OPTIONS", "/orders") not in called


def test_the_list_is_cut_at_max_routes_keeping_the_never_called() -> None:
    app = shop(max_routes=2)
    client = app.test_client()
    assert client.get("/items/1").status_code == 200
    assert client.get("/admin/users").status_code == 200

    document = client.get("/monitoring/stats").get_json()

    assert document["endpoints"] == [
        {"method": "PURGE", "rule": "/cache", "endpoint": "purge", "called": False},
        {"method": "OPTIONS", "rule": "/cors", "endpoint": "cors", "called": False},
    ]
    assert (document["endpoints_total"], document["endpoints_not_called"]) == (6, 4)


def test_beyond_max_routes_an_endpoint_not_seen_is_not_known() -> None:
    app = shop(max_routes=1)
    client = app.test_client()
    assert client.get("/items/1").status_code == 200
    assert client.get("/admin/users").status_code == 200  # beyond the cap: counted under <other>

    document = client.get("/monitoring/stats").get_json()

    assert {(row["method"], row["route"]) for row in document["routes"]} == {
        ("GET", "/items/<int:item_id>"),
        ("*", "<other>"),
    }
    # The one request under <other> may have been any endpoint not seen: none is said never called.
    assert document["endpoints"] == [
        {"method": "GET", "rule": "/admin/users", "endpoint": "admin.users", "called": None}
    ]
    assert (document["endpoints_total"], document["endpoints_called"], document["endpoints_not_called"]) == (
        6,
        1,
        0,
    )


def test_the_merged_document_of_the_workers_decides(tmp_path: Path) -> None:
    app = shop(multiprocess_dir=str(tmp_path))
    exchange = get_state(app).exchange
    assert exchange is not None
    try:
        client = app.test_client()
        assert client.post("/orders").status_code == 201
        document = client.get("/monitoring/stats").get_json()
        assert document["per_process"] is False
        assert listed(document)[("POST", "/orders")] is True
    finally:
        exchange.close()


def test_a_rule_is_matched_as_the_record_cuts_it_and_a_rule_without_methods_takes_any() -> None:
    long_rule = "/" + "x" * 40
    rules = [Rule(long_rule, endpoint="long", methods=["GET"]), Rule("/any", endpoint="any")]
    endpoints = list(app_endpoints(rules, BLUEPRINT_NAME, max_route_length=20))
    assert endpoints == [Endpoint("GET", "/" + "x" * 16 + "...", "long"), Endpoint("*", "/any", "any")]

    section = endpoints_section(endpoints, [{"method": "PATCH", "route": "/any"}], limit=10)
    assert [(entry["rule"], entry["called"]) for entry in section["endpoints"]] == [
        ("/" + "x" * 16 + "...", False),
        ("/any", True),
    ]
