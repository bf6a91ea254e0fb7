"""The Prometheus rules generated for objectives: promtool checks them and, fed synthetic series,
shows which alerts fire and which stay silent.

The rules and the promtool unit tests are both generated here from one declaration (DECLARATION),
so no rule text is copied by hand. Series: the monitor's counter as Prometheus stores it, from two
gunicorn workers, one sample a minute over three days (every window, the 3-day one too, is full at
the evaluation).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest
import yaml

from otel_flask_monitor.alert_rules import (
    ALERT_NAME,
    ERRORS_RECORD,
    PROMETHEUS_METRIC,
    AlertedObjective,
    RuleBuilder,
    alerted_objectives,
    render_yaml,
)
from otel_flask_monitor.objective_declarations import parse_objectives
from otel_flask_monitor.objectives import AppRoute, Kind
from tests.support import promtool

SERVICE: Final = "shop"
DECLARATION: Final = {
    "GET /api/products": {"latency": {"threshold_ms": 300, "target": 99}},
    "POST /api/orders": {"availability": 99.9},
}
ROUTES: Final = [
    AppRoute("/api/products", frozenset({"GET", "HEAD", "OPTIONS"}), "products"),
    AppRoute("/api/orders", frozenset({"POST", "OPTIONS"}), "orders"),
]
METHOD: Final = {"latency": "GET", "availability": "POST"}
"""The method the synthetic traffic of each objective uses."""

MINUTES: Final = 3 * 24 * 60
PER_MINUTE: Final = 2000
WORKERS: Final = ("worker-1", "worker-2")
EVALUATION_INTERVAL: Final = "1h"
"""promtool evaluates every rule at every step from 0 to the evaluation time; the alerts need only the
last step (they have no ``for``), and a step a minute over three days takes minutes."""


@dataclass(frozen=True)
class Phase:
    minutes: int
    good_per_minute: float
    bad_per_minute: float


def share(minutes: int, bad_share: float) -> Phase:
    return Phase(minutes, PER_MINUTE * (1 - bad_share), PER_MINUTE * bad_share)


IDLE: Final = Phase(MINUTES, 0, 0)

# name -> objective kind -> (traffic, the severities that must fire at the end; all others must not).
# Budgets: latency 99 % -> 1 %, availability 99.9 % -> 0.1 %. Pages need 14.4x over 1 h and 5 m (or
# 6x over 6 h and 30 m), tickets 3x over 1 d and 2 h (or 1x over 3 d and 6 h).
SCENARIOS: Final[dict[str, dict[Kind, tuple[list[Phase], set[str]]]]] = {
    # Every request fails for 20 (3) minutes after three good days: 33 % (5 %) of the last hour is over
    # 14.4 x the budget, 1.4 % (0.2 %) of the last day is under 3 x it.
    "fast burn pages": {
        "latency": ([share(MINUTES - 20, 0), share(20, 1)], {"page"}),
        "availability": ([share(MINUTES - 3, 0), share(3, 1)], {"page"}),
    },
    # Four times the budget for three days: over 3x in every window, under 6x.
    "slow burn opens a ticket and pages nobody": {
        "latency": ([share(MINUTES, 0.04)], {"ticket"}),
        "availability": ([share(MINUTES, 0.004)], {"ticket"}),
    },
    "healthy stays silent": {
        "latency": ([share(MINUTES, 0.005)], set()),
        "availability": ([share(MINUTES, 0.0005)], set()),
    },
    # The counters exist (the monitor reports each route from the first request on) but never move.
    "no traffic stays silent": {"latency": ([IDLE], set()), "availability": ([IDLE], set())},
    # Three requests in three days, all failed: a ratio of 1, but under min_requests in every window.
    "three failed requests on an idle route page nobody": {
        "latency": ([Phase(MINUTES - 3, 0, 0), Phase(3, 0, 1)], set()),
        "availability": ([Phase(MINUTES - 3, 0, 0), Phase(3, 0, 1)], set()),
    },
}


def counter_values(phases: list[Phase], per_minute: str, workers: int) -> str:
    """promtool's expanding notation for a counter starting at 0, one sample a minute."""

    def number(value: float) -> str:
        return str(int(value)) if value == int(value) else repr(value)

    parts, value = [], 0.0
    for index, phase in enumerate(phases):
        step = getattr(phase, per_minute) / workers
        if index == 0:
            parts.append(f"0+{number(step)}x{phase.minutes}")
        else:
            parts.append(f"{number(value + step)}+{number(step)}x{phase.minutes - 1}")
        value += step * phase.minutes
    return " ".join(parts)


def series_name(labels: dict[str, str]) -> str:
    return (
        PROMETHEUS_METRIC
        + "{"
        + ", ".join(f"{key}={json.dumps(value)}" for key, value in labels.items())
        + "}"
    )


def input_series(alerted: AlertedObjective, phases: list[Phase]) -> list[dict[str, str]]:
    series = []
    for worker in WORKERS:
        for outcome in ("good", "bad"):
            labels = {
                "service_name": SERVICE,
                "job": SERVICE,
                "instance": worker,
                "http_route": alerted.rule,
                "http_request_method": METHOD[alerted.kind],
                "objective": alerted.kind,
                "outcome": outcome,
            }
            values = counter_values(phases, f"{outcome}_per_minute", len(WORKERS))
            series.append({"series": series_name(labels), "values": values})
    return series


def alert_rule(document: dict[str, Any], alerted: AlertedObjective, severity: str) -> dict[str, Any]:
    (rule,) = [
        rule
        for group in document["groups"]
        for rule in group["rules"]
        if rule.get("alert") == ALERT_NAME
        and rule["labels"]["severity"] == severity
        and rule["labels"]["http_route"] == alerted.rule
        and rule["labels"]["objective"] == alerted.kind
    ]
    return rule


