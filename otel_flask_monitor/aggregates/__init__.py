"""Rolling-window per-route statistics in bounded memory, per process or merged across workers.

No Flask import anywhere in this package: it is testable on its own. One job per module, data flowing
down this list:

- ``sketch``: latency buckets on DDSketch's key mapping, and the percentiles read from them;
- ``counts``: what a slot counts per (method, route) (``counts.COUNTERS``, the one counter list), and
  each route's slowest requests per slot;
- ``document``: the shape of the ``/monitoring/stats`` document;
- ``drill``: the drill-down document of one route (per-slot series, status codes, histogram, slowest);
- ``live_objectives``: per route with an objective, attained ratio, budget left and burn rates;
- ``merge``: windows of one or several processes -> the document's numbers, with running sums;
- ``store``: :class:`AggregateStore`, one process's ring of slots, fed one record at a time;
- ``wire``: the worker-file schema (JSON, with a format version);
- ``workers``: which processes are the workers of a server, where their files live, file I/O;
- ``slot_extracts``: what a reader keeps of other workers' closed slots (drill-down, objectives);
- ``multiprocess``: the file exchange between the workers of a pre-fork server.
"""

from __future__ import annotations

from otel_flask_monitor.aggregates.multiprocess import reset_exchanges_after_fork
from otel_flask_monitor.aggregates.store import (
    MAX_TEXT_LENGTH,
    OVERFLOW_METHOD,
    OVERFLOW_ROUTE,
    AggregateStore,
    reset_stores_after_fork,
)


def after_fork_in_child() -> None:
    """In a forked child, before it serves: every store of this process starts afresh (what it held
    was the parent's, a ``--preload`` master that served requests, say), then every exchange gets the
    child's identity and its own writer thread."""
    reset_stores_after_fork()
    reset_exchanges_after_fork()


__all__ = [
    "MAX_TEXT_LENGTH",
    "OVERFLOW_METHOD",
    "OVERFLOW_ROUTE",
    "AggregateStore",
    "after_fork_in_child",
]
