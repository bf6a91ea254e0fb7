"""Every private name of OpenTelemetry the monitor relies on, in one place, with the versions checked.

The Logs API and SDK still live under underscore modules, and a few things the monitor needs have
no public API (a provider's processors, the batch queue's fill, a provider's resource after fork,
the exporter's HTTP session, the Flask instrumentation's per-request span). Nothing else in the
package imports an underscore module of OpenTelemetry or reads a private attribute of its objects:
they import from here (tests/test_otel_compat.py checks both). :data:`PRIVATE_NAMES` lists each
private name with what depends on it; :func:`private_surface_problems` checks them all against the
installed packages, so an upgrade that moves one fails a test that names it, not a request.

Checked against :data:`CHECKED_AGAINST`. Names that pull in heavy modules (the OTLP exporters,
gRPC) load on first use.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import requests
from opentelemetry import metrics, trace
from opentelemetry._logs import (
    Logger,
    LogRecord,
    NoOpLoggerProvider,
    SeverityNumber,
    get_logger,
    get_logger_provider,
    set_logger_provider,
)
from opentelemetry._logs._internal import ProxyLoggerProvider
from opentelemetry.metrics._internal import _ProxyMeterProvider
from opentelemetry.sdk._logs import LoggerProvider as SdkLoggerProvider
from opentelemetry.sdk._logs import ReadableLogRecord, ReadWriteLogRecord
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    ConsoleLogRecordExporter,
    InMemoryLogRecordExporter,
    LogRecordExporter,
    LogRecordExportResult,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.resources import Resource

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication
    from flask import Flask
    from opentelemetry.exporter.otlp.proto.http._common import RequestPayloadTooLargeError
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as OTLPHttpLogExporter

__all__ = [
    "CHECKED_AGAINST",
    "INSTRUMENTATION_BEFORE_REQUEST",
    "INSTRUMENTATION_SPAN_KEY",
    "INSTRUMENTATION_TEARDOWN_REQUEST",
    "PRIVATE_NAMES",
    "SDK_EXPORT_LOGGERS",
    "BatchLogRecordProcessor",
    "ConsoleLogRecordExporter",
    "InMemoryLogRecordExporter",
    "LogRecord",
    "LogRecordExportResult",
    "LogRecordExporter",
    "Logger",
    "OTLPHttpLogExporter",
    "ReadWriteLogRecord",
    "ReadableLogRecord",
    "RequestPayloadTooLargeError",
    "SdkLoggerProvider",
    "SeverityNumber",
    "SimpleLogRecordProcessor",
    "adopt_metric_preferences",
    "export_operation",
    "exporter_is_shut_down",
    "fast_export_internals_present",
    "get_logger",
    "get_logger_provider",
    "is_flask_instrumentation_hook",
    "is_instrumented",
    "log_pipeline_gap",
    "logger_provider_configured",
    "max_request_size",
    "meter_provider_configured",
    "otlp_exporter",
    "post_export_request",
    "private_surface_problems",
    "process_dependent_resource",
    "queue_is_full",
    "renew_http_session",
    "sdk_encode_logs",
    "set_logger_provider",
    "tracer_provider_configured",
    "uninstrumented_wsgi_app",
    "update_resource",
]

CHECKED_AGAINST: Final = {
    "opentelemetry-api": "1.45.1",
    "opentelemetry-sdk": "1.45.1",
    "opentelemetry-exporter-otlp-proto-http": "1.45.1",
    "opentelemetry-exporter-otlp-proto-grpc": "1.45.1",
    "opentelemetry-exporter-otlp-proto-common": "1.45.1",
    "opentelemetry-exporter-otlp-common": "0.66b1",
    "opentelemetry-exporter-http-transport": "0.66b1",
    "opentelemetry-instrumentation-flask": "0.66b1",
}
"""The package versions every entry of :data:`PRIVATE_NAMES` was read in."""


@dataclass(frozen=True, slots=True)
class PrivateName:
    name: str
    """Where it lives (``module:attribute`` or ``Class.attribute``)."""
    used_for: str


PRIVATE_NAMES: Final = (
    PrivateName(
        "opentelemetry._logs", "the Logs API: Logger, LogRecord, SeverityNumber, the global provider"
    ),
    PrivateName("opentelemetry._logs._internal:ProxyLoggerProvider", "is a logger provider configured?"),
    PrivateName("opentelemetry.metrics._internal:_ProxyMeterProvider", "is a meter provider configured?"),
    PrivateName(
        "opentelemetry.sdk._logs", "the Logs SDK: LoggerProvider, ReadableLogRecord, ReadWriteLogRecord"
    ),
    PrivateName("opentelemetry.sdk._logs.export", "log record processors and exporters"),
    PrivateName(
        "LoggerProvider._multi_log_record_processor._log_record_processors",
        "diagnostics: a logger provider without a processor drops every record",
    ),
    PrivateName(
        "BatchLogRecordProcessor._batch_processor._queue / BatchSpanProcessor._batch_processor._queue",
        "export health: the SDK drops the oldest item of a full queue without counting it",
    ),
    PrivateName(
        "TracerProvider._update_resource / LoggerProvider._update_resource / MeterProvider._update_resource",
        "after fork: a worker's providers get its own process.pid and service.instance.id",
    ),
    PrivateName(
        "opentelemetry.sdk.resources:_get_process_dependent_resource",
        "after fork: the service.instance.id the SDK's own after-fork hooks give the child",
    ),
    PrivateName(
        "MetricExporter._preferred_temporality / MetricExporter._preferred_aggregation",
        "the export-health wrapper of a metric exporter hands the reader the exporter's preferences",
    ),
    PrivateName(
        "OTLP/HTTP exporters ._client._transport._session (a requests.Session)",
        "after fork: a worker must not share the parent's pooled connections",
    ),
    PrivateName(
        "opentelemetry.exporter.otlp.proto.http._log_exporter:OTLPLogExporter / "
        "opentelemetry.exporter.otlp.proto.grpc._log_exporter:OTLPLogExporter",
        "the OTLP log exporters (no public module path)",
    ),
    PrivateName(
        "OTLPSpanExporter / OTLPLogExporter (HTTP): ._shutdown, ._max_request_size, "
        "._metrics.export_operation(n), ._client.export(bytes)",
        "otlp_exporters: the SDK's export() around the fast encoder",
    ),
    PrivateName(
        "opentelemetry.exporter.otlp.proto.http._common:RequestPayloadTooLargeError",
        "otlp_exporters: the error type of an oversized batch, as the SDK reports it",
    ),
    PrivateName(
        "opentelemetry.exporter.otlp.proto.common._log_encoder:encode_logs",
        "otlp_encoding: the SDK's log encoder, for what the fast encoder leaves to it",
    ),
    PrivateName(
        "opentelemetry.instrumentation.flask:_ENVIRON_SPAN_KEY",
        "the server span the instrumentation opened for a request (WSGI environ key)",
    ),
    PrivateName(
        "Flask app ._is_instrumented_by_opentelemetry / ._original_wsgi_app / ._before_request / "
        "._teardown_request (set by FlaskInstrumentor.instrument_app)",
        "instrument an app once; keep the monitor's own routes out of the instrumentation",
    ),
    PrivateName(
        "SDK export logger names (SDK_EXPORT_LOGGERS)",
        "export health: the SDK's per-retry lines of the monitor's own exporters",
    ),
)
"""Every private name above, with what depends on it."""


# ---- providers ------------------------------------------------------------------------------------


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
    # The provider keeps its processors in a multi-processor's tuple; no public way lists them.
    multi_processor = getattr(provider, "_multi_log_record_processor", None)
    processors = getattr(multi_processor, "_log_record_processors", None)
    if isinstance(processors, tuple) and not processors:
        return "the logger provider has no log record processor"
    return None


def update_resource(provider: object, resource: Resource) -> bool:
    """Merge ``resource`` into an SDK provider's and hand it to the tracers/loggers/meters it made, as
    the providers' own after-fork hooks do; False when the provider has no such method."""
    update: Callable[[Resource], None] | None = getattr(provider, "_update_resource", None)
    if update is None:
        return False
    update(resource)
    return True


