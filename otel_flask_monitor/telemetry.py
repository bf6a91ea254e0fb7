"""Provider set-up, only where nobody configured OpenTelemetry yet, and the handles the monitor uses.

Every touch of the SDK's underscore modules (the Logs SDK, the proxy provider types) lives in this
file, so an SDK change is a one-file fix.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import requests
from opentelemetry import metrics, trace
from opentelemetry._logs import (
    Logger,
    NoOpLoggerProvider,
    get_logger,
    get_logger_provider,
    set_logger_provider,
)
from opentelemetry._logs._internal import ProxyLoggerProvider
from opentelemetry.metrics import Meter
from opentelemetry.metrics._internal import _ProxyMeterProvider
from opentelemetry.sdk._logs import LoggerProvider as SdkLoggerProvider
from opentelemetry.sdk._logs import ReadableLogRecord, ReadWriteLogRecord
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    ConsoleLogRecordExporter,
    LogRecordExporter,
    LogRecordExportResult,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import PROCESS_PID, SERVICE_INSTANCE_ID, SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

from otel_flask_monitor import __version__
from otel_flask_monitor.config import ConfigError
from otel_flask_monitor.export_status import ExportHealth, capture_sdk_export_logs, tracked_export
from otel_flask_monitor.redaction import without_userinfo

_logger = logging.getLogger("otel_flask_monitor")

INSTRUMENTATION_NAME: Final = "otel_flask_monitor"

_DEFAULT_PORTS: Final = {"grpc": 4317, "http/protobuf": 4318}
_HTTP_PATHS: Final = {"traces": "/v1/traces", "logs": "/v1/logs", "metrics": "/v1/metrics"}


def sdk_disabled(environ: os._Environ[str] | dict[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def _env(*names: str, default: str = "") -> str:
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return default


def otlp_protocol(signal: str) -> str:
    protocol = _env(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
    protocol = protocol or "http/protobuf"
    if protocol not in _DEFAULT_PORTS:
        raise ConfigError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported: use 'grpc' or 'http/protobuf'"
        )
    return protocol


def otlp_endpoint(signal: str) -> str:
    """The URL the signal's OTLP exporter sends to, resolved the way the exporters resolve it, for
    display: without the ``user:password@`` an endpoint may carry (health JSON, outage warning, demo).
    The exporters read the variables themselves, credentials included."""
    protocol = otlp_protocol(signal)
    specific = _env(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT")
    if specific:
        return without_userinfo(specific)
    base = _env("OTEL_EXPORTER_OTLP_ENDPOINT", default=f"http://localhost:{_DEFAULT_PORTS[protocol]}")
    if protocol == "grpc":
        return without_userinfo(base)
    return without_userinfo(base.rstrip("/") + _HTTP_PATHS[signal])


def exporter_names(signal: str) -> list[str]:
    raw = _env(f"OTEL_{signal.upper()}_EXPORTER", default="otlp")
    return [name.strip().lower() for name in raw.split(",") if name.strip()]


def _otlp_exporter(signal: str) -> Any:
    """The OTLP exporter class instance for the signal; it reads the remaining OTEL_* variables."""
    if otlp_protocol(signal) == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogs
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetrics
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpans

        grpc_classes: dict[str, Any] = {"traces": GrpcSpans, "logs": GrpcLogs, "metrics": GrpcMetrics}
        return grpc_classes[signal]()
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogs
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetrics
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpans

    http_classes: dict[str, Any] = {"traces": HttpSpans, "logs": HttpLogs, "metrics": HttpMetrics}
    return http_classes[signal]()


class TrackedSpanExporter(SpanExporter):
    def __init__(self, inner: SpanExporter, health: ExportHealth) -> None:
        self._inner = inner
        self._health = health

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return tracked_export(
            self._health,
            signal="traces",
            count=len(spans),
            export=lambda: self._inner.export(spans),
            success=SpanExportResult.SUCCESS,
            failure=SpanExportResult.FAILURE,
        )

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


class TrackedLogExporter(LogRecordExporter):
    def __init__(self, inner: LogRecordExporter, health: ExportHealth) -> None:
        self._inner = inner
        self._health = health

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        return tracked_export(
            self._health,
            signal="logs",
            count=len(batch),
            export=lambda: self._inner.export(batch),
            success=LogRecordExportResult.SUCCESS,
            failure=LogRecordExportResult.FAILURE,
        )

    def shutdown(self) -> None:
        self._inner.shutdown()  # type: ignore[no-untyped-call]

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


class TrackedMetricExporter(MetricExporter):
    def __init__(self, inner: MetricExporter, health: ExportHealth) -> None:
        super().__init__(
            preferred_temporality=inner._preferred_temporality,  # the reader reads them there
            preferred_aggregation=inner._preferred_aggregation,
        )
        self._inner = inner
        self._health = health

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        return tracked_export(
            self._health,
            signal="metrics",
            count=1,
            export=lambda: self._inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs),
            success=MetricExportResult.SUCCESS,
            failure=MetricExportResult.FAILURE,
        )

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self._inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._inner.shutdown(timeout_millis=timeout_millis, **kwargs)


def _queue_is_full(processor: object) -> bool:
    # The SDK's batch processor drops the oldest item silently when its queue is full; it exposes no
    # counter, so the monitor looks at the queue before handing over an item.
    batch = getattr(processor, "_batch_processor", None)
    queue = getattr(batch, "_queue", None)
    return queue is not None and queue.maxlen is not None and len(queue) >= queue.maxlen


class CountingBatchLogRecordProcessor(BatchLogRecordProcessor):
    def __init__(self, exporter: LogRecordExporter, health: ExportHealth) -> None:
        super().__init__(exporter)
        self._health = health

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        if _queue_is_full(self):
            self._health.record_dropped("logs", 1)
        super().on_emit(log_record)


class CountingBatchSpanProcessor(BatchSpanProcessor):
    def __init__(self, exporter: SpanExporter, health: ExportHealth) -> None:
        super().__init__(exporter)
        self._health = health

    def on_end(self, span: ReadableSpan) -> None:
        if span.context is not None and span.context.trace_flags.sampled and _queue_is_full(self):
            self._health.record_dropped("traces", 1)
        super().on_end(span)


@dataclass(frozen=True, slots=True)
class Telemetry:
    """What the monitor emits through; providers are whichever are global."""

    logger: Logger
    meter: Meter
    health: ExportHealth


class _ProcessTelemetry:
    """Process-wide: providers are global, so they are set up at most once per process."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.health = ExportHealth()
        self.owned: list[Any] = []
        self.otlp_exporters: list[Any] = []
        self.setup_done = False


