"""Prints what the upstream suites reported, also when the harness passes (docs/compatibility.md)."""

from __future__ import annotations

import pytest

from tests.compat.upstream import REPORTS


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if REPORTS:
        terminalreporter.section("upstream compatibility suites")
        for report in REPORTS:
            terminalreporter.write_line(report)
