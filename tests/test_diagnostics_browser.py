"""The demo's first screen with no Collector, in a real browser: calm, and saying why (headless Debian
chromium driven by Playwright, tests/support/browser.py). Required in CI: a missing chromium fails,
never skips.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from playwright.sync_api import ConsoleMessage, expect

from tests.support.browser import ARTIFACTS, chromium
from tests.support.real_processes import REPO, free_port, stop_process, wait_for_port

# The dashboard refreshes every 5 s; the first render follows the page load.
RENDER_TIMEOUT_MS = 12_000

pytestmark = pytest.mark.slow


@pytest.fixture
def demo_without_collector() -> Iterator[tuple[int, int]]:
    """``python -m otel_flask_monitor.demo --traffic`` with nothing listening where telemetry goes."""
    port, closed_port = free_port(), free_port()
    env = {name: value for name, value in os.environ.items() if not name.startswith("OTEL_")}
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{closed_port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "otel_flask_monitor.demo", "--port", str(port), "--traffic", "60"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process, "the demo", lambda: "")
        yield port, closed_port
    finally:
        stop_process(process, timeout=15)


def test_no_collector_is_shown_calmly_with_the_diagnostics_panel(
    demo_without_collector: tuple[int, int],
) -> None:
    port, closed_port = demo_without_collector
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":  # CSP violations and script errors land here
            problems.append(message.text)

    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.on("console", on_console)
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.goto(f"http://127.0.0.1:{port}/monitoring/dashboard")

        pill = page.locator("#status-pill")
        expect(pill).to_have_text("not connected", timeout=RENDER_TIMEOUT_MS)
        expect(pill).to_have_class("pill pill-neutral")
        summary = page.locator("#export-summary")
        expect(summary).to_have_class("note-neutral")
        expect(summary).to_contain_text(f"no Collector has answered at http://127.0.0.1:{closed_port}")
        expect(page.locator("#export-card")).to_have_class("card")
        expect(page.locator("#export-card .error-text:visible")).to_have_count(0)  # nothing red
        expect(page.locator("#export-rows td", has_text="not connected")).to_have_count(3)
        # The exporter's message is there, one click away, not shouted.
        expect(page.locator("#export-error")).to_be_hidden()
        expect(page.locator("#export-detail")).to_be_visible()
        expect(page.locator("#export-detail-text")).to_be_hidden()
        expect(page.locator("#export-detail-text")).to_contain_text("nothing accepts connections")

        entry = page.locator('#diagnostics-list li[data-code="collector_not_reached"]')
        expect(entry).to_have_class("diagnostic diagnostic-info")
        expect(entry.locator(".diagnostic-message")).to_contain_text(
            "the dashboard, /monitoring/health and /monitoring/stats work without one"
        )
        expect(entry.locator(".diagnostic-fix")).to_contain_text("docker compose up")
        # The built-in traffic made the page alive: requests counted, no "no requests seen".
        expect(page.locator('#diagnostics-list li[data-code="no_requests_seen"]')).to_have_count(
            0, timeout=RENDER_TIMEOUT_MS
        )
        expect(page.locator("#routes-rows tr[data-route]").first).to_be_visible()
        expect(page.locator("#diagnostics-empty")).to_be_hidden()

        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-not-connected.png"), full_page=True)

    assert problems == []
