"""The shop demo's Flask app, with FlaskMonitor attached.

Serve it with ``python -m otel_flask_monitor.demo``, or
``gunicorn 'otel_flask_monitor.demo.app:create_app()'``.
The routes produce every kind of traffic the monitor distinguishes: fast reads, writes with 400/409
answers, a slow endpoint, 404s and an unhandled exception.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any, Final

from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

from otel_flask_monitor import FlaskMonitor
from otel_flask_monitor.demo.objectives import SHOP_OBJECTIVES
from otel_flask_monitor.demo.shop import MAX_QUANTITY, OutOfStockError, Shop, UnknownProductError

# The flask app's name is the service.name the monitor falls back to when no OTEL_SERVICE_NAME is set,
# so it is what the logs are labelled with in Loki: {service_name="shop"}.
APP_NAME: Final = "shop"

FEATURED_DELAY_SECONDS: Final = (0.1, 0.5)


class SimulatedFailureError(RuntimeError):
    """Raised on purpose by /simulate-error, so the monitor's error path can be watched."""


def create_app(
    *,
    shop: Shop | None = None,
    featured_delay_seconds: tuple[float, float] = FEATURED_DELAY_SECONDS,
    monitored: bool = True,
    **monitor_options: Any,
) -> Flask:
    """Build the demo app; ``monitor_options`` go to :class:`FlaskMonitor` unchanged.

    ``monitored=False`` builds the same app without the monitor: the baseline of the benchmarks.
    """
    # An explicit root_path: the import name is the service name, not a module Flask could locate.
    app = Flask(APP_NAME, root_path=str(Path(__file__).parent))
    state = shop or Shop()

    @app.get("/")
    def index() -> ResponseReturnValue:
        return {
            "service": APP_NAME,
            "endpoints": [
                "GET /api/products",
                "GET /api/products/<id>",
                "POST /api/products/<id>/purchase",
                "GET /api/products/featured",
                "GET /api/orders",
                "GET /simulate-error",
            ],
            "dashboard": "/monitoring/dashboard",
        }

    @app.get("/api/products")
    def list_products() -> ResponseReturnValue:
        products = state.list_products()
        return {"products": products, "count": len(products)}

    # "featured" never matches the int converter below, so the two routes cannot shadow each other.
    @app.get("/api/products/featured")
    def featured_products() -> ResponseReturnValue:
        # Stands in for a slow downstream call (a recommendation service): it waits, it does not burn CPU.
        time.sleep(random.uniform(*featured_delay_seconds))
        return {"featured": state.featured()}

    @app.get("/api/products/<int:product_id>")
    def get_product(product_id: int) -> ResponseReturnValue:
        try:
            return state.get_product(product_id)
        except UnknownProductError:
            return {"error": "Product not found", "product_id": product_id}, 404

    @app.post("/api/products/<int:product_id>/purchase")
    def purchase(product_id: int) -> ResponseReturnValue:
        payload = request.get_json(silent=True)
        if not isinstance(payload, dict):
            return {"error": 'Expected a JSON object body such as {"quantity": 1}'}, 400
        quantity = payload.get("quantity")
        # bool is an int subclass: {"quantity": true} is not a quantity.
        if isinstance(quantity, bool) or not isinstance(quantity, int):
            return {"error": "quantity must be an integer"}, 400
        if not 1 <= quantity <= MAX_QUANTITY:
            return {"error": f"quantity must be between 1 and {MAX_QUANTITY}"}, 400
        try:
            order, remaining = state.purchase(product_id, quantity)
        except UnknownProductError:
            return {"error": "Product not found", "product_id": product_id}, 404
        except OutOfStockError as shortage:
            return {
                "error": "Insufficient stock",
                "product_id": product_id,
                "requested": shortage.requested,
                "available": shortage.available,
            }, 409
        return {"order": order.as_json(), "remaining_stock": remaining}, 201

    @app.get("/api/orders")
    def list_orders() -> ResponseReturnValue:
        orders, placed = state.recent_orders()
        return {"orders": [order.as_json() for order in orders], "total_placed": placed}

    @app.get("/simulate-error")
    def simulate_error() -> ResponseReturnValue:
        raise SimulatedFailureError("simulated failure: the payment gateway did not answer")

    # A JSON API answers JSON for unknown paths and wrong methods too; 500 is left to the monitor,
    # which answers JSON with the trace id.
    def json_http_error(error: HTTPException) -> ResponseReturnValue:
        # Keep the error's own headers (405's Allow) except its HTML content type.
        headers = [(name, value) for name, value in error.get_headers() if name.lower() != "content-type"]
        return jsonify(error=error.name, path=request.path), error.code or 500, headers

    app.register_error_handler(404, json_http_error)
    app.register_error_handler(405, json_http_error)

    if monitored:
        FlaskMonitor(app, **{"objectives": SHOP_OBJECTIVES, **monitor_options})
    return app
