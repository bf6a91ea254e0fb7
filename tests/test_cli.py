"""``python -m otel_flask_monitor rules|validate`` on a real app module (tests/support/objective_app.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Final

import pytest
import yaml

from otel_flask_monitor.alert_rules import ALERT_NAME
from otel_flask_monitor.cli import main
from tests.support import promtool

REPO: Final = Path(__file__).resolve().parent.parent
FACTORY: Final = "tests.support.objective_app:create_app()"


@pytest.fixture(autouse=True)
def _quiet_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    # The CLI sets it for the process it runs in; here that is the test process: restore it after.
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)


def alerts(text: str) -> dict[tuple[str, str], dict[str, Any]]:
    """(route, objective) -> the page rule, from a rule file's text."""
    document = yaml.safe_load(text)
    return {
        (rule["labels"]["http_route"], rule["labels"]["objective"]): rule
        for group in document["groups"]
        for rule in group["rules"]
        if rule.get("alert") == ALERT_NAME and rule["labels"]["severity"] == "page"
    }


def test_rules_for_an_app_factory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "rules.yml"
    assert main(["rules", "--app", FACTORY, "-o", str(output)]) == 0
    promtool.check_rules(output)
    text = output.read_text(encoding="utf-8")
    found = alerts(text)
    # The blueprint registered after init_app and its decorator count; the monitor's own routes and
    # Flask's static route get no objective.
    assert set(found) == {
        ("/api/items", "latency"),
        ("/api/items", "availability"),
        ("/api/payments/charge", "availability"),
    }
    assert found[("/api/payments/charge", "availability")]["labels"]["objective_target"] == "0.9999"
    assert found[("/api/payments/charge", "availability")]["labels"]["objective_source"] == "@objective"
    assert 'http_request_method=~"POST"' not in found[("/api/items", "latency")]["expr"]
    # The service is the one the monitor exports as: here the app's name.
    assert 'service_name="inventory"' in text
    assert "--min-requests" not in text.splitlines()[1]
    assert capsys.readouterr().err == ""


def test_service_name_and_min_requests(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "stock")
    assert main(["rules", "--app", "tests.support.objective_app:app", "--min-requests", "0"]) == 0
    text = capsys.readouterr().out
    assert 'service_name="stock"' in text
    assert "* 3600 >=" not in text, "no request-count guard with --min-requests 0"
    assert (
        main(
            ["rules", "--app", "tests.support.objective_app", "--service-name", "x", "--service-label", "job"]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert 'job="x"' in text
    assert "sum by (job, http_route" in text
    assert "service_name" not in text


def test_check_reports_drift(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    current = tmp_path / "rules.yml"
    assert main(["rules", "--app", FACTORY, "-o", str(current)]) == 0
    assert main(["rules", "--app", FACTORY, "--check", str(current)]) == 0
    current.write_text(
        current.read_text(encoding="utf-8").replace("vector(0.99)", "vector(0.95)"), encoding="utf-8"
    )
    capsys.readouterr()
    assert main(["rules", "--app", FACTORY, "--check", str(current)]) == 1
    captured = capsys.readouterr()
    assert "-    expr: vector(0.95)" in captured.out.splitlines()
    assert "+    expr: vector(0.99)" in captured.out.splitlines()
    assert "differs" in captured.err


def test_validate_lists_objectives_and_fails_on_a_pattern_matching_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["validate", "--app", FACTORY]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert "GET /api/items: latency 99 % of requests within 250 ms (from GET /api/items)" in listed
    assert (
        "POST /api/payments/charge: availability 99.99 % of requests without a server error (from @objective)"
        in listed
    )
    typo = "tests.support.objective_app:create_app({'/api/itmes': {'availability': 99}})"
    assert main(["validate", "--app", typo]) == 1
    assert "objective pattern '/api/itmes' matches no route of app 'inventory'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (
            "tests.support.objective_app:create_app({'/api/items': {'availability': 150}})",
            "entry '/api/items': availability target: a percentage between 1 and 100",
        ),
        ("tests.no_such_module:app", "Could not import 'tests.no_such_module'"),
        ("tests.support.objective_app:nothing", "Failed to find attribute 'nothing'"),
    ],
)
def test_bad_apps_and_objectives_exit_2_with_a_message(
    target: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["rules", "--app", target]) == 2
    assert message in capsys.readouterr().err


def test_python_dash_m_entry_point() -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    result = subprocess.run(
        [sys.executable, "-m", "otel_flask_monitor", "rules", "--app", "tests.support.objective_app:app"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(
        "# Prometheus rules for the objectives of tests.support.objective_app:app"
    )
    assert set(alerts(result.stdout)) == {
        ("/api/items", "latency"),
        ("/api/items", "availability"),
        ("/api/payments/charge", "availability"),
    }