_PROCESS = _ProcessTelemetry()


def tracer_provider_configured() -> bool:
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def logger_provider_configured() -> bool:
    return not isinstance(get_logger_provider(), ProxyLoggerProvider)


def meter_provider_configured() -> bool:
    return not isinstance(metrics.get_meter_provider(), _ProxyMeterProvider)


def log_pipeline_gap() -> str | None:
    """Why log records emitted now would reach no exporter, or None when a processor takes them (or
    the provider is of a kind the monitor cannot look into)."""
    provider = get_logger_provider()
    if isinstance(provider, ProxyLoggerProvider):
        return "no logger provider is configured, so log records are dropped"
    if isinstance(provider, NoOpLoggerProvider):
        return "the global logger provider is a no-op"
    if not isinstance(provider, SdkLoggerProvider):
        return None
    # Private (SDK 1.45.1, opentelemetry/sdk/_logs/_internal/__init__.py): the provider keeps its
    # processors in a multi-processor's tuple; there is no public way to list them.
    multi_processor = getattr(provider, "_multi_log_record_processor", None)
    processors = getattr(multi_processor, "_log_record_processors", None)
    if isinstance(processors, tuple) and not processors:
        return "the logger provider has no log record processor"
    return None


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
    # refreshed in each forked child by _after_fork_in_child.
    attributes[PROCESS_PID] = str(os.getpid())
    return Resource.create(attributes)


def _instance_id_pinned() -> bool:
    return "service.instance.id=" in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "")


def _process_identity() -> Resource:
    """The resource attributes that name this process: they must change when the process forks."""
    attributes: dict[str, str] = {PROCESS_PID: str(os.getpid())}
    if not _instance_id_pinned():
        attributes[SERVICE_INSTANCE_ID] = str(uuid.uuid4())
    return Resource(attributes)


