"""The shape of the ``/monitoring/stats`` document: rows, timeline entries, key order, rounding.

Schema: docs/dashboard.md. The numbers come from merge.py; nothing here counts.

A further document over the same merged counts (a per-route detail view, say) belongs here too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from otel_flask_monitor.aggregates.counts import RouteCounts, RouteKey
from otel_flask_monitor.aggregates.sketch import quantiles

ROW_QUANTILES: Final = {"p50": 0.5, "p95": 0.95, "p99": 0.99}
TIMELINE_QUANTILES: Final = {"p50": 0.5, "p95": 0.95}


def significant(value: float, digits: int = 6) -> float:
    return float(f"{value:.{digits}g}")


def ratio(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def latency_dict(counts: RouteCounts, wanted: Mapping[str, float] = ROW_QUANTILES) -> dict[str, Any]:
    values = quantiles(counts.latency, wanted.values())
    # 4 significant digits: readable JSON, and at most 0.05 % on top of the mapping's 1 %.
    return {
        name: None if value is None else significant(value, 4)
        for name, value in zip(wanted, values, strict=True)
    }


def route_row(key: RouteKey | None, counts: RouteCounts, covered_seconds: float) -> dict[str, Any]:
    """A row of ``routes`` (``key`` is (method, route)), or ``totals`` (``key`` None)."""
    requests = counts.requests
    row: dict[str, Any] = {} if key is None else {"method": key[0], "route": key[1]}
    row.update(
        {
            "requests": requests,
            "client_errors": counts.client_errors,
            "server_errors": counts.server_errors,
            "error_rate": significant(ratio(counts.client_errors + counts.server_errors, requests)),
            "server_error_rate": significant(ratio(counts.server_errors, requests)),
            "requests_per_second": significant(requests / covered_seconds),
            "latency_ms": latency_dict(counts),
            "request_bytes": counts.request_bytes,
            "response_bytes": counts.response_bytes,
        }
    )
    return row


def route_rows(routes: Mapping[RouteKey, RouteCounts], covered_seconds: float) -> list[dict[str, Any]]:
    """The ``routes`` list: keys with requests in the window, the busiest first."""
    rows = [route_row(key, counts, covered_seconds) for key, counts in routes.items() if counts.requests]
    rows.sort(key=lambda row: (-row["requests"], row["route"], row["method"]))
    return rows


def timeline_entry(start_unix: int, counts: RouteCounts) -> dict[str, Any]:
    return {
        "start_unix": float(start_unix),
        "requests": counts.requests,
        "client_errors": counts.client_errors,
        "server_errors": counts.server_errors,
        "latency_ms": latency_dict(counts, TIMELINE_QUANTILES),
    }


def stats_document(
    *,
    generated_at_unix: float,
    window_seconds: int,
    slot_seconds: int,
    window_start_unix: int,
    covered_seconds: float,
    max_routes: int,
    tracked_routes: int,
    total: RouteCounts,
    routes: Mapping[RouteKey, RouteCounts],
    timeline: list[dict[str, Any]],
    recent_errors: list[dict[str, Any]],
    recent_client_errors: list[dict[str, Any]],
) -> dict[str, Any]:
    """The document, keys in their documented order. The caller adds ``per_process`` (and, merged
    across workers, ``served_by`` and ``workers``)."""
    return {
        "generated_at_unix": generated_at_unix,
        "window_seconds": window_seconds,
        "slot_seconds": slot_seconds,
        "window_start_unix": float(window_start_unix),
        "covered_seconds": round(covered_seconds, 3),
        "max_routes": max_routes,
        "tracked_routes": tracked_routes,
        "totals": route_row(None, total, covered_seconds),
        "routes": route_rows(routes, covered_seconds),
        "timeline": timeline,
        "recent_errors": recent_errors,
        "recent_client_errors": recent_client_errors,
    }
