"""Flask's own test suite, unmodified, with the monitor attached to every app (issue 18).

The sdist of the installed Flask brings ``tests/`` and the tutorial app with its tests
(``examples/tutorial/tests/``). Each runs once without the monitor, then with the monitor attached
right after every ``Flask.__init__``: with ``json_errors=False``, with ``json_errors=True`` (both
without the dashboard) and with the dashboard mounted. A monitored failure is blamed unless the
unmonitored run fails the same test (a Werkzeug newer than the Flask tests expect, say: reported,
not blamed), or the dashboard run lists it in tests/compat/differences.py.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest
from packaging.markers import Marker

from tests.compat.differences import FLASK_DASHBOARD_EXPECTED_FAILURES
from tests.compat.upstream import (
    REPORTS,
    CompatSetupError,
    Outcome,
    Overlay,
    Run,
    compare,
    describe,
    installed_version,
    run_all,
    upstream_source,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

pytestmark = pytest.mark.slow

NO_DASHBOARD: dict[str, Any] = {"setup_telemetry": False, "dashboard_enabled": False}
MODES: dict[str, tuple[str, dict[str, Any]]] = {
    "unmonitored": ("none", {}),
    "json_errors=False": ("after-flask-init", {**NO_DASHBOARD, "json_errors": False}),
    "json_errors=True": ("after-flask-init", {**NO_DASHBOARD, "json_errors": True}),
    "dashboard": ("after-flask-init", {"setup_telemetry": False, "dashboard_enabled": True}),
}
MONITORED = [mode for mode in MODES if mode != "unmonitored"]
PARTS = {"tests": ".", "tutorial": "examples/tutorial"}


def flask_test_requirements(source: Path) -> tuple[str, ...]:
    """Flask's ``tests`` dependency group at the versions its ``uv.lock`` pins for this Python."""
    lock_file = source / "uv.lock"
    if not lock_file.is_file():
        raise CompatSetupError(f"{source.name} has no uv.lock: cannot pin its test requirements")
    lock = tomllib.loads(lock_file.read_text(encoding="utf-8"))
    packages = lock["package"]
    (flask,) = (p for p in packages if p["name"] == "flask" and "editable" in p.get("source", {}))
    requirements = []
    for entry in flask["dev-dependencies"]["tests"]:
        if "marker" in entry and not Marker(entry["marker"]).evaluate():
            continue
        version = entry.get("version")
        if version is None:
            (version,) = (p["version"] for p in packages if p["name"] == entry["name"])
        requirements.append(f"{entry['name']}=={version}")
    return tuple(requirements)


def _name(part: str, mode: str) -> str:
    return f"flask {part}, {mode}"


@pytest.fixture(scope="module")
def flask_outcomes() -> dict[str, Outcome]:
    started = time.monotonic()
    version = installed_version("flask")
    source = upstream_source("flask", version)
    python = Overlay(f"flask-{version}", flask_test_requirements(source)).ensure()
    runs = [
        Run(
            _name(part, mode),
            python,
            source / folder,
            ("-c", "pyproject.toml", "--rootdir", ".", "tests"),
            attach,
            options,
            {"OFM_COMPAT_PROVIDERS": "1"} if attach != "none" else {},
        )
        for part, folder in PARTS.items()
        for mode, (attach, options) in MODES.items()
    ]
    outcomes = run_all(runs)
    expected = {_name("tests", "dashboard"): FLASK_DASHBOARD_EXPECTED_FAILURES}
    baselines = [_name(part, "unmonitored") for part in PARTS]
    REPORTS.append(describe(f"Flask {version}", outcomes, baselines, expected, time.monotonic() - started))
    return outcomes


@pytest.mark.parametrize("part", PARTS)
def test_the_unmonitored_suite_runs(flask_outcomes: dict[str, Outcome], part: str) -> None:
    """The reference run itself: it must run the suite (its own failures are reported, not blamed)."""
    baseline = flask_outcomes[_name(part, "unmonitored")]
    assert baseline.passed, f"{baseline.run.name}: no test passed ({baseline.summary()})"
    assert baseline.attached == 0


@pytest.mark.parametrize("mode", MONITORED)
@pytest.mark.parametrize("part", PARTS)
def test_every_failure_with_the_monitor_also_happens_without_it(
    flask_outcomes: dict[str, Outcome], part: str, mode: str
) -> None:
    run = flask_outcomes[_name(part, mode)]
    dashboard = mode == "dashboard" and part == "tests"
    problems = compare(
        run,
        flask_outcomes[_name(part, "unmonitored")],
        FLASK_DASHBOARD_EXPECTED_FAILURES if dashboard else {},
        # The dashboard's listed failures must be the dashboard's: gone in the same run without it.
        twin=flask_outcomes[_name(part, "json_errors=True")] if dashboard else None,
    )
    assert not problems, "\n".join(problems)