def _after_fork_in_child() -> None:
    """A forked child (a gunicorn worker under ``--preload``) is a new instance of the service.

    Providers built before the fork carry the parent's ``process.pid`` and ``service.instance.id``:
    every worker would report as the master, one instance in the backend. The SDK (1.45) re-runs its
    own process-dependent resource detectors in the child, which renews ``service.instance.id`` but
    not the ``process.pid`` the monitor adds; so the monitor gives every provider it owns one fresh
    identity here, shared by all three signals. Locks the parent's threads may have held at fork time
    are replaced, and the export counts start from zero: they described the parent.
    """
    _PROCESS.lock = threading.Lock()
    _PROCESS.health.reset_after_fork()
    for exporter in _PROCESS.otlp_exporters:
        _drop_inherited_connections(exporter)
    if not _PROCESS.owned:
        return
    identity = _process_identity()
    for provider in _PROCESS.owned:
        for reader in getattr(provider, "_metric_readers", ()):
            _renew_export_lock(reader)
        # Private: the SDK providers' own after-fork hook uses `_update_resource` (merge the new
        # attributes into the provider's resource and hand it to the tracers/loggers already made);
        # there is no public way to change a provider's resource. The SDK's hooks run before this
        # one (registered earlier, at provider construction), so the identity set here is final.
        update = getattr(provider, "_update_resource", None)
        if update is None:
            _logger.debug("cannot renew the resource of %r after fork", provider)
            continue
        try:
            update(identity)
        except Exception:
            _logger.debug("renewing the resource of %r after fork failed", provider, exc_info=True)


def _import_what_exports_import() -> None:
    """requests imports ``netrc`` on its first request. Imported by an exporter thread while a pre-fork
    server forks a worker, the module's import lock stays held in the child, and every exporter of
    the worker waits on it forever (seen under gunicorn ``--preload``: the worker's span and metric
    export threads stuck in importlib's ``_lock_unlock_module``). Imported here, before the exporter
    threads start, it leaves them nothing to import (tests/test_prefork.py checks that)."""
    import netrc  # noqa: F401


def _renew_export_lock(reader: Any) -> None:
    """The SDK's PeriodicExportingMetricReader (1.45) restarts its thread in a forked child but keeps
    the lock it holds around every export: forked while the parent's thread was exporting (gunicorn
    ``--preload`` spawning a worker), the child's thread waits on that lock forever and the worker
    never exports a metric. The SDK's hook starts the thread, which waits one export interval before
    its first export; this hook runs right after it and gives the reader a free lock."""
    if hasattr(reader, "_export_lock"):  # private; absent in another SDK version: nothing to renew
        reader._export_lock = threading.Lock()


def _drop_inherited_connections(exporter: Any) -> None:
    """Give the child its own HTTP session: parent and child writing on one pooled socket interleave
    their requests, and a pool lock a parent thread held at fork time stays held in the child. The
    inherited session is dropped untouched (closing it could wait on that lock); the parent's
    connections stay open, and the child's next export dials anew."""
    # Private: the OTLP/HTTP exporter keeps its transport, and the transport its requests.Session.
    inner = getattr(exporter, "_inner", None)
    transport = getattr(getattr(inner, "_client", None), "_transport", None)
    inherited = getattr(transport, "_session", None)
    if not isinstance(inherited, requests.Session):
        return
    fresh = requests.Session()
    fresh.verify = inherited.verify
    fresh.cert = inherited.cert
    transport._session = fresh  # type: ignore[union-attr]


def _span_limits(attribute_length_limit: int) -> SpanLimits:
    """Cut span attribute values (the Flask instrumentation's exception events carry the message and
    stack trace uncut) unless the user set the standard limit variables."""
    if os.environ.get("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT") or os.environ.get(
        "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT"
    ):
        return SpanLimits()
    return SpanLimits(max_attribute_length=attribute_length_limit)


def _setup_traces(resource: Resource, health: ExportHealth, attribute_length_limit: int) -> SdkTracerProvider:
    provider = SdkTracerProvider(
        resource=resource, shutdown_on_exit=False, span_limits=_span_limits(attribute_length_limit)
    )
    for name in exporter_names("traces"):
        if name == "otlp":
            health.register("traces", otlp_endpoint("traces"))
            exporter = TrackedSpanExporter(_otlp_exporter("traces"), health)
            _PROCESS.otlp_exporters.append(exporter)
            provider.add_span_processor(CountingBatchSpanProcessor(exporter, health))
        elif name == "console":
            provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider


