"""Counts every request against its route's objectives; exports the counts as one OTel counter.

The instrument the generated alert rules read (docs/objectives.md):

    otel_flask_monitor.objective.requests   monotonic counter, unit {request}
        http.route            the URL rule template, never the raw path
        http.request.method   a method of that rule
        objective             latency | availability
        outcome               good | bad

Prometheus stores it as ``otel_flask_monitor_objective_requests_total`` (OTLP translation with
suffixes: the ``{request}`` annotation unit adds nothing, a monotonic sum gets ``_total``).

Why not the Flask instrumentation's own duration histogram: its bucket boundaries (the SDK's default
ones in milliseconds, or the semantic conventions' in seconds) rarely contain the declared threshold,
so "requests under 300 ms" cannot be read from it exactly (Sloth #506, Pyrra #1502), and its route
attribute depends on OTEL_SEMCONV_STABILITY_OPT_IN (``http.target`` or ``http.route``). The app
knows each request's duration exactly and decides good or bad itself, as beorn7 recommends for exact
latency SLOs (metalmatze/slo-libsonnet #46).

Cost per request: one dict lookup and one or two integer increments under a lock. The SDK reads the
cumulative counts only at export time, through an observable counter's callback; a synchronous
``Counter.add`` costs tens of microseconds per call in SDK 1.45 (docs/performance.md).

Series exist from the first recorded request on for every (method, rule) pair that has an objective,
both outcomes at 0, so Prometheus sees each counter start from zero (no first increment lost to
``rate()``) and a route that is never called reads as 0 requests, not as a missing series (Pyrra
#820). Cardinality is bounded by the app's URL rules and ``max_routes`` pairs.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Final

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from otel_flask_monitor.objective_declarations import app_routes
from otel_flask_monitor.objectives import AppRoute, Latency, ObjectivePolicy, RouteObjectives
from otel_flask_monitor.record import RequestRecord

if TYPE_CHECKING:
    from otel_flask_monitor.config import MonitorSettings

METRIC_NAME: Final = "otel_flask_monitor.objective.requests"
METRIC_UNIT: Final = "{request}"
METRIC_DESCRIPTION: Final = "Requests counted against their route's objectives, by outcome (good: met it)."

_logger = logging.getLogger("otel_flask_monitor")

RouteSource = Callable[[], Iterable[AppRoute]]


class _Tracked:
    """One (method, rule) pair with an objective: its thresholds, counts and series attributes."""

    __slots__ = (
        "attributes",
        "availability_bad",
        "availability_good",
        "has_availability",
        "latency_bad",
        "latency_good",
        "latency_threshold_ms",
        "objectives",
    )

    def __init__(self, method: str, rule: str, objectives: RouteObjectives) -> None:
        self.objectives = objectives
        latency = objectives.latency.objective if objectives.latency is not None else None
        self.latency_threshold_ms = latency.threshold_ms if isinstance(latency, Latency) else None
        self.has_availability = objectives.availability is not None
        self.latency_good = self.latency_bad = self.availability_good = self.availability_bad = 0
        self.attributes = {
            (found.kind, outcome): {
                "http.route": rule,
                "http.request.method": method,
                "objective": found.kind,
                "outcome": outcome,
            }
            for found in objectives
            for outcome in ("good", "bad")
        }

    def reset(self) -> None:
        self.latency_good = self.latency_bad = self.availability_good = self.availability_bad = 0

    def observations(self) -> list[Observation]:
        found = []
        if self.latency_threshold_ms is not None:
            found.append(Observation(self.latency_good, self.attributes[("latency", "good")]))
            found.append(Observation(self.latency_bad, self.attributes[("latency", "bad")]))
        if self.has_availability:
            found.append(Observation(self.availability_good, self.attributes[("availability", "good")]))
            found.append(Observation(self.availability_bad, self.attributes[("availability", "bad")]))
        return found


class ObjectiveCounter:
    """A record consumer: counts each finished request against its route's objectives.

    The app's routes are read once, at the first recorded request (in an app factory, blueprints are
    often registered after ``init_app``; Flask refuses new routes once a request was handled, so the
    URL map is final then). Patterns that match no route are logged as a warning at that moment.
    """

    def __init__(
        self, policy: ObjectivePolicy, *, max_routes: int, routes: RouteSource | None = None
    ) -> None:
        self._policy = policy
        self._max_routes = max_routes
        self._routes = routes
        self._lock = threading.Lock()
        self._tracked: dict[tuple[str, str], _Tracked] | None = None
        self._untracked: set[tuple[str, str]] = set()
        """Pairs resolved on their first request that have no objective (no route list)."""
        self._from_routes = False
        self._warned_cap = False

    def record(self, record: RequestRecord) -> None:
        route = record.route
        if route is None:
            return
        entry = self._entry(record.method, route)
        if entry is None:
            return
        threshold = entry.latency_threshold_ms
        fast = threshold is not None and record.duration_ms <= threshold
        available = not record.is_server_error
        with self._lock:
            if threshold is not None:
                if fast:
                    entry.latency_good += 1
                else:
                    entry.latency_bad += 1
            if entry.has_availability:
                if available:
                    entry.availability_good += 1
                else:
                    entry.availability_bad += 1

    def _entry(self, method: str, route: str) -> _Tracked | None:
        """The pair's tracked entry (None: no objective, or beyond the cap)."""
        tracked = self._tracked
        if tracked is None:
            tracked = self._build()
        key = (method, route)
        entry = tracked.get(key)
        if entry is None and not self._from_routes and key not in self._untracked:
            entry = self._resolve_late(key)
        return entry

    def latency_threshold_ms(self, method: str, route: str) -> float | None:
        """The pair's latency objective threshold (None: none): the aggregates count the requests
        within it, so the live objectives on the dashboard read the same decision as this counter."""
        entry = self._entry(method, route)
        return None if entry is None else entry.latency_threshold_ms

    def objective_table(self) -> dict[tuple[str, str], RouteObjectives]:
        """Every (method, rule) with an objective, as resolved so far (empty before the first request)."""
        return {key: entry.objectives for key, entry in list((self._tracked or {}).items())}

    def _build(self) -> dict[tuple[str, str], _Tracked]:
        with self._lock:
            if self._tracked is not None:
                return self._tracked
            tracked: dict[tuple[str, str], _Tracked] = {}
            routes = self._read_routes()
            if routes is not None:
                self._from_routes = True
                for pattern in self._policy.unmatched_patterns(routes):
                    _logger.warning(
                        "otel_flask_monitor: the objective pattern %r matches no route of the app "
                        "(routes: %s)",
                        pattern,
                        ", ".join(sorted({route.rule for route in routes})[:20]),
                    )
                for key, objectives in self._policy.table(routes).items():
                    if len(tracked) >= self._max_routes:
                        self._warn_cap()
                        break
                    tracked[key] = _Tracked(*key, objectives)
            self._tracked = tracked
            return tracked

    def _read_routes(self) -> list[AppRoute] | None:
        if self._routes is None:
            return None
        try:
            return list(self._routes())
        except Exception:
            _logger.warning(
                "otel_flask_monitor: cannot read the app's routes; objectives declared with "
                "@objective are ignored and each route's objectives are resolved on its first request",
                exc_info=True,
            )
            return None

    def _resolve_late(self, key: tuple[str, str]) -> _Tracked | None:
        """Without the app's route list: resolve a (method, rule) pair on its first request."""
        objectives = self._policy.resolve(*key)
        with self._lock:
            tracked = self._tracked
            assert tracked is not None
            if key in tracked or key in self._untracked:
                return tracked.get(key)
            if not objectives:
                self._untracked.add(key)
                return None
            if len(tracked) >= self._max_routes:
                self._warn_cap()
                self._untracked.add(key)
                return None
            entry = tracked[key] = _Tracked(*key, objectives)
            return entry

    def _warn_cap(self) -> None:
        if not self._warned_cap:
            self._warned_cap = True
            _logger.warning(
                "otel_flask_monitor: more than max_routes=%d (method, route) pairs have objectives; "
                "requests of the others are not counted against them (raise max_routes)",
                self._max_routes,
            )

    def observations(self) -> list[Observation]:
        # No lock: the export thread must never wait on (or, after a fork, inherit) the request
        # threads' lock. Copying the dict's values and reading an int are atomic under the GIL, and
        # each count is a monotonic counter of its own.
        tracked = list((self._tracked or {}).values())
        return [observation for entry in tracked for observation in entry.observations()]

    def after_fork_in_child(self) -> None:
        """A forked child is a new instance (new ``service.instance.id``): its counts start at 0."""
        self._lock = threading.Lock()
        for entry in (self._tracked or {}).values():
            entry.reset()


