"""opentelemetry-instrumentation-flask's own test suite, unmodified, with the monitor attached to
every app it builds (issue 15).

The sdist of the installed instrumentation brings its ``tests/``. They run without the monitor
(which must be green), then with ``FlaskMonitor(app, instrument_flask=False, setup_telemetry=False,
dashboard_enabled=False)`` attached right after ``Flask.__init__`` (before the instrumentation) and
right after ``instrument_app`` / the instrumented ``Flask``'s ``__init__`` (after it). Each monitored
run may fail only the tests tests/compat/differences.py lists, and each of those must pass in the
run's twin with the intended differences switched off, so a listed test cannot hide a defect.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.compat.differences import INSTRUMENTATION_EXPECTED_FAILURES
from tests.compat.upstream import (
    REPORTS,
    Outcome,
    Overlay,
    Run,
    compare,
    describe,
    installed_version,
    is_wall_clock_failure,
    run_all,
    upstream_source,
)

pytestmark = pytest.mark.slow

DISTRIBUTION = "opentelemetry-instrumentation-flask"
# The instrumentation's test tools as its repository pins them for Flask >= 3.1:
# open-telemetry/opentelemetry-python-contrib,
# instrumentation/opentelemetry-instrumentation-flask/test-requirements-3.txt (pytest==7.4.4,
# asgiref==3.8.1); opentelemetry-test-utils comes from the core repository at the same release.
TEST_TOOLS = ("pytest==7.4.4", "asgiref==3.8.1")
# enrich_spans is opt-in; switched on here so the suite sees every change the monitor can make to
# the instrumentation's span (with the default, only the unmatched-route name differs).
OPTIONS: dict[str, Any] = {
    "instrument_flask": False,
    "setup_telemetry": False,
    "dashboard_enabled": False,
    "enrich_spans": True,
}
ATTACH = {"before": "after-flask-init", "after": "after-instrumentation"}
UNMONITORED = "instrumentation, unmonitored"


def _name(order: str, intended_off: bool = False) -> str:
    twin = ", intended differences off" if intended_off else ""
    return f"instrumentation, monitor {order} instrumenting{twin}"


@pytest.fixture(scope="module")
def instrumentation_outcomes() -> dict[str, Outcome]:
    started = time.monotonic()
    version = installed_version(DISTRIBUTION)
    source = upstream_source(DISTRIBUTION, version)
    python = Overlay(
        f"otel-flask-{version}", TEST_TOOLS, no_deps=(f"opentelemetry-test-utils=={version}",)
    ).ensure()
    args = ("-c", "pyproject.toml", "--rootdir", ".", "tests")
    runs = [Run(UNMONITORED, python, source, args)]
    for order, attach in ATTACH.items():
        runs.append(Run(_name(order), python, source, args, attach, OPTIONS))
        # The JSON 500 and the span additions off; everything else the monitor does still on.
        intended_off = {**OPTIONS, "json_errors": False}
        runs.append(
            Run(
                _name(order, True),
                python,
                source,
                args,
                attach,
                intended_off,
                {"OFM_COMPAT_INTENDED_OFF": "1"},
            )
        )
    outcomes = run_all(runs)
    expected = {_name(order): INSTRUMENTATION_EXPECTED_FAILURES for order in ATTACH}
    REPORTS.append(
        describe(f"{DISTRIBUTION} {version}", outcomes, [UNMONITORED], expected, time.monotonic() - started)
    )
    return outcomes


def test_the_unmonitored_suite_is_green(instrumentation_outcomes: dict[str, Outcome]) -> None:
    baseline = instrumentation_outcomes[UNMONITORED]
    assert baseline.passed
    failed = {
        test: message for test, message in baseline.failed.items() if not is_wall_clock_failure(test, message)
    }
    assert not failed, f"the instrumentation's suite fails without the monitor: {failed}"


@pytest.mark.parametrize("order", ATTACH)
def test_every_failure_with_the_monitor_is_an_intended_difference(
    instrumentation_outcomes: dict[str, Outcome], order: str
) -> None:
    baseline = instrumentation_outcomes[UNMONITORED]
    twin = instrumentation_outcomes[_name(order, True)]
    problems = compare(
        instrumentation_outcomes[_name(order)], baseline, INSTRUMENTATION_EXPECTED_FAILURES, twin
    )
    # The twin itself: with the intended differences off, nothing may fail.
    problems += compare(twin, baseline, {})
    assert not problems, "\n".join(problems)
