"""Provider set-up, only where nobody configured OpenTelemetry yet, and the handles the monitor emits through.

Providers are global, so the monitor sets each up at most once per process, and renews what it set
up in a forked child (:class:`ProcessTelemetry`, held by :mod:`otel_flask_monitor.process`).
Providers configured by the user or by ``opentelemetry-instrument`` are used as they are.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import uuid
from dataclasses import dataclass
from typing import Any, Final

from opentelemetry import metrics, trace
from opentelemetry.metrics import Meter
from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import PROCESS_PID, SERVICE_INSTANCE_ID, SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanLimits
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

from otel_flask_monitor import _otel_compat as compat
from otel_flask_monitor._version import __version__
from otel_flask_monitor.export_status import ExportHealth, capture_sdk_export_logs
from otel_flask_monitor.exporters import (
    CountingBatchLogRecordProcessor,
    CountingBatchSpanProcessor,
    TrackedExporter,
)
from otel_flask_monitor.otel_env import SIGNALS, exporter_names, otlp_endpoint, otlp_protocol, sdk_disabled

_logger = logging.getLogger("otel_flask_monitor")

INSTRUMENTATION_NAME: Final = "otel_flask_monitor"


@dataclass(frozen=True, slots=True)
class Telemetry:
    """What the monitor emits through; providers are whichever are global."""

    logger: compat.Logger
    meter: Meter
    health: ExportHealth


class ProcessTelemetry:
    """The providers and exporters the monitor set up in this process, and their export health."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.health = ExportHealth()
        self.owned: list[Any] = []
        """The providers this process's monitor created (empty when OTel was configured elsewhere)."""
        self.exporters: list[TrackedExporter] = []
        """The monitor's OTLP exporters, wrapped."""
        self.setup_done = False

    def after_fork_in_child(self) -> None:
        """A forked child (a gunicorn worker under ``--preload``) is a new instance of the service.

        Providers built before the fork carry the parent's ``process.pid`` and ``service.instance.id``:
        every worker would report as the master, one instance in the backend. The SDK (1.45) re-runs
        its process-dependent resource detectors in the child, which renews ``service.instance.id`` but
        not the ``process.pid`` the monitor adds; so every provider the monitor owns gets the child's
        identity here, the same for all three signals and the same the SDK's own after-fork hooks
        give (whichever runs last). Locks the parent's threads may have held at fork time are
        replaced (the health's, and each metric reader's export lock: forked while the parent's reader
        was exporting, the child's would wait on it forever), and the export counts start from zero:
        they described the parent.
        """
        self.lock = threading.Lock()
        self.health.after_fork_in_child()
        if not self.owned:
            return
        identity = _process_identity()
        for provider in self.owned:
            compat.renew_metric_export_locks(provider)
            try:
                if not compat.update_resource(provider, identity):
                    _logger.debug("cannot renew the resource of %r after fork", provider)
            except Exception:
                _logger.debug("renewing the resource of %r after fork failed", provider, exc_info=True)


def build_resource(service_name: str | None, fallback_service_name: str) -> Resource:
    attributes: dict[str, str] = {}
    env_names_service = "OTEL_SERVICE_NAME" in os.environ or "service.name=" in os.environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    if service_name:
        attributes[SERVICE_NAME] = service_name
    elif not env_names_service:
        attributes[SERVICE_NAME] = fallback_service_name
    if not _instance_id_pinned():
        attributes[SERVICE_INSTANCE_ID] = str(uuid.uuid4())
    # Tells the workers of a pre-fork server apart in the backend (Loki: `process_pid` metadata);
    # renewed in each forked child (ProcessTelemetry.after_fork_in_child).
    attributes[PROCESS_PID] = str(os.getpid())
    return Resource.create(attributes)


def _instance_id_pinned() -> bool:
    return "service.instance.id=" in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "")


def _process_identity() -> Resource:
    """The resource attributes that name this process: they must change when the process forks."""
    attributes: dict[str, str] = {PROCESS_PID: str(os.getpid())}
    if not _instance_id_pinned():
        instance_id = compat.process_dependent_resource().attributes.get(SERVICE_INSTANCE_ID)
        attributes[SERVICE_INSTANCE_ID] = str(instance_id or uuid.uuid4())
    return Resource(attributes)


def _import_what_exports_import() -> None:
    """requests imports ``netrc`` on its first request. Imported by an exporter thread while a pre-fork
    server forks a worker, the module's import lock stays held in the child, and every exporter of
    the worker waits on it forever (seen under gunicorn ``--preload``: the worker's span and metric
    export threads stuck in importlib's ``_lock_unlock_module``). Imported here, before the exporter
    threads start, it leaves them nothing to import (tests/test_prefork.py checks that)."""
    import netrc  # noqa: F401


def _span_limits(attribute_length_limit: int) -> SpanLimits:
    """Cut span attribute values (the Flask instrumentation's exception events carry the message and
    stack trace uncut) unless the user set the standard limit variables."""
    if os.environ.get("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT") or os.environ.get(
        "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT"
    ):
        return SpanLimits()
    return SpanLimits(max_attribute_length=attribute_length_limit)