def register_instrument(meter: Meter, source: Callable[[], Iterable[ObjectiveCounter]]) -> None:
    """Create the observable counter on ``meter``; its callback reports every counter of ``source``."""

    def callback(_: CallbackOptions) -> Iterable[Observation]:
        return [observation for counter in source() for observation in counter.observations()]

    meter.create_observable_counter(METRIC_NAME, [callback], unit=METRIC_UNIT, description=METRIC_DESCRIPTION)


class ObjectiveInstrument:
    """The process's one instrument, whose callback reads every live app's counter."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counters: weakref.WeakSet[ObjectiveCounter] = weakref.WeakSet()
        self.registered = False

    def track(self, counter: ObjectiveCounter, meter: Meter) -> None:
        """Report ``counter`` through the process's instrument (created on first use)."""
        with self.lock:
            self.counters.add(counter)
            if not self.registered:
                self.registered = True
                register_instrument(meter, lambda: list(self.counters))

    def after_fork_in_child(self) -> None:
        self.lock = threading.Lock()
        for counter in list(self.counters):
            counter.after_fork_in_child()


def objective_counter(
    settings: MonitorSettings, meter: Meter, instrument: ObjectiveInstrument
) -> ObjectiveCounter:
    """The ``objectives`` consumer of an app's monitor (its ``record``); reads the app's routes at its
    first request."""
    skip_prefix = settings.url_prefix if settings.dashboard_enabled else None

    def current_app_routes() -> list[AppRoute]:
        from flask import current_app

        return app_routes(current_app._get_current_object(), skip_prefix=skip_prefix)  # type: ignore[attr-defined]

    counter = ObjectiveCounter(settings.objectives, max_routes=settings.max_routes, routes=current_app_routes)
    instrument.track(counter, meter)
    return counter