def process_dependent_resource() -> Resource:
    """What the SDK's process-dependent resource detectors say now (its providers merge the same
    after fork): in a forked child, the child's ``service.instance.id``."""
    from opentelemetry.sdk.resources import _get_process_dependent_resource

    resource: Resource = _get_process_dependent_resource()
    return resource


# ---- processors and exporters -------------------------------------------------------------------


def queue_is_full(processor: object) -> bool:
    """The batch processor's queue is full: the SDK will drop its oldest item without counting it."""
    batch = getattr(processor, "_batch_processor", None)
    queue = getattr(batch, "_queue", None)
    return queue is not None and queue.maxlen is not None and len(queue) >= queue.maxlen


def adopt_metric_preferences(wrapper: object, inner: object) -> None:
    """Give a metric exporter's wrapper the exporter's temporality and aggregation preferences, where
    ``PeriodicExportingMetricReader`` reads them (privately) from the exporter it is given."""
    for name in ("_preferred_temporality", "_preferred_aggregation"):
        setattr(wrapper, name, getattr(inner, name))


def renew_http_session(exporter: object) -> None:
    """Give an OTLP/HTTP exporter a fresh ``requests.Session`` (the same TLS settings), dropping the
    inherited one untouched; any other exporter is left as it is."""
    transport = getattr(getattr(exporter, "_client", None), "_transport", None)
    inherited = getattr(transport, "_session", None)
    if not isinstance(inherited, requests.Session):
        return
    fresh = requests.Session()
    fresh.verify = inherited.verify
    fresh.cert = inherited.cert
    transport._session = fresh  # type: ignore[union-attr]


