"""Prometheus recording and alerting rules for an app's objectives (multi-window, multi-burn-rate).

Pure: objectives and rule templates in, a rule-file document out (``python -m otel_flask_monitor
rules`` prints it; docs/objectives.md explains every rule).

What Prometheus receives is the monitor's counter (otel_flask_monitor.objective_metrics), named as
Prometheus' OTLP translation names it. The rules:

- per window of :data:`~otel_flask_monitor.burn_rate.BURN_ALERTS` (and the 30-day period):
  ``otel_flask_monitor:objective_requests:rate<w>`` (requests per second) and
  ``otel_flask_monitor:objective_errors:ratio_rate<w>`` (share of them that missed the objective);
  without requests in the window the ratio is absent, never NaN (0/0);
- ``otel_flask_monitor:objective_target:ratio``: each objective's target, for dashboards;
- ``ObjectiveBudgetBurn`` alerts, one ``page`` and one ``ticket`` rule per route and objective: the
  error ratio over both windows of a pair above factor x budget, with at least ``min_requests``
  requests in the long window, so a nearly idle route does not page on its first failure.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from otel_flask_monitor.burn_rate import BURN_ALERTS, MIN_REQUESTS, PERIOD_SECONDS, BurnAlert
from otel_flask_monitor.objectives import Kind, Objective, RouteObjectives

PROMETHEUS_METRIC: Final = "otel_flask_monitor_objective_requests_total"
"""The Prometheus name of :data:`~otel_flask_monitor.objective_metrics.METRIC_NAME` (a monotonic
counter, unit ``{request}``) under the OTLP translation strategy UnderscoreEscapingWithSuffixes,
Prometheus 3.x's default (github.com/prometheus/otlptranslator v1.0.0); tests check the two agree."""

REQUESTS_RECORD: Final = "otel_flask_monitor:objective_requests:rate"
ERRORS_RECORD: Final = "otel_flask_monitor:objective_errors:ratio_rate"
TARGET_RECORD: Final = "otel_flask_monitor:objective_target:ratio"
ALERT_NAME: Final = "ObjectiveBudgetBurn"
DEFAULT_SERVICE_LABEL: Final = "service_name"
DEFAULT_MIN_REQUESTS: Final = MIN_REQUESTS
PERIOD_EVALUATION_INTERVAL: Final = "5m"
"""The 30-day figures change slowly and read a month of samples: evaluated every 5 minutes."""


@dataclass(frozen=True, slots=True)
class AlertedObjective:
    """One objective of one route template, and the methods whose requests count against it."""

    rule: str
    kind: Kind
    objective: Objective
    methods: tuple[str, ...]
    source: str

    def describe_route(self) -> str:
        return f"{'|'.join(self.methods)} {self.rule}"


def alerted_objectives(table: Mapping[tuple[str, str], RouteObjectives]) -> list[AlertedObjective]:
    """Group the (method, rule) pairs of a route that share an objective: one alert rule each."""
    methods: dict[tuple[str, Kind, Objective, str], list[str]] = {}
    for (method, rule), resolved in table.items():
        for found in resolved:
            methods.setdefault((rule, found.kind, found.objective, found.source), []).append(method)
    return sorted(
        (
            AlertedObjective(rule, kind, objective, tuple(sorted(names)), source)
            for (rule, kind, objective, source), names in methods.items()
        ),
        key=lambda alerted: (alerted.rule, alerted.kind, alerted.methods),
    )


def duration(seconds: int) -> str:
    """A Prometheus duration in its largest whole unit: 300 -> 5m, 86400 -> 1d."""
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def windows() -> list[int]:
    """Every window an alert reads, shortest first."""
    return sorted({seconds for alert in BURN_ALERTS for seconds in (alert.long_seconds, alert.short_seconds)})


def _string(value: str) -> str:
    # A PromQL double-quoted string: JSON's escapes are a subset of Go's, which PromQL uses.
    return json.dumps(value, ensure_ascii=False)


def _decimal(value: Decimal) -> str:
    return format(value.normalize(), "f")


