"""Browser login for the monitoring routes: ``<prefix>/login`` and ``<prefix>/logout``.

A browser cannot add ``Authorization: Bearer`` to a page load, so with ``access_token`` set a
non-loopback person signs in once with the token through a plain HTML form and receives a signed,
expiring session cookie (:func:`~otel_flask_monitor.dashboard.access.issue_session`), never the token
itself. Without ``access_token`` both routes answer 404. Failed attempts are rate-limited per client
address.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from flask import Blueprint, abort, current_app, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from otel_flask_monitor.dashboard.access import (
    SESSION_COOKIE,
    LoginRateLimiter,
    client_address,
    issue_session,
    token_matches,
)

if TYPE_CHECKING:
    from otel_flask_monitor.config import MonitorSettings

LOGIN_ENDPOINTS: Final = frozenset({"login", "login_submit", "logout"})
"""Endpoints (without the blueprint name) that answer without access: they hold no data."""
LOGIN_STYLESHEET: Final = "login.css"
"""The one static file the login page needs, served without access when a token is configured."""

_TEMPLATE: Final = "otel_flask_monitor/login.html"
_FAILED: Final = "Sign-in failed."
_CROSS_SITE: Final = "Sign-in must be submitted from this page."


def _settings() -> MonitorSettings:
    from otel_flask_monitor.extension import get_state

    return get_state(current_app).settings


def _configured_token() -> str:
    token = _settings().access_token
    if not token:
        abort(404)
    return token


def _cookie_path() -> str:
    return request.script_root + _settings().url_prefix


def _form(status: int, message: str | None = None) -> Response:
    response = current_app.make_response(
        render_template(_TEMPLATE, app_name=current_app.name, message=message)
    )
    response.status_code = status
    return response


def register_login_routes(blueprint: Blueprint, endpoint_prefix: str) -> None:
    """Add ``/login`` and ``/logout`` to the monitoring blueprint, with a limiter of their own."""
    limiter = LoginRateLimiter()

    @blueprint.get("/login")
    def login() -> Response:
        _configured_token()
        return _form(200)

    @blueprint.post("/login")
    def login_submit() -> Response:
        token = _configured_token()
        # A page on another site could make its visitors' browsers guess for it.
        if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
            return _form(403, _CROSS_SITE)
        client = client_address(request)
        retry_after = limiter.retry_after(client)
        if retry_after is not None:
            response = _form(429, f"Too many failed attempts. Try again in {retry_after} s.")
            response.headers["Retry-After"] = str(retry_after)
            return response
        supplied = request.form.get("token", "").strip()
        if not supplied or not token_matches(supplied, token):
            limiter.failure(client)
            response = _form(401, _FAILED)
            response.headers["WWW-Authenticate"] = 'Bearer realm="otel-flask-monitor"'
            return response
        limiter.success(client)
        max_age = _settings().login_session_seconds
        response = redirect(url_for(f"{endpoint_prefix}.dashboard"), code=303)
        response.set_cookie(
            SESSION_COOKIE,
            issue_session(token, max_age),
            max_age=max_age,
            path=_cookie_path(),
            secure=request.is_secure,
            httponly=True,
            samesite="Strict",
        )
        return response

    @blueprint.route("/logout", methods=["GET", "POST"])
    def logout() -> Response:
        _configured_token()
        response = redirect(url_for(f"{endpoint_prefix}.login"), code=303)
        response.delete_cookie(
            SESSION_COOKIE,
            path=_cookie_path(),
            secure=request.is_secure,
            httponly=True,
            samesite="Strict",
        )
        return response
