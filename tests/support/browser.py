"""A Flask app served on 127.0.0.1 and opened in headless chromium (a helper module for the browser
tests, not a test file).

Headless Debian chromium driven by Playwright. Required in CI: a missing chromium fails the test, it
never skips. Every wait is on a condition (``expect``, ``wait_for_function``) with a deadline far above
what it takes on an idle machine: a loaded 2-core box starts chromium and renders slowly, and only a
broken dashboard ever waits the deadline out.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from playwright.sync_api import Browser, ConsoleMessage, Dialog, Page, expect, sync_playwright
from werkzeug.serving import BaseWSGIServer, make_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-proxy-server",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
DEADLINE_MS = 30_000
expect.set_options(timeout=DEADLINE_MS)  # Playwright's default is 5 s
ITEM_ROUTE = "/items/<int:item_id>"


@contextmanager
def serving(app: Flask) -> Iterator[BaseWSGIServer]:
    """``app`` on a threaded server at 127.0.0.1:<free port> for the duration of the block."""
    http_server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=http_server.serve_forever, daemon=True)
    thread.start()
    try:
        yield http_server
    finally:
        http_server.shutdown()
        thread.join(timeout=5)
        http_server.server_close()


def hit(server: BaseWSGIServer, method: str, path: str, user_agent: str = "browser-test") -> int:
    """One request straight to the local server (no proxies, no environment); its status."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.request(method, path, headers={"User-Agent": user_agent})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


class PageWatch:
    """What a page did that the dashboard never should: open a dialog (a script ran), throw, or log an
    error to the console (Content-Security-Policy violations included)."""

    def __init__(self, page: Page) -> None:
        self.dialogs: list[str] = []
        self.page_errors: list[str] = []
        self.console_errors: list[str] = []
        page.on("dialog", self._on_dialog)
        page.on("console", self._on_console)
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))

    def _on_dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console_errors.append(message.text)

    def assert_quiet(self) -> None:
        assert self.dialogs == [], f"a script ran: {self.dialogs}"
        assert self.page_errors == []
        assert self.console_errors == [], self.console_errors


@contextmanager
def chromium(args: list[str] | None = None) -> Iterator[Browser]:
    """Headless chromium, closed at the end of the block; fails (never skips) when it is missing."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: install it with `apt-get install -y chromium` (this test never skips)"
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=args or CHROMIUM_ARGS, timeout=DEADLINE_MS
        )
        try:
            yield browser
        finally:
            browser.close()


def route_cell(page: Page, route: str, column: str) -> Any:
    """A cell of the dashboard's routes table."""
    return page.locator(f'#routes-rows tr[data-route="{route}"] td.{column}')
