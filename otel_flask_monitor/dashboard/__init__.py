"""The monitoring blueprint: ``/dashboard`` (HTML), ``/health`` and ``/stats`` (JSON).

Every route is behind :func:`~otel_flask_monitor.dashboard.access.check_access`; the page is
static HTML plus a script that fetches the JSON and inserts every value as text, under a
Content-Security-Policy that allows no inline script.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from flask import Blueprint, Response, current_app, jsonify, redirect, render_template, request, url_for

from otel_flask_monitor import __version__
from otel_flask_monitor.dashboard.access import Denial, check_access

if TYPE_CHECKING:
    from otel_flask_monitor.extension import MonitorState

BLUEPRINT_NAME: Final = "otel_flask_monitor"

CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

_HERE = Path(__file__).parent


def _state() -> MonitorState:
    from otel_flask_monitor.extension import get_state

    return get_state(current_app)


def health_document(state: MonitorState, sample_system: Callable[[], Any]) -> dict[str, Any]:
    """The ``/monitoring/health`` JSON (schema: docs/dashboard.md)."""
    sample = sample_system()
    telemetry = state.telemetry.health.as_dict()
    failures = state.failures.counts()
    reasons: list[str] = []
    if not telemetry["healthy"]:
        reasons.append("telemetry export failing")
    if failures:
        reasons.append("internal monitor failures (see internal_failures)")
    return {
        "status": "degraded" if reasons else "ok",
        "reasons": reasons,
        "version": __version__,
        "time_unix": time.time(),
        "uptime_seconds": round(max(time.time() - sample.create_time_unix, 0.0), 3),
        "system_metrics": sample.health_dict(),
        "telemetry": telemetry,
        "internal_failures": failures,
    }


def build_blueprint() -> Blueprint:
    """A fresh blueprint per app (each app mounts it at its own ``url_prefix``)."""
    blueprint = Blueprint(
        BLUEPRINT_NAME,
        __name__,
        template_folder=str(_HERE / "templates"),
        static_folder=str(_HERE / "static"),
        static_url_path="/static",
    )

    @blueprint.before_request
    def guard() -> Response | None:
        state = _state()
        try:
            denial = check_access(state.settings, request)
        except Exception:  # a failing access_check denies; it never opens the data
            state.failures.report("access_check")
            denial = Denial(403, "forbidden", challenge=False)
        if denial is None:
            return None
        response = jsonify(error=denial.message)
        response.status_code = denial.status
        if denial.challenge:
            response.headers["WWW-Authenticate"] = 'Bearer realm="otel-flask-monitor"'
        return response

    @blueprint.after_request
    def secure_headers(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Frame-Options"] = "DENY"
        if request.endpoint != f"{BLUEPRINT_NAME}.static":
            response.headers["Cache-Control"] = "no-store"
        return response

    @blueprint.get("/")
    def index() -> Any:
        return redirect(url_for(f"{BLUEPRINT_NAME}.dashboard"))

    @blueprint.get("/dashboard")
    def dashboard() -> str:
        state = _state()
        return render_template(
            "otel_flask_monitor/dashboard.html",
            app_name=current_app.name,
            version=__version__,
            window_minutes=round(state.settings.window_seconds / 60, 1),
        )

    @blueprint.get("/health")
    def health() -> Response:
        from otel_flask_monitor.system_metrics import process_sampler

        return jsonify(health_document(_state(), process_sampler().latest))

    @blueprint.get("/stats")
    def stats() -> Response:
        return jsonify(_state().aggregates.snapshot())

    return blueprint