_OTLP_EXPORTER_CLASSES: Final = {
    ("grpc", "traces"): "opentelemetry.exporter.otlp.proto.grpc.trace_exporter:OTLPSpanExporter",
    ("grpc", "logs"): "opentelemetry.exporter.otlp.proto.grpc._log_exporter:OTLPLogExporter",
    ("grpc", "metrics"): "opentelemetry.exporter.otlp.proto.grpc.metric_exporter:OTLPMetricExporter",
    ("http/protobuf", "traces"): "opentelemetry.exporter.otlp.proto.http.trace_exporter:OTLPSpanExporter",
    ("http/protobuf", "logs"): "opentelemetry.exporter.otlp.proto.http._log_exporter:OTLPLogExporter",
    ("http/protobuf", "metrics"): "opentelemetry.exporter.otlp.proto.http.metric_exporter:OTLPMetricExporter",
}


def _load(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def otlp_exporter(protocol: str, signal: str) -> Any:
    """A new OTLP exporter of ``signal`` over ``protocol``; it reads the ``OTEL_EXPORTER_OTLP_*``
    variables itself. The exporter modules load on first use (gRPC is heavy)."""
    return _load(_OTLP_EXPORTER_CLASSES[(protocol, signal)])()


_LAZY: Final = {
    "OTLPHttpLogExporter": _OTLP_EXPORTER_CLASSES[("http/protobuf", "logs")],
    "RequestPayloadTooLargeError": (
        "opentelemetry.exporter.otlp.proto.http._common:RequestPayloadTooLargeError"
    ),
    "_sdk_encode_logs": "opentelemetry.exporter.otlp.proto.common._log_encoder:encode_logs",
}


def __getattr__(name: str) -> Any:
    """The names of :data:`_LAZY`, loaded on first use and kept."""
    path = _LAZY.get(name)
    if path is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = globals()[name] = _load(path)
    return value


def _lazy(name: str) -> Any:
    return globals()[name] if name in globals() else __getattr__(name)


def sdk_encode_logs(batch: Sequence[ReadableLogRecord]) -> Any:
    """The SDK's own ``ExportLogsServiceRequest`` for ``batch`` (a protobuf message)."""
    return _lazy("_sdk_encode_logs")(batch)


_FAST_EXPORT_ATTRIBUTES: Final = ("_shutdown", "_max_request_size", "_metrics", "_client")


def fast_export_internals_present(exporter: object) -> bool:
    """Whether an OTLP/HTTP span or log exporter has what :mod:`otel_flask_monitor.otlp_exporters`
    reads around its encoding (the SDK's own ``export()``, repeated)."""
    try:
        _lazy("RequestPayloadTooLargeError")
    except (ImportError, AttributeError):
        return False
    if not all(hasattr(exporter, name) for name in _FAST_EXPORT_ATTRIBUTES):
        return False
    return (
        callable(getattr(exporter._metrics, "export_operation", None))  # type: ignore[attr-defined]
        and callable(getattr(exporter._client, "export", None))  # type: ignore[attr-defined]
        and isinstance(exporter._max_request_size, int)  # type: ignore[attr-defined]
        and isinstance(exporter._shutdown, bool)  # type: ignore[attr-defined]
    )


def exporter_is_shut_down(exporter: Any) -> bool:
    return bool(exporter._shutdown)


def export_operation(exporter: Any, count: int) -> contextlib.AbstractContextManager[Any]:
    """The exporter's own metrics around one export of ``count`` items (``.error``/``.error_attrs``
    of what it yields are reported when it ends)."""
    operation: contextlib.AbstractContextManager[Any] = exporter._metrics.export_operation(count)
    return operation


def max_request_size(exporter: Any) -> int:
    """The exporter's request-size limit in bytes (0 or less: none)."""
    return int(exporter._max_request_size)


def post_export_request(exporter: Any, payload: bytes) -> Any:
    """Post serialized bytes through the exporter's HTTP client (its retries, ``Retry-After``, timeout);
    the result has ``.success``, ``.error`` and ``.status_code``."""
    return exporter._client.export(payload)


SDK_EXPORT_LOGGERS: Final = (
    "opentelemetry.exporter.otlp.common.http",
    "opentelemetry.exporter.otlp.proto.http._log_exporter",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.sdk._shared_internal",
    "opentelemetry.sdk.metrics._internal.export",
)
"""The loggers (module names) the SDK's export path writes its per-batch and per-retry lines to."""


# ---- the Flask instrumentation ------------------------------------------------------------------

INSTRUMENTATION_SPAN_KEY: Final = "opentelemetry-flask.span_key"
"""Where the Flask instrumentation keeps the span it opened for a request, in the WSGI environ
(``_ENVIRON_SPAN_KEY``, set in its ``_before_request``). No public API names the span of a given
request: the current span is the caller's own when the monitor's hooks run outside the
instrumentation's."""
INSTRUMENTATION_BEFORE_REQUEST: Final = "_before_request"
INSTRUMENTATION_TEARDOWN_REQUEST: Final = "_teardown_request"
"""The app attributes ``instrument_app`` keeps its hooks in (``uninstrument_app`` removes them by
these references)."""
_INSTRUMENTATION_MODULE: Final = "opentelemetry.instrumentation.flask"


def is_instrumented(app: Flask) -> bool:
    """``FlaskInstrumentor`` instrumented ``app`` (``instrument_app``, or the class it swaps in)."""
    return bool(getattr(app, "_is_instrumented_by_opentelemetry", False))


def uninstrumented_wsgi_app(app: Flask) -> WSGIApplication | None:
    """The ``wsgi_app`` the instrumentation wrapped (it keeps it on the app), or None."""
    original: WSGIApplication | None = getattr(app, "_original_wsgi_app", None)
    return original


def is_flask_instrumentation_hook(function: object) -> bool:
    """``function`` is one of the hooks the Flask instrumentation registered on an app."""
    return str(getattr(function, "__module__", "")).startswith(_INSTRUMENTATION_MODULE)


# ---- the check ----------------------------------------------------------------------------------


def private_surface_problems() -> list[str]:
    """Each private name of :data:`PRIVATE_NAMES` the installed packages lack, as a sentence naming
    it (empty: all present). Builds throw-away providers, processors and exporters; no network."""
    problems: list[str] = []

    def check(name: str, condition: Callable[..., object], *arguments: Any) -> None:
        try:
            ok = bool(condition(*arguments))
        except Exception as error:
            problems.append(f"{name}: {type(error).__name__}: {error}")
            return
        if not ok:
            problems.append(f"{name}: missing or of another shape")

    for path in (*_OTLP_EXPORTER_CLASSES.values(), *_LAZY.values()):
        check(path, _load, path)
    check("opentelemetry.sdk.resources:_get_process_dependent_resource", process_dependent_resource)
    check("opentelemetry.instrumentation.flask:_ENVIRON_SPAN_KEY", _span_key_matches)
    for name in SDK_EXPORT_LOGGERS:
        check(f"logger {name} (a module)", importlib.import_module, name)
    with _throwaway_pipeline() as (providers, processors, exporters):
        for provider in providers:
            check(f"{type(provider).__name__}._update_resource", _has_method, provider, "_update_resource")
        check(
            "LoggerProvider._multi_log_record_processor._log_record_processors",
            _attribute_is,
            providers[1],
            "_multi_log_record_processor._log_record_processors",
            tuple,
        )
        for processor in processors:
            check(
                f"{type(processor).__name__}._batch_processor._queue.maxlen",
                _attribute_is,
                processor,
                "_batch_processor._queue.maxlen",
                int,
            )
        for exporter in exporters:
            kind = type(exporter).__name__
            check(
                f"{kind}._client._transport._session",
                _attribute_is,
                exporter,
                "_client._transport._session",
                requests.Session,
            )
            if kind == "OTLPMetricExporter":
                for name in ("_preferred_temporality", "_preferred_aggregation"):
                    check(f"{kind}.{name}", _attribute_is, exporter, name, dict)
            else:
                check(
                    f"{kind}: ._shutdown, ._max_request_size, ._metrics, ._client",
                    fast_export_internals_present,
                    exporter,
                )
    check("FlaskInstrumentor.instrument_app: the app attributes", _instrumented_app_attributes)
    return problems


def _has_method(owner: object, name: str) -> bool:
    return callable(getattr(owner, name))


def _attribute_is(owner: object, dotted: str, kind: type) -> bool:
    value = owner
    for name in dotted.split("."):
        value = getattr(value, name)
    return isinstance(value, kind)


def _span_key_matches() -> bool:
    from opentelemetry.instrumentation import flask as instrumentation

    return bool(instrumentation._ENVIRON_SPAN_KEY == INSTRUMENTATION_SPAN_KEY)


@contextlib.contextmanager
def _throwaway_pipeline() -> Iterator[tuple[list[Any], list[Any], list[Any]]]:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    providers: list[Any] = [
        TracerProvider(shutdown_on_exit=False),
        SdkLoggerProvider(shutdown_on_exit=False),
        MeterProvider(shutdown_on_exit=False),
    ]
    processors: list[Any] = [
        BatchLogRecordProcessor(InMemoryLogRecordExporter()),  # type: ignore[no-untyped-call]
        BatchSpanProcessor(InMemorySpanExporter()),
    ]
    exporters = [otlp_exporter("http/protobuf", signal) for signal in ("traces", "logs", "metrics")]
    try:
        yield providers, processors, exporters
    finally:
        for item in (*processors, *exporters, *providers):
            item.shutdown()


def _instrumented_app_attributes() -> bool:
    from flask import Flask
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    app = Flask("otel_flask_monitor_compat_check")
    FlaskInstrumentor().instrument_app(app)  # type: ignore[no-untyped-call]
    try:
        return (
            is_instrumented(app)
            and uninstrumented_wsgi_app(app) is not None
            and is_flask_instrumentation_hook(getattr(app, INSTRUMENTATION_BEFORE_REQUEST))
            and is_flask_instrumentation_hook(getattr(app, INSTRUMENTATION_TEARDOWN_REQUEST))
            and getattr(app, INSTRUMENTATION_BEFORE_REQUEST) in app.before_request_funcs[None]
        )
    finally:
        FlaskInstrumentor().uninstrument_app(app)  # type: ignore[no-untyped-call]
