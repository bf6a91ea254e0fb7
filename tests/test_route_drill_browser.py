"""The route drill-down and the objectives panel of the dashboard in chromium (tests/support/browser.py),
against a real server on 127.0.0.1. Required in CI: a missing chromium fails this test, it never skips.
"""

from __future__ import annotations

import re

import pytest
from flask import Flask
from playwright.sync_api import expect

from tests.support.browser import ARTIFACTS, ITEM_ROUTE, PageWatch, chromium, hit, serving
from tests.test_dashboard_browser import SLOW_ITEM, browser_app

ECHO_ROUTE = "/echo/<path:rest>"
MARKUP_PATH = '/echo/<img src=x onerror="alert(1)">'
TRACE_URL_TEMPLATE = "https://grafana.example/explore?trace={trace_id}"

pytestmark = pytest.mark.slow


def drill_app() -> Flask:
    return browser_app(
        trace_url_template=TRACE_URL_TEMPLATE,
        objectives={"GET /items/<int:item_id>": {"latency": {"threshold_ms": 60_000, "target": 99}}},
    )


def test_a_route_row_opens_its_drill_down_and_markup_stays_text() -> None:
    with serving(drill_app()) as server, chromium() as browser:
        for item_id in range(4):
            assert hit(server, "GET", f"/items/{item_id}") == 200
        assert hit(server, "GET", f"/items/{SLOW_ITEM}") == 200
        assert hit(server, "GET", "/echo/%3Cimg%20src=x%20onerror=%22alert(1)%22%3E") == 418

        page = browser.new_page(viewport={"width": 1280, "height": 900})
        watch = PageWatch(page)
        page.goto(f"http://127.0.0.1:{server.port}/monitoring/dashboard")

        # The objectives panel shows the declared objective, met by every request.
        objective = page.locator(f'#objective-rows tr[data-route="{ITEM_ROUTE}"]')
        expect(objective).to_contain_text("99 % within")
        expect(objective.locator("td").nth(3)).to_have_text(re.compile(r"^100(\.0)?\s*%$"))

        # A keyboard opens a route's detail: focus its button, press Enter.
        page.locator(f'#routes-rows tr[data-route="{ITEM_ROUTE}"] button.route-open').focus()
        page.keyboard.press("Enter")
        detail = page.locator("#route-detail")
        expect(detail).to_be_visible()
        expect(page.locator("#detail-title")).to_have_text(f"GET {ITEM_ROUTE}")
        expect(page.locator("#detail-state")).to_contain_text("5 requests")
        expect(page.locator("#detail-chart svg rect.bar-requests").first).to_be_visible()
        expect(page.locator("#detail-histogram svg rect.bar-requests").first).to_be_visible()
        expect(page.locator("#detail-status-rows tr").first).to_contain_text("200")
        slowest = page.locator("#detail-slowest-rows tr").first
        expect(slowest).to_contain_text(f"/items/{SLOW_ITEM}")
        trace = slowest.locator("td.trace-id a")
        expect(trace).to_have_text(re.compile(r"^[0-9a-f]{32}$"))
        trace_id = trace.inner_text()
        expect(trace).to_have_attribute("href", f"https://grafana.example/explore?trace={trace_id}")
        expect(trace).to_have_attribute("rel", "noopener noreferrer")

        ARTIFACTS.mkdir(exist_ok=True)
        detail.screenshot(path=str(ARTIFACTS / "route-detail.png"))

        # More traffic: the open detail refreshes with the page.
        assert hit(server, "GET", "/items/5") == 200
        expect(page.locator("#detail-state")).to_contain_text("6 requests")

        # Escape closes it; another route's detail shows its path, with markup, as text.
        page.keyboard.press("Escape")
        expect(detail).to_be_hidden()
        page.locator(f'#routes-rows tr[data-route="{ECHO_ROUTE}"] button.route-open').click()
        expect(page.locator("#detail-title")).to_have_text(f"GET {ECHO_ROUTE}")
        expect(page.locator("#detail-slowest-rows")).to_contain_text(MARKUP_PATH)
        expect(page.locator("#detail-status-rows")).to_contain_text("418")
        assert page.locator("main img, main script").count() == 0

    watch.assert_quiet()