def expected_alert(document: dict[str, Any], alerted: AlertedObjective, severity: str) -> dict[str, Any]:
    rule = alert_rule(document, alerted, severity)
    series_labels = {
        "service_name": SERVICE,
        "http_route": alerted.rule,
        "http_request_method": METHOD[alerted.kind],
        "objective": alerted.kind,
    }
    return {"exp_labels": {**series_labels, **rule["labels"]}, "exp_annotations": rule["annotations"]}


def alerted() -> list[AlertedObjective]:
    policy = parse_objectives("DECLARATION", DECLARATION)
    found = alerted_objectives(policy.table(ROUTES))
    assert sorted((item.kind, item.rule) for item in found) == [
        ("availability", "/api/orders"),
        ("latency", "/api/products"),
    ]
    return found


def write_rules(directory: Path, min_requests: int) -> dict[str, Any]:
    document = RuleBuilder(SERVICE, min_requests=min_requests).document(alerted())
    path = directory / "rules.yml"
    path.write_text(render_yaml(document, "generated for tests/test_alert_rules.py"), encoding="utf-8")
    promtool.check_rules(path)
    return document


def rule_test(
    name: str, document: dict[str, Any], traffic: dict[Kind, tuple[list[Phase], set[str]]]
) -> dict[str, Any]:
    series: list[dict[str, str]] = []
    expected: list[dict[str, Any]] = []
    for item in alerted():
        phases, severities = traffic[item.kind]
        series += input_series(item, phases)
        expected += [expected_alert(document, item, severity) for severity in sorted(severities)]
    return {
        "name": name,
        "interval": "1m",
        "input_series": series,
        "alert_rule_test": [{"eval_time": f"{MINUTES}m", "alertname": ALERT_NAME, "exp_alerts": expected}],
    }


def run_rule_tests(directory: Path, document: dict[str, Any], tests: list[dict[str, Any]]) -> None:
    path = directory / "rules_test.yml"
    unit_tests = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": EVALUATION_INTERVAL,
        # promtool evaluates groups in map order unless told (cmd/promtool/unittest.go orderedGroups);
        # the alerts must read this step's recordings, not the previous step's (an hour old).
        "group_eval_order": [group["name"] for group in document["groups"]],
        "tests": tests,
    }
    path.write_text(yaml.safe_dump(unit_tests, sort_keys=False), encoding="utf-8")
    result = promtool.run("test", "rules", path.name, cwd=directory)
    assert result.returncode == 0, f"promtool test rules:\n{result.stdout}{result.stderr}"
    assert "SUCCESS" in result.stdout, result.stdout


def test_generated_rules_fire_on_fast_and_slow_burns_only(tmp_path: Path) -> None:
    document = write_rules(tmp_path, min_requests=10)
    tests = [rule_test(name, document, traffic) for name, traffic in SCENARIOS.items()]
    idle = tests[list(SCENARIOS).index("no traffic stays silent")]
    # Without requests the error ratio is absent, not NaN (0/0) that dashboards would show.
    idle["promql_expr_test"] = [
        {"expr": f"{ERRORS_RECORD}{window}", "eval_time": f"{MINUTES}m", "exp_samples": []}
        for window in ("5m", "1h", "3d")
    ]
    slow = tests[list(SCENARIOS).index("slow burn opens a ticket and pages nobody")]
    slow["promql_expr_test"] = [
        {
            "expr": f'{ERRORS_RECORD}1d{{objective="availability"}}',
            "eval_time": f"{MINUTES}m",
            "exp_samples": [
                {
                    "labels": (
                        f'{ERRORS_RECORD}1d{{service_name="{SERVICE}", http_route="/api/orders", '
                        'http_request_method="POST", objective="availability"}'
                    ),
                    "value": 0.004,
                }
            ],
        }
    ]
    run_rule_tests(tmp_path, document, tests)


def test_without_min_requests_three_failed_requests_page(tmp_path: Path) -> None:
    # The same traffic as the silent scenario above: min_requests is what keeps it silent.
    document = write_rules(tmp_path, min_requests=0)
    traffic = SCENARIOS["three failed requests on an idle route page nobody"]
    loud = {kind: (phases, {"page", "ticket"}) for kind, (phases, _) in traffic.items()}
    run_rule_tests(tmp_path, document, [rule_test("min_requests 0", document, loud)])


def test_rules_name_the_objective_in_every_alert() -> None:
    document = RuleBuilder(SERVICE).document(alerted())
    latency = next(item for item in alerted() if item.kind == "latency")
    page = alert_rule(document, latency, "page")
    assert page["labels"] == {
        "severity": "page",
        "http_route": "/api/products",
        "objective": "latency",
        "objective_target": "0.99",
        "objective_source": "GET /api/products",
    }
    description = page["annotations"]["description"]
    for expected in ("99 % of requests within 300 ms", "1 % of the requests over 30d", "14.4x in 1h and 5m"):
        assert expected in description
    assert "(14.4 * 0.01)" in page["expr"]
    assert 'http_request_method=~"GET"' in page["expr"], "the objective covers GET only"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(300, "5m"), (1800, "30m"), (3600, "1h"), (86_400, "1d"), (2_592_000, "30d"), (90, "90s")],
)
def test_durations_are_written_in_their_largest_unit(seconds: int, text: str) -> None:
    from otel_flask_monitor.alert_rules import duration

    assert duration(seconds) == text
