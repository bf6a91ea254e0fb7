"""Another website cannot read the monitoring routes through the operator's browser (#16 hole 5).

Headless Debian chromium (Playwright) against a monitored app on 127.0.0.1, the app using
``flask_cors.CORS(app)``. Chromium's ``--host-resolver-rules`` maps two made-up names to 127.0.0.1;
their pages are handed to the browser by Playwright (the attacker's own server in real life):

- DNS rebinding: a page on ``http://rebind.test:<app port>`` is same-origin with the app for the
  browser, so its script may read whatever the app answers. The app refuses its Host name.
  Chromium's own Local Network Access checks (which block a public page's requests to loopback in
  recent versions) are switched off: Firefox and Safari have none, so the app cannot rely on them.
- CORS: a page on ``http://attacker.test`` fetches ``http://127.0.0.1:<port>/monitoring/stats``; the
  monitoring routes carry no CORS headers, so the browser does not let the script read the answer.

Each case has a control proving the page reaches the app. Required in CI: never skips.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask_cors import CORS
from playwright.sync_api import Page, Route
from werkzeug.serving import BaseWSGIServer

from otel_flask_monitor import FlaskMonitor
from tests.support.browser import CHROMIUM_ARGS, chromium, serving

pytestmark = pytest.mark.slow

REBIND_NAME = "rebind.test"
ATTACKER_NAME = "attacker.test"
ATTACKER_PAGE = "<!doctype html><title>cat pictures</title><p>nothing to see</p>"

READ = """async (url) => {
  try {
    const response = await fetch(url, {credentials: "include"});
    return {status: response.status, body: await response.text()};
  } catch (error) {
    return {error: String(error)};
  }
}"""


def cors_shop() -> Flask:
    app = Flask("rebinding-shop")

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> Any:
        return {"id": item_id, "marker": "app-data"}

    # The app lets any origin read it, with cookies: the monitoring routes must not follow it.
    CORS(app, supports_credentials=True)
    FlaskMonitor(app)
    return app


@pytest.fixture
def server() -> Iterator[BaseWSGIServer]:
    with serving(cors_shop()) as http_server:
        yield http_server


def attacker_page(page: Page, origin: str) -> None:
    """Open ``origin`` with the attacker's page, served by Playwright instead of a real server."""

    def fulfil(route: Route) -> None:
        route.fulfill(status=200, content_type="text/html", body=ATTACKER_PAGE)

    page.route(f"{origin}/", fulfil)
    page.goto(f"{origin}/")
    assert page.title() == "cat pictures"


def test_pages_of_other_sites_cannot_read_the_monitoring_routes(server: BaseWSGIServer) -> None:
    port = server.port
    resolver_rules = f"--host-resolver-rules=MAP {REBIND_NAME} 127.0.0.1, MAP {ATTACKER_NAME} 127.0.0.1"
    no_local_network_checks = "--disable-features=LocalNetworkAccessChecks"
    with chromium(args=[*CHROMIUM_ARGS, resolver_rules, no_local_network_checks]) as browser:
        context = browser.new_context()
        page = context.new_page()

        # The operator's own tab: loopback name, loopback peer -> the data.
        page.goto(f"http://127.0.0.1:{port}/monitoring/dashboard")
        own = page.evaluate(READ, "/monitoring/stats")
        assert own.get("status") == 200, own
        assert '"routes"' in own["body"]

        # DNS rebinding: same origin as far as the browser knows, and the request reaches the app...
        attacker_page(page, f"http://{REBIND_NAME}:{port}")
        control = page.evaluate(READ, "/items/1")
        assert control.get("status") == 200, control
        assert "app-data" in control["body"]
        # ...but the monitoring routes refuse the name.
        for path in ("/monitoring/stats", "/monitoring/health", "/monitoring/dashboard"):
            stolen = page.evaluate(READ, path)
            assert stolen.get("status") == 403, (path, stolen)
            assert '"routes"' not in stolen["body"]
            assert "system_metrics" not in stolen["body"]

        # CORS: another origin may read the app's routes (the app allows it)...
        attacker_page(page, f"http://{ATTACKER_NAME}")
        control = page.evaluate(READ, f"http://127.0.0.1:{port}/items/1")
        assert control.get("status") == 200, control
        # ...but never the monitoring routes: no CORS headers, the browser withholds the answer.
        for path in ("/monitoring/stats", "/monitoring/health"):
            stolen = page.evaluate(READ, f"http://127.0.0.1:{port}{path}")
            assert "error" in stolen, (path, stolen)
            assert "TypeError" in stolen["error"]
        context.close()
