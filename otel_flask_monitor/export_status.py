"""Export health: what reached the Collector, what was lost, and one quiet line per outage.

The OTLP exporters log a warning on every retry and an error on every failed batch; with the
Collector down that is a flood. When the monitor owns the exporters it wraps them
(:mod:`otel_flask_monitor.exporters`): what the SDK logs while it works for the monitor's own
pipeline is captured (the first message of a failure becomes ``last_error``), one warning is written
when an outage starts and one line when export recovers, and the counts feed ``/monitoring/health``.
Exporters the user configured keep every line they log: the capture recognises the monitor's own
work by :func:`monitor_pipeline`, which the wrappers enter on the thread doing it.

Each signal also says how its connection stands (:data:`SIGNAL_CONNECTIONS`): a Collector that was never
reached (nothing runs there yet: a demo, a first deployment) is told apart from one that went away.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from otel_flask_monitor._otel_compat import SDK_EXPORT_LOGGERS
from otel_flask_monitor.redaction import truncate

_logger = logging.getLogger("otel_flask_monitor.export")

_MAX_ERROR_BYTES: Final = 300

# Successful exports in a row, with every signal healthy, before an outage is declared over: a
# Collector that answers only some requests in time would otherwise flap between a warning and a
# recovery line on every batch.
RECOVERY_CONFIRMATIONS: Final = 3

# Per signal: nothing exported or failed yet; the last export succeeded; exports fail and none ever succeeded
# since the process started; exports fail after at least one succeeded.
PENDING: Final = "pending"
CONNECTED: Final = "connected"
NEVER_REACHED: Final = "never_reached"
LOST: Final = "lost"
SIGNAL_CONNECTIONS: Final = (PENDING, CONNECTED, NEVER_REACHED, LOST)
# Over all signals: the two failing states are "never_reached" (no signal ever got through) and "failing"
# (some signal did, so the endpoint worked once or works for another signal); "not_tracked" when the
# exporters are not the monitor's.
FAILING: Final = "failing"
NOT_TRACKED: Final = "not_tracked"


def _connection_of(healthy: bool, last_success: float | None) -> str:
    if not healthy:
        return NEVER_REACHED if last_success is None else LOST
    return PENDING if last_success is None else CONNECTED


@dataclass(frozen=True, slots=True)
class SignalSnapshot:
    signal: str
    endpoint: str
    healthy: bool
    exported: int
    failed: int
    dropped: int
    last_success_unix: float | None
    last_failure_unix: float | None
    connection: str = PENDING
    """One of :data:`SIGNAL_CONNECTIONS`."""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def overall_connection(signals: list[SignalSnapshot]) -> str:
    """One word for all signals (see the module constants)."""
    if not signals:
        return NOT_TRACKED
    if any(not s.healthy for s in signals):
        ever_reached = any(s.last_success_unix is not None for s in signals)
        return FAILING if ever_reached else NEVER_REACHED
    if any(s.connection == CONNECTED for s in signals):
        return CONNECTED
    return PENDING


class _SignalStatus:
    __slots__ = (
        "dropped",
        "endpoint",
        "exported",
        "failed",
        "healthy",
        "last_failure",
        "last_success",
        "only_checked",
        "signal",
    )

    def __init__(self, signal: str, endpoint: str) -> None:
        self.signal = signal
        self.endpoint = endpoint
        self.healthy = True
        self.exported = 0
        self.failed = 0
        self.dropped = 0
        self.last_success: float | None = None
        self.last_failure: float | None = None
        # Failing by a start-up check (note_unreachable), not by an export: shown, never acted on.
        self.only_checked = False

    @property
    def failing_exports(self) -> bool:
        return not self.healthy and not self.only_checked


class ExportHealth:
    """Counts per signal, outage detection across signals, and the bounded flush at exit."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._signals: dict[str, _SignalStatus] = {}
        self._outage_started: float | None = None
        self._successes_in_a_row = 0
        self._lost_in_outage = 0
        self._last_error: str | None = None
        self._exit_deadline: float | None = None
        self._recovered_at: float | None = None
        self._exporting = threading.local()

    def register(self, signal: str, endpoint: str) -> None:
        with self._lock:
            self._signals[signal] = _SignalStatus(signal, endpoint)

    def after_fork_in_child(self) -> None:
        """In a forked child: the same signals and endpoints, none of the parent's counts or state.

        A parent's thread may have held the lock at fork time; the child gets a new one.
        """
        self._lock = threading.Lock()
        self._signals = {name: _SignalStatus(name, s.endpoint) for name, s in self._signals.items()}
        self._outage_started = None
        self._successes_in_a_row = 0
        self._lost_in_outage = 0
        self._last_error = None
        self._exit_deadline = None
        self._recovered_at = None
        self._exporting = threading.local()

    @property
    def configured(self) -> bool:
        return bool(self._signals)

    def note_error(self, message: str, signal: str | None = None) -> None:
        """An export error reported by the SDK; with its signal known, the outage begins now
        rather than when the exporter gives up retrying (its whole timeout later)."""
        with self._lock:
            if self._last_error is None:
                # The first error of a failure episode names the cause; later ones repeat it.
                self._last_error = truncate(message, _MAX_ERROR_BYTES)
            status = self._signals.get(signal) if signal else None
            started = status is not None and self._mark_failing_locked(status)
        if started and status is not None:
            self._warn_outage(status.endpoint)

    def note_unreachable(self, signal: str, message: str) -> None:
        """A start-up check found nothing listening where ``signal`` goes (the demo's check).

        The signal shows as never reached from the first second, and the outage opens silently (the
        caller has told the user; the SDK's first failure adds no warning). A check is not an export:
        at exit what is queued is still tried, and the first export's outcome replaces the check's.
        """
        with self._lock:
            status = self._signals.get(signal)
            if status is None or status.last_success is not None or status.last_failure is not None:
                return
            if self._last_error is None:
                self._last_error = truncate(message, _MAX_ERROR_BYTES)
            status.healthy = False
            status.only_checked = True
            if self._outage_started is None:
                self._outage_started = self._clock()

    def record_success(self, signal: str, count: int) -> None:
        with self._lock:
            status = self._signals[signal]
            status.exported += count
            status.last_success = self._clock()
            status.healthy = True
            status.only_checked = False
            self._last_error = None
            recovered = False
            if self._outage_started is not None and all(s.healthy for s in self._signals.values()):
                self._successes_in_a_row += 1
                if self._successes_in_a_row >= RECOVERY_CONFIRMATIONS:
                    recovered = True
                    self._recovered_at = self._clock()
                    lasted = self._recovered_at - self._outage_started
                    lost = self._lost_in_outage
                    self._outage_started = None
                    self._lost_in_outage = 0
        if recovered:
            _logger.warning(
                "telemetry export recovered after %.0f s; %d item(s) were lost during the outage",
                lasted,
                lost,
            )

    def record_failure(self, signal: str, count: int) -> None:
        with self._lock:
            status = self._signals[signal]
            status.failed += count
            status.last_failure = self._clock()
            self._lost_in_outage += count
            started = self._mark_failing_locked(status)
        if started:
            self._warn_outage(status.endpoint)

    def _mark_failing_locked(self, status: _SignalStatus) -> bool:
        """Mark the signal failing; True when this starts an outage (none was open)."""
        status.healthy = False
        status.only_checked = False
        self._successes_in_a_row = 0
        if self._outage_started is not None:
            return False
        started: float | None = getattr(self._exporting, "started", None)
        if started is not None and self._recovered_at is not None and started < self._recovered_at:
            # An export begun before the last recovery (a request that waited out its timeout while
            # the other exporters got through) reports late on the outage that recovery closed.
            return False
        self._outage_started = self._clock()
        return True

    def begin_export(self) -> None:
        """The calling thread starts an export (its failure, reported later, knows when it began)."""
        self._exporting.started = self._clock()

    def end_export(self) -> None:
        self._exporting.started = None

    def _warn_outage(self, endpoint: str) -> None:
        with self._lock:
            error = self._last_error
        _logger.warning(
            "telemetry export to %s failed (%s); the app is unaffected, telemetry is dropped until "
            "the endpoint answers again (no further warnings during this outage)",
            endpoint,
            error or "no detail",
        )

    def record_dropped(self, signal: str, count: int) -> None:
        with self._lock:
            self._signals[signal].dropped += count
            if self._outage_started is not None:
                self._lost_in_outage += count

    def begin_exit(self, timeout_seconds: float) -> None:
        """From now on, exports past the deadline, or during an outage, are dropped at once."""
        with self._lock:
            self._exit_deadline = self._clock() + timeout_seconds

    @property
    def in_outage(self) -> bool:
        """An outage was announced and its recovery not yet confirmed."""
        with self._lock:
            return self._outage_started is not None

    @property
    def failing(self) -> bool:
        """The last export of some signal failed (a recovering outage is not failing)."""
        with self._lock:
            return any(s.failing_exports for s in self._signals.values())

    def should_skip_export(self) -> bool:
        """At exit, while a signal is failing or past the flush deadline, exports are dropped at once."""
        with self._lock:
            if self._exit_deadline is None:
                return False
            failing = any(s.failing_exports for s in self._signals.values())
            return failing or self._clock() > self._exit_deadline

    def snapshot(self) -> list[SignalSnapshot]:
        with self._lock:
            return [
                SignalSnapshot(
                    signal=s.signal,
                    endpoint=s.endpoint,
                    healthy=s.healthy,
                    exported=s.exported,
                    failed=s.failed,
                    dropped=s.dropped,
                    last_success_unix=s.last_success,
                    last_failure_unix=s.last_failure,
                    connection=_connection_of(s.healthy, s.last_success),
                )
                for s in self._signals.values()
            ]

    def as_dict(self) -> dict[str, Any]:
        signals = self.snapshot()
        with self._lock:
            last_error = self._last_error
        return {
            "managed_by_monitor": bool(signals),
            "healthy": all(s.healthy for s in signals),
            "connection": overall_connection(signals),
            "last_error": last_error if any(not s.healthy for s in signals) else None,
            "signals": [s.as_dict() for s in signals],
        }


