"""The monitoring blueprint: ``/dashboard`` (HTML), ``/health``, ``/stats`` and ``/stats/route`` (JSON).

Every route is behind :meth:`~otel_flask_monitor.dashboard.access.DashboardAccess.check`; the page is
static HTML plus a script that fetches the JSON and inserts every value as text, under a
Content-Security-Policy that allows no inline script. With ``access_token`` set, ``/login`` and
``/logout`` (:mod:`~otel_flask_monitor.dashboard.login`) let a browser sign in with the token.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Final

from flask import Blueprint, Response, current_app, jsonify, redirect, render_template, request, url_for

from otel_flask_monitor._version import __version__
from otel_flask_monitor.aggregates.live_objectives import burning
from otel_flask_monitor.dashboard.access import DashboardAccess, Denial
from otel_flask_monitor.dashboard.login import LOGIN_ENDPOINTS, LOGIN_STYLESHEET, register_login_routes
from otel_flask_monitor.endpoints import UrlRule, app_endpoints, endpoints_section
from otel_flask_monitor.export_status import NEVER_REACHED
from otel_flask_monitor.process import PROCESS
from otel_flask_monitor.state import MonitorState, get_state
from otel_flask_monitor.trace_links import with_trace_urls

BLUEPRINT_NAME: Final = "otel_flask_monitor"

CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# The sign-in page: no script at all, and its form may post to this origin only.
LOGIN_CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_LOGIN_ENDPOINTS: Final = frozenset(f"{BLUEPRINT_NAME}.{name}" for name in LOGIN_ENDPOINTS)

_HERE = Path(__file__).parent

NOT_CONNECTED_REASON: Final = "telemetry export not connected (no Collector reached since start)"


def _state() -> MonitorState:
    return get_state(current_app)


def health_document(state: MonitorState, sample_system: Callable[[], Any]) -> dict[str, Any]:
    """The ``/monitoring/health`` JSON (schema: docs/dashboard.md)."""
    sample = sample_system()
    telemetry = state.telemetry.health.as_dict()
    failures = state.failures.counts()
    reasons: list[str] = []
    if telemetry["connection"] == NEVER_REACHED:
        # Still "degraded": telemetry is being dropped, and a poller cannot tell a demo from a
        # deployment pointed at the wrong address. The dashboard draws this state calmly.
        reasons.append(NOT_CONNECTED_REASON)
    elif not telemetry["healthy"]:
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
        "diagnostics": state.diagnostics.as_list(),
        "objectives_burning": _objectives_burning(state),
    }


def _objectives_burning(state: MonitorState) -> list[dict[str, Any]]:
    """Routes whose objectives burn faster than the page alert's factor over both windows
    (aggregates/live_objectives.py); read from the stats document only when objectives are declared
    (by the option or ``@objective``). A failure here is counted, never a failed health check."""
    source = state.aggregates.objectives
    if source is None or not source.objective_table():
        return []
    try:
        return burning(state.stats_document().get("objectives", []))
    except Exception:
        state.failures.report("objectives_burning")
        return []


def answers_document(state: MonitorState, rules: Iterable[UrlRule]) -> dict[str, Any]:
    """The ``/monitoring/stats`` JSON: the aggregates' document, each trace id with its link
    (``trace_url``), and the endpoints of the app's URL ``rules`` marked called or not (schema:
    docs/dashboard.md)."""
    document = state.stats_document()
    settings = state.settings
    for name in ("recent_errors", "recent_client_errors"):
        document[name] = with_trace_urls(document[name], settings.trace_url_template)
    endpoints = app_endpoints(rules, BLUEPRINT_NAME, settings.max_attribute_length)
    document.update(endpoints_section(endpoints, document["routes"], document["max_routes"]))
    return document


def build_blueprint(clock: Callable[[], float] = time.time) -> Blueprint:
    """A fresh blueprint per app (each app mounts it at its own ``url_prefix``); ``clock`` (Unix
    seconds) times its login sessions."""
    access = DashboardAccess(clock)
    blueprint = Blueprint(
        BLUEPRINT_NAME,
        __name__,
        template_folder=str(_HERE / "templates"),
        static_folder=str(_HERE / "static"),
        static_url_path="/static",
    )

    @blueprint.before_request
    def guard() -> Any:
        state = _state()
        if _is_login_resource(state.settings.access_token):
            return None  # the sign-in page and its stylesheet hold no data (without a token: 404)
        try:
            denial = access.check(state.settings, request)
        except Exception:  # a failing access_check denies; it never opens the data
            state.failures.report("access_check")
            denial = Denial(403, "forbidden", challenge=False)
        if denial is None:
            return None
        if denial.challenge and _browser_page_load():
            return redirect(url_for(f"{BLUEPRINT_NAME}.login"), code=303)
        response = jsonify(error=denial.message)
        response.status_code = denial.status
        if denial.challenge:
            response.headers["WWW-Authenticate"] = 'Bearer realm="otel-flask-monitor"'
        if denial.retry_after is not None:
            response.headers["Retry-After"] = str(denial.retry_after)
        return response

    @blueprint.after_request
    def secure_headers(response: Response) -> Response:
        login_page = request.endpoint in _LOGIN_ENDPOINTS
        response.headers["Content-Security-Policy"] = (
            LOGIN_CONTENT_SECURITY_POLICY if login_page else CONTENT_SECURITY_POLICY
        )
        response.headers["X-Content-Type-Options"] = "nosniff"
        # Never leaves this origin, and tells the sign-in and sign-out checks where a form came from.
        response.headers["Referrer-Policy"] = "same-origin"
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
            merges_workers=state.settings.multiprocess_dir is not None,
            logout_url=(
                url_for(f"{BLUEPRINT_NAME}.logout")
                if access.session(state.settings, request) is not None
                else None
            ),
        )

    @blueprint.get("/health")
    def health() -> Response:
        return jsonify(health_document(_state(), PROCESS.system_metrics.sampler.latest))

    @blueprint.get("/stats")
    def stats() -> Response:
        return jsonify(answers_document(_state(), current_app.url_map.iter_rules()))

    @blueprint.get("/stats/route")
    def route_stats() -> Response:
        method, route = request.args.get("method"), request.args.get("route")
        if not method or not route:
            return _json_error(400, "give the route as ?method=GET&route=/items/<int:item_id> (its template)")
        state = _state()
        detail = state.route_detail(method, route)
        if detail is None:
            return _json_error(404, "no request of this method and route in the window")
        detail["slowest"] = with_trace_urls(detail["slowest"], state.settings.trace_url_template)
        return jsonify(detail)

    register_login_routes(blueprint, BLUEPRINT_NAME, access)
    return blueprint


def _json_error(status: int, message: str) -> Response:
    response = jsonify(error=message)
    response.status_code = status
    return response


def _is_login_resource(token: str | None) -> bool:
    if request.endpoint in _LOGIN_ENDPOINTS:
        return True
    view_args = request.view_args or {}
    return (
        bool(token)
        and request.endpoint == f"{BLUEPRINT_NAME}.static"
        and view_args.get("filename") == LOGIN_STYLESHEET
    )


def _browser_page_load() -> bool:
    """A browser opening the page without credentials: send it to the sign-in form, not JSON."""
    return (
        request.method == "GET"
        and request.endpoint in (f"{BLUEPRINT_NAME}.dashboard", f"{BLUEPRINT_NAME}.index")
        and "Authorization" not in request.headers
        and any(value == "text/html" for value, _ in request.accept_mimetypes)
    )
