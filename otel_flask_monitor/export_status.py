"""Export health: what reached the Collector, what was lost, and one quiet line per outage.

The OTLP exporters log a warning on every retry and an error on every failed batch; with the
Collector down that is a flood. When the monitor owns the exporters it wraps them here: the SDK's
export loggers are captured (their last message becomes ``last_error``), one warning is written
when an outage starts and one line when export recovers, and the counts feed ``/monitoring/health``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

_logger = logging.getLogger("otel_flask_monitor.export")

# Loggers of the SDK export path whose per-batch warnings the outage tracking replaces.
SDK_EXPORT_LOGGERS: Final = (
    "opentelemetry.exporter.otlp.common.http",
    "opentelemetry.exporter.otlp.proto.http._log_exporter",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.sdk._shared_internal",
    "opentelemetry.sdk.metrics._internal.export",
)


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

    def as_dict(self) -> dict[str, Any]:
        return {
            "signal": self.signal,
            "endpoint": self.endpoint,
            "healthy": self.healthy,
            "exported": self.exported,
            "failed": self.failed,
            "dropped": self.dropped,
            "last_success_unix": self.last_success_unix,
            "last_failure_unix": self.last_failure_unix,
        }


class _SignalStatus:
    __slots__ = (
        "dropped",
        "endpoint",
        "exported",
        "failed",
        "healthy",
        "last_failure",
        "last_success",
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


class ExportHealth:
    """Counts per signal, outage detection across signals, and the bounded flush at exit."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._signals: dict[str, _SignalStatus] = {}
        self._outage_started: float | None = None
        self._lost_in_outage = 0
        self._last_error: str | None = None
        self._exit_deadline: float | None = None

    def register(self, signal: str, endpoint: str) -> None:
        with self._lock:
            self._signals[signal] = _SignalStatus(signal, endpoint)

    @property
    def configured(self) -> bool:
        return bool(self._signals)

    def note_error(self, message: str) -> None:
        with self._lock:
            self._last_error = message

    def record_success(self, signal: str, count: int) -> None:
        with self._lock:
            status = self._signals[signal]
            status.exported += count
            status.last_success = self._clock()
            was_failing = not status.healthy
            status.healthy = True
            recovered = was_failing and all(s.healthy for s in self._signals.values())
            if recovered and self._outage_started is not None:
                lasted = self._clock() - self._outage_started
                lost = self._lost_in_outage
                self._outage_started = None
                self._lost_in_outage = 0
            else:
                recovered = False
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
            status.healthy = False
            self._lost_in_outage += count
            started = self._outage_started is None
            if started:
                self._outage_started = self._clock()
            endpoint, error = status.endpoint, self._last_error
        if started:
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

    def should_skip_export(self, signal: str) -> bool:
        with self._lock:
            if self._exit_deadline is None:
                return False
            return self._clock() > self._exit_deadline or not self._signals[signal].healthy

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
            "last_error": last_error if any(not s.healthy for s in signals) else None,
            "signals": [s.as_dict() for s in signals],
        }


class CapturingFilter(logging.Filter):
    """Keeps the SDK's export messages out of the app's logs; the newest becomes ``last_error``."""

    def __init__(self, health: ExportHealth) -> None:
        super().__init__()
        self._health = health

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            try:
                self._health.note_error(record.getMessage())
            except Exception:
                self._health.note_error(str(record.msg))
        return False


def capture_sdk_export_logs(health: ExportHealth) -> None:
    log_filter = CapturingFilter(health)
    for name in SDK_EXPORT_LOGGERS:
        logging.getLogger(name).addFilter(log_filter)


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
    if health.should_skip_export(signal):
        health.record_dropped(signal, count)
        return failure
    try:
        result = export()
    except Exception as error:
        health.note_error(f"{type(error).__name__}: {error}")
        result = failure
    if result == success:
        health.record_success(signal, count)
    else:
        health.record_failure(signal, count)
    return result