_PIPELINE: Final = threading.local()


@contextlib.contextmanager
def monitor_pipeline() -> Iterator[None]:
    """On this thread, while the body runs, the SDK works for the monitor's own export pipeline: what
    it logs is the monitor's to report (:class:`CapturingFilter`)."""
    _PIPELINE.depth = getattr(_PIPELINE, "depth", 0) + 1
    try:
        yield
    finally:
        _PIPELINE.depth -= 1


def in_monitor_pipeline() -> bool:
    return getattr(_PIPELINE, "depth", 0) > 0


class CapturingFilter(logging.Filter):
    """Keeps the SDK's export lines for the monitor's own pipeline out of the app's logs (they feed
    ``last_error``); lets every other line through, so exporters the user set up log as they would."""

    def __init__(self, health: ExportHealth) -> None:
        super().__init__()
        self._health = health

    def filter(self, record: logging.LogRecord) -> bool:
        if not in_monitor_pipeline():
            return True
        if record.levelno >= logging.WARNING:
            try:
                message = record.getMessage()
            except Exception:
                message = str(record.msg)
            self._health.note_error(message, _signal_of(record.name, message))
        return False


def _signal_of(logger_name: str, message: str) -> str | None:
    for marker, signal in (
        ("_log_exporter", "logs"),
        ("trace_exporter", "traces"),
        ("metric_exporter", "metrics"),
    ):
        if marker in logger_name:
            return signal
    # The gRPC exporters share one logger; their messages name what they were exporting.
    for word, signal in (
        (" logs", "logs"),
        (" spans", "traces"),
        (" traces", "traces"),
        (" metrics", "metrics"),
    ):
        if word in message:
            return signal
    return None


def capture_sdk_export_logs(health: ExportHealth) -> CapturingFilter:
    """Put the capture on the SDK's export loggers (once per process: the monitor's pipeline is)."""
    log_filter = CapturingFilter(health)
    for name in SDK_EXPORT_LOGGERS:
        logging.getLogger(name).addFilter(log_filter)
    return log_filter


T = TypeVar("T")


def tracked_export(
    health: ExportHealth,
    *,
    signal: str,
    count: int,
    export: Callable[[], T],
    success: T,
    failure: T,
) -> T:
    """Run one export through the health bookkeeping; an exporter that raises counts as failed."""
    if health.should_skip_export():
        health.record_dropped(signal, count)
        return failure
    health.begin_export()
    try:
        try:
            with monitor_pipeline():
                result = export()
        except Exception as error:
            health.note_error(f"{type(error).__name__}: {error}")
            result = failure
        if result == success:
            health.record_success(signal, count)
        else:
            health.record_failure(signal, count)
    finally:
        health.end_export()
    return result