def _setup_logs(resource: Resource, health: ExportHealth) -> SdkLoggerProvider:
    provider = SdkLoggerProvider(resource=resource, shutdown_on_exit=False)
    for name in exporter_names("logs"):
        if name == "otlp":
            health.register("logs", otlp_endpoint("logs"))
            exporter = TrackedLogExporter(_otlp_exporter("logs"), health)
            _PROCESS.otlp_exporters.append(exporter)
            provider.add_log_record_processor(CountingBatchLogRecordProcessor(exporter, health))
        elif name == "console":
            provider.add_log_record_processor(SimpleLogRecordProcessor(ConsoleLogRecordExporter()))
    set_logger_provider(provider)
    return provider


def _setup_metrics(resource: Resource, health: ExportHealth) -> SdkMeterProvider:
    readers = []
    for name in exporter_names("metrics"):
        if name == "otlp":
            health.register("metrics", otlp_endpoint("metrics"))
            metric_exporter = TrackedMetricExporter(_otlp_exporter("metrics"), health)
            _PROCESS.otlp_exporters.append(metric_exporter)
            readers.append(PeriodicExportingMetricReader(metric_exporter))
        elif name == "console":
            readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter()))
    provider = SdkMeterProvider(resource=resource, metric_readers=readers, shutdown_on_exit=False)
    metrics.set_meter_provider(provider)
    return provider


def setup_telemetry(
    *,
    enabled: bool,
    service_name: str | None,
    fallback_service_name: str,
    flush_timeout_seconds: float,
    attribute_length_limit: int,
) -> Telemetry:
    """Configure each global provider nobody configured yet (once per process), then return handles.

    Providers configured by the user or by ``opentelemetry-instrument`` are used as they are.
    """
    with _PROCESS.lock:
        if enabled and not _PROCESS.setup_done and not sdk_disabled():
            for signal in ("traces", "logs", "metrics"):
                otlp_protocol(signal)  # a bad protocol fails init_app before anything is set up
            _PROCESS.setup_done = True
            _import_what_exports_import()
            resource = build_resource(service_name, fallback_service_name)
            if not tracer_provider_configured():
                _PROCESS.owned.append(_setup_traces(resource, _PROCESS.health, attribute_length_limit))
            if not logger_provider_configured():
                _PROCESS.owned.append(_setup_logs(resource, _PROCESS.health))
            if not meter_provider_configured():
                _PROCESS.owned.append(_setup_metrics(resource, _PROCESS.health))
            if _PROCESS.health.configured:
                capture_sdk_export_logs(_PROCESS.health)
            if _PROCESS.owned:
                atexit.register(_shutdown_owned, flush_timeout_seconds)
            if hasattr(os, "register_at_fork"):
                # Registered after the providers': os.register_at_fork runs child hooks in order.
                os.register_at_fork(after_in_child=_after_fork_in_child)
    return Telemetry(
        logger=get_logger(INSTRUMENTATION_NAME, __version__),
        meter=metrics.get_meter(INSTRUMENTATION_NAME, __version__),
        health=_PROCESS.health,
    )


def owned_providers() -> list[Any]:
    """The providers this process's monitor created (empty when OTel was configured elsewhere)."""
    return list(_PROCESS.owned)


def _shutdown_owned(flush_timeout_seconds: float) -> None:
    """Flush what completed requests queued, within a bound even when the Collector is gone."""
    health = _PROCESS.health
    dropped_before = sum(s.dropped for s in health.snapshot())
    health.begin_exit(flush_timeout_seconds)
    if health.failing:
        # Wakes exports sleeping between retries (of any signal: they share the Collector); the
        # processors' shutdown below would otherwise wait for each to give up, a whole timeout.
        for exporter in _PROCESS.otlp_exporters:
            exporter.shutdown()
    # On a daemon thread so that an export stuck on the wire cannot hold up interpreter exit.
    flusher = threading.Thread(target=_shutdown_providers, name="otel-flask-monitor-exit-flush", daemon=True)
    flusher.start()
    flusher.join(flush_timeout_seconds)
    dropped_at_exit = sum(s.dropped for s in health.snapshot()) - dropped_before
    if dropped_at_exit:
        _logger.warning("%d telemetry item(s) could not be delivered before exit", dropped_at_exit)


def _shutdown_providers() -> None:
    for provider in _PROCESS.owned:
        try:
            provider.shutdown()
        except Exception:
            _logger.debug("provider shutdown failed", exc_info=True)
