"""The drill-down of one (method, route): its per-slot series, status codes, latency histogram, slowest.

Built from the route's counts and slowest requests slot by slot (of one process, or of every worker:
aggregates/multiprocess.py gathers them), added up here; schema in docs/dashboard.md. Everything it
holds is bounded: a slot per window slot, :data:`HISTOGRAM_BARS` bars, ``counts.SLOWEST_PER_SLOT``
slowest requests, ``counts.STATUS_CODES_PER_ROUTE`` (+ other) status codes per slot.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Mapping
from typing import Any, Final

from otel_flask_monitor.aggregates.counts import (
    OTHER_STATUS,
    SLOWEST_PER_SLOT,
    RouteCounts,
    RouteKey,
    Slot,
    SlowRequest,
    summed,
)
from otel_flask_monitor.aggregates.document import (
    ROW_QUANTILES,
    latency_dict,
    route_row,
    significant,
)
from otel_flask_monitor.aggregates.sketch import LatencyBuckets, bucket_bounds

HISTOGRAM_BARS: Final = 24
"""Most bars of the latency histogram: neighbouring buckets are grouped, equally wide on a log scale."""


RouteSlot = tuple[int, "RouteCounts | None", list[SlowRequest]]
"""(slot number, the route's counts in it, its slowest requests in it)."""


def route_slots_of(slots: Iterable[Slot], key: RouteKey) -> list[RouteSlot]:
    """One route's part of some slots."""
    return [(slot.number, slot.routes.get(key), slot.slowest.get(key, [])) for slot in slots]


class RouteSlots:
    """One route's counts and slowest requests per slot number, from any number of sources."""

    def __init__(self, key: RouteKey) -> None:
        self.key = key
        self.counts: dict[int, list[RouteCounts]] = {}
        self.slowest: dict[int, list[SlowRequest]] = {}

    def add(self, number: int, counts: RouteCounts | None, slowest: Iterable[SlowRequest] = ()) -> None:
        if counts is not None:
            self.counts.setdefault(number, []).append(counts)
        self.slowest.setdefault(number, []).extend(slowest)


def histogram(buckets: LatencyBuckets, bars: int = HISTOGRAM_BARS) -> list[dict[str, Any]]:
    """The latency distribution as at most ``bars`` bars over the keys present (empty bars kept, so the
    x axis is a log scale)."""
    if not buckets:
        return []
    low, high = min(buckets), max(buckets)
    width = math.ceil((high - low + 1) / bars)
    counts = [0] * math.ceil((high - low + 1) / width)
    for key, count in buckets.items():
        counts[(key - low) // width] += count
    rows = []
    for index, count in enumerate(counts):
        first = low + index * width
        rows.append(
            {
                "from_ms": significant(bucket_bounds(first)[0], 4),
                "to_ms": significant(bucket_bounds(first + width - 1)[1], 4),
                "requests": count,
            }
        )
    return rows


def status_codes(statuses: Mapping[int, int]) -> list[dict[str, Any]]:
    """``[{"status_code": 200, "requests": n}, ...]`` by code; the other codes last, as ``null``."""
    rows: list[dict[str, Any]] = [
        {"status_code": code, "requests": count}
        for code, count in sorted(statuses.items())
        if code != OTHER_STATUS
    ]
    if statuses.get(OTHER_STATUS):
        rows.append({"status_code": None, "requests": statuses[OTHER_STATUS]})
    return rows


def slowest_requests(key: RouteKey, entries: Iterable[SlowRequest]) -> list[dict[str, Any]]:
    method, route = key
    return [
        {
            "time_unix": time_unix,
            "method": method,
            "route": route,
            "path": path,
            "status_code": status,
            "duration_ms": significant(duration, 6),
            "trace_id": trace_id or None,
        }
        for duration, time_unix, status, path, trace_id in heapq.nlargest(SLOWEST_PER_SLOT, entries)
    ]


def route_detail(
    slots: RouteSlots,
    *,
    generated_at_unix: float,
    window: range,
    window_seconds: int,
    slot_seconds: int,
    covered_seconds: float,
) -> dict[str, Any] | None:
    """The drill-down document, or None when the route had no request in the window."""
    in_window = {number: parts for number, parts in slots.counts.items() if number in window}
    total = summed(counts for parts in in_window.values() for counts in parts)
    if not total.requests:
        return None
    timeline = []
    for number in window:
        counts = summed(in_window.get(number, ()))
        timeline.append(
            {
                "start_unix": float(number * slot_seconds),
                "requests": counts.requests,
                "requests_per_second": significant(counts.requests / slot_seconds),
                "client_errors": counts.client_errors,
                "server_errors": counts.server_errors,
                "latency_ms": latency_dict(counts, ROW_QUANTILES),
            }
        )
    method, route = slots.key
    return {
        "method": method,
        "route": route,
        "generated_at_unix": generated_at_unix,
        "window_seconds": window_seconds,
        "slot_seconds": slot_seconds,
        "window_start_unix": float(window.start * slot_seconds),
        "summary": route_row(None, total, covered_seconds),
        "status_codes": status_codes(total.statuses),
        "latency_histogram": histogram(total.latency),
        "timeline": timeline,
        "slowest": slowest_requests(
            slots.key, (entry for number in window for entry in slots.slowest.get(number, ()))
        ),
    }
