"""A remote person opens the dashboard in a real browser through the sign-in form.

Headless Debian chromium (Playwright) against a server on 127.0.0.1; a small WSGI middleware makes
the app see every request as coming from 203.0.113.7, so loopback access does not apply and only the
token (typed into the form) opens the dashboard. Required in CI: a missing chromium fails, never skips.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import pytest
from flask import Flask
from playwright.sync_api import ConsoleMessage, Page, expect
from werkzeug.serving import BaseWSGIServer

from otel_flask_monitor import FlaskMonitor
from otel_flask_monitor.dashboard.sessions import SESSION_COOKIE
from tests.support.browser import ARTIFACTS, ITEM_ROUTE, chromium, hit, route_cell, serving

TOKEN = "browser-login-token-4hQ9sV2w"
FAKE_REMOTE_ADDR = "203.0.113.7"

pytestmark = pytest.mark.slow


class AsRemoteClient:
    """WSGI middleware: the app sees a non-loopback peer (no traffic leaves 127.0.0.1)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        environ["REMOTE_ADDR"] = FAKE_REMOTE_ADDR
        result: Iterable[bytes] = self.app(environ, start_response)
        return result


def login_app() -> Flask:
    app = Flask("login-browser-shop")

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> Any:
        return {"id": item_id}

    FlaskMonitor(app, access_token=TOKEN)
    app.wsgi_app = AsRemoteClient(app.wsgi_app)  # type: ignore[method-assign]
    return app


@pytest.fixture
def server() -> Iterator[BaseWSGIServer]:
    with serving(login_app()) as http_server:
        yield http_server


def submit_token(page: Page, token: str) -> None:
    page.locator("#token").fill(token)
    with page.expect_navigation():
        page.locator("button[type=submit]").click()


def test_remote_browser_signs_in_sees_the_dashboard_and_signs_out(server: BaseWSGIServer) -> None:
    for item_id in range(3):
        assert hit(server, "GET", f"/items/{item_id}") == 200
    assert hit(server, "GET", "/monitoring/stats") == 401  # the middleware works: we look remote

    base = f"http://127.0.0.1:{server.port}"
    console_errors: list[str] = []
    page_errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        # The deliberate 401 of a wrong token is logged by chromium as a failed resource load.
        if message.type == "error" and "status of 401" not in message.text:
            console_errors.append(message.text)

    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.on("console", on_console)
        page.on("pageerror", lambda error: page_errors.append(str(error)))

        # Opening the dashboard lands on the sign-in form.
        response = page.goto(base + "/monitoring/dashboard")
        assert response is not None
        assert response.status == 200
        assert page.url == base + "/monitoring/login"
        assert "form-action 'self'" in response.headers["content-security-policy"]
        expect(page.locator("#token")).to_be_visible()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-login.png"))

        # A wrong token: the form again, a generic message, no cookie.
        submit_token(page, "not-the-token")
        assert page.url == base + "/monitoring/login"
        expect(page.locator("#login-error")).to_have_text("Sign-in failed.")
        assert context.cookies() == []

        # The right token: the dashboard, filled from /stats and /health by its script.
        submit_token(page, TOKEN)
        assert page.url == base + "/monitoring/dashboard"
        expect(route_cell(page, ITEM_ROUTE, "requests")).to_have_text("3")
        expect(page.locator("#status-pill")).not_to_have_text("loading")
        expect(page.locator("#fetch-error")).to_be_hidden()
        (cookie,) = context.cookies()
        assert cookie["name"] == SESSION_COOKIE
        assert cookie["httpOnly"] is True
        assert cookie["sameSite"] == "Strict"
        assert cookie["path"] == "/monitoring"
        assert TOKEN not in cookie["value"]
        assert page.evaluate("document.cookie") == ""  # HttpOnly: scripts cannot read it
        assert TOKEN not in page.content()

        # Log out: back to the form, and the dashboard is closed again.
        with page.expect_navigation():
            page.locator("#logout").click()
        assert page.url == base + "/monitoring/login"
        assert context.cookies() == []
        page.goto(base + "/monitoring/dashboard")
        assert page.url == base + "/monitoring/login"

    assert page_errors == []
    assert console_errors == [], console_errors  # includes Content-Security-Policy violations
