"""An app with objectives for the CLI tests: ``tests.support.objective_app:app`` and ``:create_app()``."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask

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


app = create_app()