class RuleBuilder:
    def __init__(
        self,
        service_name: str,
        *,
        service_label: str = DEFAULT_SERVICE_LABEL,
        min_requests: int = DEFAULT_MIN_REQUESTS,
    ) -> None:
        if min_requests < 0:
            raise ValueError("min_requests must not be negative")
        self.service_name = service_name
        self.service_label = service_label
        self.min_requests = min_requests
        self.grouping = f"{service_label}, http_route, http_request_method, objective"

    def _service(self) -> str:
        return f"{self.service_label}={_string(self.service_name)}"

    def selector(self, alerted: AlertedObjective) -> str:
        return (
            f"{{{self._service()}, http_route={_string(alerted.rule)}, "
            f'http_request_method=~"{"|".join(alerted.methods)}", objective="{alerted.kind}"}}'
        )

    def window_rules(self, seconds: int) -> list[dict[str, Any]]:
        window = duration(seconds)
        raw = PROMETHEUS_METRIC
        total = f"sum by ({self.grouping}) (rate({raw}{{{self._service()}}}[{window}]))"
        bad = f'sum by ({self.grouping}) (rate({raw}{{{self._service()}, outcome="bad"}}[{window}]))'
        return [
            {"record": f"{REQUESTS_RECORD}{window}", "expr": total},
            # "> 0" drops windows without requests: the ratio is absent then, never 0/0 = NaN.
            {"record": f"{ERRORS_RECORD}{window}", "expr": f"{bad}\n/\n({total} > 0)\n"},
        ]

    def target_rules(self, alerted: AlertedObjective) -> list[dict[str, Any]]:
        return [
            {
                "record": TARGET_RECORD,
                "expr": f"vector({_decimal(alerted.objective.target_ratio)})",
                "labels": {
                    self.service_label: self.service_name,
                    "http_route": alerted.rule,
                    "http_request_method": method,
                    "objective": alerted.kind,
                },
            }
            for method in alerted.methods
        ]

    def _pair(self, alerted: AlertedObjective, alert: BurnAlert) -> str:
        selector = self.selector(alerted)
        budget = _decimal(1 - alerted.objective.target_ratio)
        threshold = f"({_decimal(alert.factor)} * {budget})"
        long, short = duration(alert.long_seconds), duration(alert.short_seconds)
        lines = [
            f"  {ERRORS_RECORD}{long}{selector} > {threshold}",
            f"  and\n  {ERRORS_RECORD}{short}{selector} > {threshold}",
        ]
        if self.min_requests:
            lines.append(
                f"  and\n  {REQUESTS_RECORD}{long}{selector} * {alert.long_seconds} >= {self.min_requests}"
            )
        return "(\n" + "\n".join(lines) + "\n)"

    def alert_rule(self, alerted: AlertedObjective, severity: str) -> dict[str, Any]:
        pairs = [alert for alert in BURN_ALERTS if alert.severity == severity]
        conditions = " or ".join(
            f"{_decimal(alert.factor)}x in {duration(alert.long_seconds)} and {duration(alert.short_seconds)}"
            for alert in pairs
        )
        guard = (
            f", with at least {self.min_requests} requests in the longer window" if self.min_requests else ""
        )
        budget_percent = _decimal((1 - alerted.objective.target_ratio) * 100)
        return {
            "alert": ALERT_NAME,
            "expr": "\n or\n".join(self._pair(alerted, alert) for alert in pairs) + "\n",
            # Static labels repeat what identifies the rule (the series' own labels add the method):
            # two rules with one name must differ in them (promtool's duplicate-rule lint).
            "labels": {
                "severity": severity,
                "http_route": alerted.rule,
                "objective": alerted.kind,
                "objective_target": _decimal(alerted.objective.target_ratio),
                "objective_source": alerted.source,
            },
            "annotations": {
                "summary": (
                    f"{self.service_name} {alerted.describe_route()}: the {alerted.kind} objective is "
                    f"burning its error budget ({severity})"
                ),
                "description": (
                    f"Objective: {alerted.objective.describe()} (declared by {alerted.source!r}); its "
                    f"error budget is {budget_percent} % of the requests over {duration(PERIOD_SECONDS)}. "
                    f"Fires when the share of requests missing it is over the budget times {conditions}"
                    f"{guard}."
                ),
            },
        }

    def document(self, objectives: Iterable[AlertedObjective]) -> dict[str, Any]:
        alerted = list(objectives)
        prefix = f"otel_flask_monitor:{self.service_name}"
        return {
            "groups": [
                {
                    "name": f"{prefix}:objective-windows",
                    "rules": [rule for seconds in windows() for rule in self.window_rules(seconds)],
                },
                {
                    "name": f"{prefix}:objective-period",
                    "interval": PERIOD_EVALUATION_INTERVAL,
                    "rules": self.window_rules(PERIOD_SECONDS),
                },
                {
                    "name": f"{prefix}:objective-targets",
                    "rules": [rule for item in alerted for rule in self.target_rules(item)],
                },
                {
                    "name": f"{prefix}:objective-alerts",
                    "rules": [
                        self.alert_rule(item, severity) for item in alerted for severity in ("page", "ticket")
                    ],
                },
            ]
        }


def render_yaml(document: Mapping[str, Any], header: str) -> str:
    """The rule file's text: ``header`` as comments, then the document (multi-line exprs as blocks)."""
    import yaml

    class _Dumper(yaml.SafeDumper):
        pass

    def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    _Dumper.add_representer(str, _str)
    comments = "".join(f"# {line}".rstrip() + "\n" for line in header.splitlines())
    body = yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=1000, allow_unicode=True)
    return comments + body
