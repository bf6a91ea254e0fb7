"""Browser login for the monitoring routes: ``<prefix>/login`` and ``<prefix>/logout``.

A browser cannot add ``Authorization: Bearer`` to a page load, so with ``access_token`` set a
non-loopback person signs in once with the token through a plain HTML form and receives a signed,
expiring session cookie (:func:`~otel_flask_monitor.dashboard.sessions.issue_session`), never the token
itself; ``POST /logout`` deletes and revokes it. Without ``access_token`` both routes answer 404.
Wrong tokens count against the same per-address budget as wrong bearer tokens, and both forms refuse
posts another site made the browser send.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import urlsplit

from flask import Blueprint, Request, abort, current_app, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from otel_flask_monitor.config import MonitorSettings
from otel_flask_monitor.dashboard.access import DashboardAccess, token_matches
from otel_flask_monitor.dashboard.sessions import SESSION_COOKIE
from otel_flask_monitor.state import get_state

LOGIN_ENDPOINTS: Final = frozenset({"login", "login_submit", "logout"})
"""Endpoints (without the blueprint name) that answer without access: they hold no data."""
LOGIN_STYLESHEET: Final = "login.css"
"""The one static file the login page needs, served without access when a token is configured."""

_TEMPLATE: Final = "otel_flask_monitor/login.html"
_FAILED: Final = "Sign-in failed."
_CROSS_SITE: Final = "Sign-in must be submitted from this page."
_DEFAULT_PORTS: Final = {"http": "80", "https": "443"}


def _settings() -> MonitorSettings:
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


def _authority(scheme: str, netloc: str) -> str:
    """``host[:port]`` in lower case, the scheme's default port left out (browsers leave it out)."""
    netloc = netloc.lower()
    default = _DEFAULT_PORTS.get(scheme)
    if default and netloc.endswith(":" + default):
        return netloc[: -len(default) - 1]
    return netloc


def _names_this_host(url: str, current: Request) -> bool:
    parts = urlsplit(url)
    host_header = current.environ.get("HTTP_HOST", "")
    if not parts.netloc or not host_header:
        return False  # "Origin: null", a relative or broken URL
    scheme = parts.scheme.lower()
    return _authority(scheme, parts.netloc) == _authority(scheme, host_header)


def is_same_origin_form(current: Request) -> bool:
    """The form was posted by a page of this host, not by another site in the operator's browser.

    ``Sec-Fetch-Site`` when the browser sends it (all current ones do); otherwise the ``Origin``
    header, else the ``Referer`` (the monitor's pages send it to their own origin only), must name
    this host. A request with none of the three comes from no browser's cross-site form: browsers
    send ``Origin`` with every POST. Ports are compared, schemes are not: behind a TLS-terminating
    proxy without ``ProxyFix(x_proto=1)`` the app sees http while the browser posts from https.
    """
    site = current.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site in ("same-origin", "none")
    for header in ("Origin", "Referer"):
        value = current.headers.get(header)
        if value is not None:
            return _names_this_host(value, current)
    return True


def register_login_routes(blueprint: Blueprint, endpoint_prefix: str, access: DashboardAccess) -> None:
    """Add ``/login`` and ``/logout`` to the monitoring blueprint."""

    @blueprint.get("/login")
    def login() -> Response:
        _configured_token()
        return _form(200)

    @blueprint.post("/login")
    def login_submit() -> Response:
        token = _configured_token()
        # A page on another site could make its visitors' browsers guess for it.
        if not is_same_origin_form(request):
            return _form(403, _CROSS_SITE)
        retry_after = access.credentials.retry_after(request)
        if retry_after is not None:
            response = _form(429, f"Too many failed attempts. Try again in {retry_after} s.")
            response.headers["Retry-After"] = str(retry_after)
            return response
        supplied = request.form.get("token", "").strip()
        if not supplied or not token_matches(supplied, token):
            access.credentials.failure(request, "sign-in form")
            response = _form(401, _FAILED)
            response.headers["WWW-Authenticate"] = 'Bearer realm="otel-flask-monitor"'
            return response
        access.credentials.success(request)
        settings = _settings()
        response = redirect(url_for(f"{endpoint_prefix}.dashboard"), code=303)
        response.set_cookie(
            SESSION_COOKIE,
            access.issue(settings),
            max_age=settings.login_session_seconds,
            path=_cookie_path(),
            secure=request.is_secure,
            httponly=True,
            samesite="Strict",
        )
        return response

    @blueprint.post("/logout")
    def logout() -> Response:
        _configured_token()
        # Another site must not be able to sign the operator out either.
        if not is_same_origin_form(request):
            abort(403)
        session = access.session(_settings(), request)
        if session is not None:
            access.revoked.revoke(session)
        response = redirect(url_for(f"{endpoint_prefix}.login"), code=303)
        response.delete_cookie(
            SESSION_COOKIE,
            path=_cookie_path(),
            secure=request.is_secure,
            httponly=True,
            samesite="Strict",
        )
        return response
