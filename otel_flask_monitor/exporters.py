"""The monitor's own export pipeline: its exporters wrapped for export health, its queues counting drops.

Only what the monitor sets up itself goes through here (:mod:`otel_flask_monitor.telemetry`);
providers a user or ``opentelemetry-instrument`` configured are left as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from opentelemetry.sdk.metrics.export import MetricExportResult
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult

from otel_flask_monitor import _otel_compat as compat
from otel_flask_monitor.export_status import ExportHealth, monitor_pipeline, tracked_export

# Per signal: what its exporters return for a delivered and for a lost batch, and how many items a
# batch counts (a metrics batch is one collection, however many points it holds).
_RESULTS: Final[dict[str, tuple[Any, Any]]] = {
    "traces": (SpanExportResult.SUCCESS, SpanExportResult.FAILURE),
    "logs": (compat.LogRecordExportResult.SUCCESS, compat.LogRecordExportResult.FAILURE),
    "metrics": (MetricExportResult.SUCCESS, MetricExportResult.FAILURE),
}
_ITEMS_IN: Final[dict[str, Callable[[Any], int]]] = {
    "traces": len,
    "logs": len,
    "metrics": lambda _: 1,
}


class TrackedExporter:
    """One of the monitor's exporters (span, log record or metric), whose every export feeds
    :class:`~otel_flask_monitor.export_status.ExportHealth`; the SDK's per-retry lines it causes go
    there too, not to the app's log. Everything else is the wrapped exporter's."""

    def __init__(self, inner: Any, health: ExportHealth, signal: str) -> None:
        self.inner = inner
        self.signal = signal
        self._health = health
        self._success, self._failure = _RESULTS[signal]
        self._items_in = _ITEMS_IN[signal]
        if signal == "metrics":
            compat.adopt_metric_preferences(self, inner)  # the metric reader reads them from us

    def export(self, batch: Any, *args: Any, **kwargs: Any) -> Any:
        return tracked_export(
            self._health,
            signal=self.signal,
            count=self._items_in(batch),
            export=lambda: self.inner.export(batch, *args, **kwargs),
            success=self._success,
            failure=self._failure,
        )

    def force_flush(self, *args: Any, **kwargs: Any) -> bool:
        with monitor_pipeline():
            return bool(self.inner.force_flush(*args, **kwargs))

    def shutdown(self, *args: Any, **kwargs: Any) -> None:
        with monitor_pipeline():
            self.inner.shutdown(*args, **kwargs)

    def after_fork_in_child(self) -> None:
        """Give the child its own HTTP session: parent and child writing on one pooled socket interleave
        their requests, and a pool lock a parent thread held at fork time stays held in the child. The
        inherited session is dropped untouched (closing it could wait on that lock); the parent's
        connections stay open, and the child's next export dials anew."""
        compat.renew_http_session(self.inner)


class CountingBatchLogRecordProcessor(compat.BatchLogRecordProcessor):
    def __init__(self, exporter: TrackedExporter, health: ExportHealth) -> None:
        super().__init__(exporter)  # type: ignore[arg-type]  # a log record exporter in all but name
        self._health = health

    def on_emit(self, log_record: compat.ReadWriteLogRecord) -> None:
        if not compat.queue_is_full(self):
            super().on_emit(log_record)
            return
        self._health.record_dropped("logs", 1)
        with monitor_pipeline():  # the SDK's "queue full" line is the monitor's to report
            super().on_emit(log_record)


class CountingBatchSpanProcessor(BatchSpanProcessor):
    def __init__(self, exporter: TrackedExporter, health: ExportHealth) -> None:
        super().__init__(exporter)  # type: ignore[arg-type]  # a span exporter in all but name
        self._health = health

    def on_end(self, span: ReadableSpan) -> None:
        if not (span.context is not None and span.context.trace_flags.sampled and compat.queue_is_full(self)):
            super().on_end(span)
            return
        self._health.record_dropped("traces", 1)
        with monitor_pipeline():
            super().on_end(span)
