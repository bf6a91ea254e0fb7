"""The dashboard's answers in a real browser (headless Debian chromium, tests/browser.py): the endpoints
nobody called, and trace ids that link to the trace viewer (``trace_url_template``). Markup in a URL
rule or an exception's name stays text. Required in CI: a missing chromium fails, it never skips.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from opentelemetry.trace import format_trace_id
from playwright.sync_api import Route, expect
from werkzeug.serving import BaseWSGIServer

from tests.conftest import Exported
from tests.support.browser import ARTIFACTS, PageWatch, chromium, hit, serving
from tests.test_endpoints import shop

TRACE_URL_TEMPLATE = "https://traces.example/explore?left=%7B%22query%22%3A%22{trace_id}%22%7D&orgId=1"
# URL rules whose template is markup (a converter's argument may hold any text).
CALLED_MARKUP_RULE = '/tags/<any("<img src=x onerror=alert(1)>",plain):tag>'
UNCALLED_MARKUP_RULE = '/labels/<any("<script>alert(2)</script>",plain):label>'
MarkupError = type("<img src=x onerror=alert(3)>", (RuntimeError,), {})

pytestmark = pytest.mark.slow


def answers_app() -> Flask:
    """The endpoint tests' shop with trace links, and two URL rules whose templates are markup."""
    app = shop(trace_url_template=TRACE_URL_TEMPLATE)

    def tag(tag: str) -> Any:
        raise MarkupError("<b>not bold</b>")

    def label(label: str) -> Any:
        return {"label": label}

    app.add_url_rule(CALLED_MARKUP_RULE, view_func=tag)
    app.add_url_rule(UNCALLED_MARKUP_RULE, view_func=label)
    return app


@pytest.fixture
def server() -> Iterator[BaseWSGIServer]:
    with serving(answers_app()) as http_server:
        yield http_server


def test_unused_endpoints_and_trace_links_in_chromium(server: BaseWSGIServer, exported: Exported) -> None:
    assert hit(server, "GET", "/items/1") == 200
    assert hit(server, "HEAD", "/items/2") == 200
    assert hit(server, "GET", "/tags/plain") == 500
    (error_span,) = [
        s for s in exported.server_spans() if (s.attributes or {}).get("http.route") == CALLED_MARKUP_RULE
    ]
    trace_id = format_trace_id(error_span.context.trace_id)
    expected_link = TRACE_URL_TEMPLATE.replace("{trace_id}", trace_id)

    opened: list[str] = []

    def trace_viewer(route: Route) -> None:  # the link is followed here, never to the internet
        opened.append(route.request.url)
        route.fulfill(status=200, content_type="text/html", body="<title>trace</title>trace viewer")

    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.route("https://traces.example/**", trace_viewer)
        page = context.new_page()
        watch = PageWatch(page)
        page.goto(f"http://127.0.0.1:{server.port}/monitoring/dashboard")

        # The endpoints nobody called, with their methods; the called ones, the monitor's own routes,
        # static files and the HEAD/OPTIONS Flask adds by itself are not among them.
        expect(page.locator("#unused-summary")).to_contain_text("6 of 8 endpoints")
        unused = page.eval_on_selector_all(
            "#unused-rows tr",
            "rows => rows.map(r => [r.getAttribute('data-method'), r.querySelector('td.route').textContent])",
        )
        assert sorted(map(tuple, unused)) == [
            ("DELETE", "/items/<int:item_id>"),
            ("GET", "/admin/users"),
            ("GET", UNCALLED_MARKUP_RULE),
            ("OPTIONS", "/cors"),
            ("POST", "/orders"),
            ("PURGE", "/cache"),
        ]

        # The markup rule that was called is a row of the routes table, as text.
        routes = page.eval_on_selector_all("#routes-rows td.route", "cells => cells.map(c => c.textContent)")
        assert CALLED_MARKUP_RULE in routes

        # The error's trace id links to the template filled with it, in a new tab without an opener.
        link = page.locator("#server-error-rows td.trace-id a")
        expect(link).to_have_text(trace_id)
        expect(link).to_have_attribute("href", expected_link)
        expect(link).to_have_attribute("rel", "noopener noreferrer")
        expect(link).to_have_attribute("target", "_blank")
        expect(page.locator("#server-error-rows")).to_contain_text(MarkupError.__qualname__)
        with context.expect_page() as popup_info:
            link.click()
        popup = popup_info.value
        popup.wait_for_load_state()
        assert popup.url == expected_link
        assert popup.evaluate("window.opener") is None
        assert opened == [expected_link]

        assert page.locator("main script, main img").count() == 0
        assert page.locator("script").count() == 1
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-answers.png"), full_page=True)
        context.close()

    watch.assert_quiet()
