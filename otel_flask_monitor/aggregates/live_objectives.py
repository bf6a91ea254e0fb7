"""The live objectives: per route with an objective, its attained ratio, budget left and burn rates.

Computed from the window's exact counts (``requests``, ``server_errors`` and ``latency_met`` of
counts.COUNTERS), so they merge across workers like every other count: latency good = requests within
the route's threshold (counted when recorded, never read from the buckets), availability good =
requests that were not server errors. Two windows, as the page alert of the generated Prometheus rules
(burn_rate.BURN_ALERTS[0]): the last :data:`SHORT_WINDOW_SECONDS` (5 minutes) and the whole window
(``window_seconds``; it stands in for the rules' 1 hour). A route is *burning* when both burn faster
than :data:`BURNING_FACTOR` (14.4: 2 % of a 30-day budget per hour) and the window holds at least
``burn_rate.MIN_REQUESTS`` requests, as the rules demand; docs/objectives.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Final, Protocol

from otel_flask_monitor.aggregates.counts import RouteCounts, RouteKey, Slot
from otel_flask_monitor.aggregates.document import significant
from otel_flask_monitor.burn_rate import (
    BURN_ALERTS,
    MIN_REQUESTS,
    attained_ratio,
    burn_rate,
    error_budget_left,
)
from otel_flask_monitor.objectives import Latency, RouteObjectives

SHORT_WINDOW_SECONDS: Final = BURN_ALERTS[0].short_seconds
BURNING_FACTOR: Final = float(BURN_ALERTS[0].factor)

ObjectiveCounts = tuple[int, int, int]
"""(requests, server errors, requests within the latency objective) of one route."""


class ObjectiveSource(Protocol):
    """Which routes have objectives (:class:`~otel_flask_monitor.objective_metrics.ObjectiveCounter`)."""

    def latency_threshold_ms(self, method: str, route: str) -> float | None:
        """The route's latency objective threshold (None: it has none); on the request path."""
        ...

    def objective_table(self) -> Mapping[RouteKey, RouteObjectives]:
        """Every (method, route) with an objective, as resolved so far."""
        ...


def short_window(window: range, slot_seconds: int) -> range:
    """The newest slots of ``window`` that make up the last :data:`SHORT_WINDOW_SECONDS`."""
    slots = min(math.ceil(SHORT_WINDOW_SECONDS / slot_seconds), len(window))
    return range(window.stop - slots, window.stop)


def objective_counts(counts: RouteCounts) -> ObjectiveCounts:
    return (counts.requests, counts.server_errors, counts.latency_met)


def slot_objective_counts(routes: Mapping[RouteKey, RouteCounts]) -> dict[RouteKey, ObjectiveCounts]:
    """What the short window needs of a slot's routes (a reader keeps it of other workers' slots)."""
    return {key: objective_counts(counts) for key, counts in routes.items()}


def short_counts(slots: Iterable[Slot], short: range) -> dict[RouteKey, ObjectiveCounts]:
    """The objective counts of those of ``slots`` in ``short``."""
    counts: dict[RouteKey, ObjectiveCounts] = {}
    for slot in slots:
        if slot.number in short:
            add_objective_counts(counts, slot_objective_counts(slot.routes))
    return counts


def add_objective_counts(
    target: dict[RouteKey, ObjectiveCounts], routes: Mapping[RouteKey, ObjectiveCounts]
) -> None:
    for key, (requests, server_errors, met) in routes.items():
        had = target.get(key, (0, 0, 0))
        target[key] = (had[0] + requests, had[1] + server_errors, had[2] + met)


def _good(kind: str, counts: ObjectiveCounts) -> int:
    requests, server_errors, met = counts
    return met if kind == "latency" else requests - server_errors


def _rounded(value: float | None) -> float | None:
    return None if value is None else significant(value)


def objective_rows(
    table: Mapping[RouteKey, RouteObjectives],
    window_routes: Mapping[RouteKey, RouteCounts],
    short: Mapping[RouteKey, ObjectiveCounts],
) -> list[dict[str, Any]]:
    """The ``objectives`` list of the stats document: one entry per (method, route) and objective."""
    rows = []
    for (method, route), objectives in sorted(table.items(), key=lambda item: (item[0][1], item[0][0])):
        counts = window_routes.get((method, route))
        window = objective_counts(counts) if counts is not None else (0, 0, 0)
        recent = short.get((method, route), (0, 0, 0))
        for found in objectives:
            objective = found.objective
            target = float(objective.target_ratio)
            good, total = _good(found.kind, window), window[0]
            recent_good, recent_total = _good(found.kind, recent), recent[0]
            window_burn = burn_rate(good, total, target)
            recent_burn = burn_rate(recent_good, recent_total, target)
            rows.append(
                {
                    "method": method,
                    "route": route,
                    "objective": found.kind,
                    "target_percent": objective.target,
                    "threshold_ms": objective.threshold_ms if isinstance(objective, Latency) else None,
                    "source": found.source,
                    "requests": total,
                    "good": good,
                    "attained_ratio": _rounded(attained_ratio(good, total)),
                    "error_budget_left": _rounded(error_budget_left(good, total, target)),
                    "burn_rate": _rounded(window_burn),
                    "last_5m": {
                        "requests": recent_total,
                        "good": recent_good,
                        "burn_rate": _rounded(recent_burn),
                    },
                    "burning": total >= MIN_REQUESTS and is_burning(window_burn, recent_burn),
                }
            )
    return rows


def is_burning(window_burn: float | None, recent_burn: float | None) -> bool:
    return (
        window_burn is not None
        and recent_burn is not None
        and window_burn > BURNING_FACTOR
        and recent_burn > BURNING_FACTOR
    )


def burning(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The entries of ``rows`` that burn, in the short form ``/monitoring/health`` lists them."""
    return [
        {
            "method": row["method"],
            "route": row["route"],
            "objective": row["objective"],
            "burn_rate": row["burn_rate"],
            "burn_rate_5m": row["last_5m"]["burn_rate"],
        }
        for row in rows
        if row["burning"]
    ]
