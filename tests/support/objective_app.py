"""Apps with objectives: for the CLI tests (``tests.support.objective_app:app`` and ``:create_app()``),
and for the live objectives across gunicorn workers (``:payments_app()``)."""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, Flask, request

from otel_flask_monitor import Availability, FlaskMonitor, objective

OBJECTIVES: dict[str, Any] = {
    "default": {"availability": 99.5},
    "GET /api/items": {"latency": {"threshold_ms": 250, "target": 99}},
}


def create_app(objectives: dict[str, Any] | None = None) -> Flask:
    app = Flask("inventory")
    FlaskMonitor(app, objectives=OBJECTIVES if objectives is None else objectives)

    @app.get("/api/items")
    def items() -> Any:
        return []

    payments = Blueprint("payments", __name__)

    @payments.post("/charge")
    @objective(availability=Availability(target=99.99))
    def charge() -> Any:
        return {}

    app.register_blueprint(payments, url_prefix="/api/payments")  # after init_app, as in a factory
    return app


PAYMENT_OBJECTIVES: dict[str, Any] = {
    "GET /pay": {"latency": {"threshold_ms": 200, "target": 99}, "availability": 99},
}
SLOW_SECONDS = 0.3
"""What ``/pay?slow=1`` sleeps: longer than the latency threshold, so it misses it whatever the load."""


def payments_app() -> Flask:
    """``GET /pay``: fast; ``?slow=1`` sleeps :data:`SLOW_SECONDS`; ``?fail=1`` answers 500."""
    app = Flask("payments")
    FlaskMonitor(app, objectives=PAYMENT_OBJECTIVES)

    @app.get("/pay")
    def pay() -> Any:
        if request.args.get("slow"):
            time.sleep(SLOW_SECONDS)
        if request.args.get("fail"):
            return {"error": "declined"}, 500
        return {"paid": True}

    return app


app = create_app()
