"""otel_flask_monitor.aggregates.document: the stats document's shape, as docs/dashboard.md shows it."""

from __future__ import annotations

import json
import re
from pathlib import Path

from otel_flask_monitor.aggregates.counts import COUNTERS, RouteCounts
from otel_flask_monitor.aggregates.document import route_row, route_rows, stats_document, timeline_entry
from otel_flask_monitor.aggregates.live_objectives import objective_rows
from otel_flask_monitor.aggregates.sketch import latency_key
from otel_flask_monitor.endpoints import endpoints_section
from otel_flask_monitor.objective_declarations import parse_objectives
from otel_flask_monitor.objectives import AppRoute

DASHBOARD_DOC = Path(__file__).parent.parent / "docs" / "dashboard.md"


def counts(
    requests: int, client_errors: int = 0, server_errors: int = 0, duration_ms: float = 10.0
) -> RouteCounts:
    values = dict.fromkeys(COUNTERS, 0) | {
        "requests": requests,
        "client_errors": client_errors,
        "server_errors": server_errors,
        "request_bytes": 100 * requests,
        "response_bytes": 1000 * requests,
    }
    latency = {latency_key(duration_ms): requests} if requests else {}
    return RouteCounts.of(tuple(values[name] for name in COUNTERS), latency)


def test_a_route_row_in_documented_order_and_rounding() -> None:
    row = route_row(("GET", "/a"), counts(3, client_errors=1, server_errors=1, duration_ms=12.345), 7.0)
    assert list(row) == [
        "method", "route", "requests", "client_errors", "server_errors", "error_rate",
        "server_error_rate", "requests_per_second", "latency_ms", "request_bytes", "response_bytes",
    ]  # fmt: skip
    assert row["error_rate"] == 0.666667  # 6 significant digits
    assert row["server_error_rate"] == 0.333333
    assert row["requests_per_second"] == 0.428571
    p50 = row["latency_ms"]["p50"]
    assert p50 == float(f"{p50:.4g}")  # 4 significant digits
    assert abs(p50 - 12.345) / 12.345 < 0.011
    assert list(row["latency_ms"]) == ["p50", "p95", "p99"]
    assert (row["request_bytes"], row["response_bytes"]) == (300, 3000)


def test_totals_have_no_key_and_no_requests_no_rates() -> None:
    row = route_row(None, counts(0), 5.0)
    assert "method" not in row
    assert "route" not in row
    assert row["error_rate"] == 0.0
    assert row["latency_ms"] == {"p50": None, "p95": None, "p99": None}


def test_routes_busiest_first_then_by_route_and_method_without_idle_ones() -> None:
    rows = route_rows(
        {
            ("POST", "/b"): counts(2),
            ("GET", "/b"): counts(2),
            ("GET", "/a"): counts(2),
            ("GET", "/c"): counts(9),
            ("GET", "/idle"): counts(0),
        },
        10.0,
    )
    assert [(row["method"], row["route"]) for row in rows] == [
        ("GET", "/c"),
        ("GET", "/a"),
        ("GET", "/b"),
        ("POST", "/b"),
    ]


def test_a_timeline_entry_has_two_percentiles() -> None:
    entry = timeline_entry(1_000_000, counts(4, server_errors=1))
    assert entry["start_unix"] == 1_000_000.0
    assert list(entry) == ["start_unix", "requests", "client_errors", "server_errors", "latency_ms"]
    assert list(entry["latency_ms"]) == ["p50", "p95"]


def documented_example() -> dict[str, object]:
    text = DASHBOARD_DOC.read_text()
    section = text[text.index("## `/monitoring/stats`") :]
    block = re.search(r"```json\n(.*?)\n```", section, re.DOTALL)
    assert block is not None
    example: dict[str, object] = json.loads(block[1])
    return example


def test_the_document_has_the_documented_keys_in_order() -> None:
    document = stats_document(
        generated_at_unix=1.5,
        window_seconds=900,
        slot_seconds=10,
        window_start_unix=0,
        covered_seconds=1.23456,
        max_routes=200,
        tracked_routes=1,
        total=counts(1),
        routes={("GET", "/a"): counts(1)},
        timeline=[timeline_entry(0, counts(1))],
        recent_errors=[],
        recent_client_errors=[],
    )
    example = documented_example()
    # The example ends with objectives (the merger adds them when objectives are declared) and
    # per_process (the store's snapshot), then the route adds the app's endpoints.
    endpoint_keys = list(endpoints_section([], [], 200))
    assert [*document, "objectives", "per_process", *endpoint_keys] == list(example)
    policy = parse_objectives("objectives", {"GET /a": {"latency": {"threshold_ms": 300, "target": 99}}})
    (row,) = objective_rows(policy.table([AppRoute("/a", frozenset({"GET"}), "a")]), {}, {})
    assert list(row) == list(example["objectives"][0])  # type: ignore[index]
    assert list(document["totals"]) == list(example["totals"])  # type: ignore[arg-type]
    assert list(document["timeline"][0]) == list(example["timeline"][0])  # type: ignore[index]
    assert document["covered_seconds"] == 1.235
    assert document["window_start_unix"] == 0.0