def otlp_exporter_for(signal: str) -> Any:
    """The SDK's OTLP exporter for ``signal``, except over http/protobuf for spans and log records:
    there, its subclass posting the fast encoder's bytes (the same OTLP request, several times
    cheaper to encode; :mod:`otel_flask_monitor.otlp_exporters`). gRPC keeps the SDK's exporters."""
    protocol = otlp_protocol(signal)
    if protocol == "http/protobuf" and signal in ("traces", "logs"):
        from otel_flask_monitor.otlp_exporters import FastOTLPLogExporter, FastOTLPSpanExporter

        return FastOTLPSpanExporter() if signal == "traces" else FastOTLPLogExporter()
    return compat.otlp_exporter(protocol, signal)


def _otlp(process: ProcessTelemetry, signal: str) -> TrackedExporter:
    process.health.register(signal, otlp_endpoint(signal))
    exporter = TrackedExporter(otlp_exporter_for(signal), process.health, signal)
    process.exporters.append(exporter)
    return exporter


def _setup_traces(
    process: ProcessTelemetry, resource: Resource, attribute_length_limit: int
) -> SdkTracerProvider:
    provider = SdkTracerProvider(
        resource=resource, shutdown_on_exit=False, span_limits=_span_limits(attribute_length_limit)
    )
    for name in exporter_names("traces"):
        if name == "otlp":
            provider.add_span_processor(CountingBatchSpanProcessor(_otlp(process, "traces"), process.health))
        elif name == "console":
            provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider


def _setup_logs(process: ProcessTelemetry, resource: Resource) -> compat.SdkLoggerProvider:
    provider = compat.SdkLoggerProvider(resource=resource, shutdown_on_exit=False)
    for name in exporter_names("logs"):
        if name == "otlp":
            provider.add_log_record_processor(
                CountingBatchLogRecordProcessor(_otlp(process, "logs"), process.health)
            )
        elif name == "console":
            provider.add_log_record_processor(
                compat.SimpleLogRecordProcessor(compat.ConsoleLogRecordExporter())
            )
    compat.set_logger_provider(provider)
    return provider


def _setup_metrics(process: ProcessTelemetry, resource: Resource) -> SdkMeterProvider:
    readers = []
    for name in exporter_names("metrics"):
        if name == "otlp":
            readers.append(PeriodicExportingMetricReader(_otlp(process, "metrics")))  # type: ignore[arg-type]
        elif name == "console":
            readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter()))
    provider = SdkMeterProvider(resource=resource, metric_readers=readers, shutdown_on_exit=False)
    metrics.set_meter_provider(provider)
    return provider


def setup_telemetry(
    process: ProcessTelemetry,
    *,
    enabled: bool,
    service_name: str | None,
    fallback_service_name: str,
    flush_timeout_seconds: float,
    attribute_length_limit: int,
) -> Telemetry:
    """Configure each global provider nobody configured yet (once per process), then return handles."""
    with process.lock:
        if enabled and not process.setup_done and not sdk_disabled():
            for signal in SIGNALS:
                otlp_protocol(signal)  # a bad protocol fails init_app before anything is set up
            process.setup_done = True
            _import_what_exports_import()
            resource = build_resource(service_name, fallback_service_name)
            if not compat.tracer_provider_configured():
                process.owned.append(_setup_traces(process, resource, attribute_length_limit))
            if not compat.logger_provider_configured():
                process.owned.append(_setup_logs(process, resource))
            if not compat.meter_provider_configured():
                process.owned.append(_setup_metrics(process, resource))
            if process.health.configured:
                capture_sdk_export_logs(process.health)
            if process.owned:
                atexit.register(_shutdown_owned, process, flush_timeout_seconds)
    return Telemetry(
        logger=compat.get_logger(INSTRUMENTATION_NAME, __version__),
        meter=metrics.get_meter(INSTRUMENTATION_NAME, __version__),
        health=process.health,
    )


def _shutdown_owned(process: ProcessTelemetry, flush_timeout_seconds: float) -> None:
    """Flush what completed requests queued, within a bound even when the Collector is gone."""
    health = process.health
    dropped_before = sum(s.dropped for s in health.snapshot())
    health.begin_exit(flush_timeout_seconds)
    if health.failing:
        # Wakes exports sleeping between retries (of any signal: they share the Collector); the
        # processors' shutdown below would otherwise wait for each to give up, a whole timeout.
        for exporter in process.exporters:
            exporter.shutdown()
    # On a daemon thread so that an export stuck on the wire cannot hold up interpreter exit.
    flusher = threading.Thread(
        target=_shutdown_providers, args=(process,), name="otel-flask-monitor-exit-flush", daemon=True
    )
    flusher.start()
    flusher.join(flush_timeout_seconds)
    dropped_at_exit = sum(s.dropped for s in health.snapshot()) - dropped_before
    if dropped_at_exit:
        _logger.warning("%d telemetry item(s) could not be delivered before exit", dropped_at_exit)


def _shutdown_providers(process: ProcessTelemetry) -> None:
    for provider in process.owned:
        try:
            provider.shutdown()
        except Exception:
            _logger.debug("provider shutdown failed", exc_info=True)
