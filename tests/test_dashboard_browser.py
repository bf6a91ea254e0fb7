"""The dashboard in a real browser: headless Debian chromium driven by Playwright (tests/support/browser.py),
against a real server on 127.0.0.1. Required in CI: a missing chromium fails this test, it never skips.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from playwright.sync_api import expect
from werkzeug.serving import BaseWSGIServer

from otel_flask_monitor import FlaskMonitor
from tests.support.browser import (
    ARTIFACTS,
    DEADLINE_MS,
    ITEM_ROUTE,
    PageWatch,
    chromium,
    hit,
    route_cell,
    serving,
)

XSS_PATH = "/<script>alert(1)</script>"
XSS_USER_AGENT = '<img src=x onerror="alert(2)">evil-agent'

pytestmark = pytest.mark.slow


SLOW_ITEM = 99
SLOW_MS = 80


def browser_app(**options: Any) -> Flask:
    """The shop the browser tests open; ``options`` go to the monitor."""
    app = Flask("browser-shop")

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> Any:
        if item_id == SLOW_ITEM:
            time.sleep(SLOW_MS / 1000)  # the slowest request, whatever the machine's load
        return {"id": item_id}

    @app.get("/echo/<path:rest>")
    def echo(rest: str) -> Any:
        return {"rest": rest}, 418

    @app.post("/orders")
    def order() -> Any:
        return {"ok": True}, 201

    @app.get("/boom")
    def boom() -> Any:
        raise RuntimeError("kaboom")

    FlaskMonitor(app, **options)
    return app


@pytest.fixture
def server() -> Iterator[BaseWSGIServer]:
    with serving(browser_app()) as http_server:
        yield http_server


def test_dashboard_in_chromium(server: BaseWSGIServer) -> None:
    for item_id in range(3):
        assert hit(server, "GET", f"/items/{item_id}") == 200
    assert hit(server, "POST", "/orders") == 201
    assert hit(server, "GET", "/boom") == 500
    assert hit(server, "GET", "/%3Cscript%3Ealert(1)%3C/script%3E", user_agent=XSS_USER_AGENT) == 404

    base = f"http://127.0.0.1:{server.port}"

    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        watch = PageWatch(page)
        response = page.goto(base + "/monitoring/dashboard")
        assert response is not None
        assert response.status == 200
        assert "script-src 'self'" in response.headers["content-security-policy"]

        # The routes just hit appear with their counts.
        expect(route_cell(page, ITEM_ROUTE, "requests")).to_have_text("3")
        expect(route_cell(page, "/orders", "requests")).to_have_text("1")
        expect(route_cell(page, "/boom", "requests")).to_have_text("1")
        expect(page.locator("#total-requests")).to_have_text("6")
        expect(page.locator("#system-pid")).to_have_text(str(os.getpid()))
        expect(page.locator("#server-error-rows")).to_contain_text("RuntimeError")
        expect(page.locator("#chart svg rect.bar-requests").first).to_be_visible()

        # Hostile text is shown as text: visible, and nothing executed.
        client_errors = page.locator("#client-error-rows")
        expect(client_errors).to_contain_text(XSS_PATH)
        expect(client_errors).to_contain_text(XSS_USER_AGENT)
        assert page.locator("main script, main img").count() == 0
        assert page.locator("script").count() == 1

        # More traffic: the numbers change on the next refresh.
        for item_id in range(4):
            assert hit(server, "GET", f"/items/{item_id}") == 200
        expect(route_cell(page, ITEM_ROUTE, "requests")).to_have_text("7")  # the next 5 s refresh
        expect(page.locator("#total-requests")).to_have_text("10")

        # Sorting by a column header reorders the table.
        page.locator('#routes-table th[data-key="route"] button').click()
        expect(page.locator("#routes-rows tr").first).to_have_attribute("data-route", "/boom")

        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
        page.set_viewport_size({"width": 390, "height": 844})
        # The chart redraws for the new width after a debounce.
        page.wait_for_function(
            "() => document.querySelector('#chart svg').getBoundingClientRect().width <= 390",
            timeout=DEADLINE_MS,
        )
        page_width = page.evaluate("document.documentElement.scrollWidth")
        assert page_width <= 390, f"the page scrolls sideways at phone width ({page_width} px)"
        page.screenshot(path=str(ARTIFACTS / "dashboard-phone.png"), full_page=True)

    watch.assert_quiet()
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000
