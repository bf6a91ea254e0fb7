"""Every private name of OpenTelemetry the monitor relies on, in one place.

The Logs API and SDK still live under underscore modules, and a few things the monitor needs have
no public API (a provider's processors, the batch queue's fill, a provider's resource after fork,
the exporter's HTTP session, the Flask instrumentation's per-request span). Nothing else in the
package imports an underscore module of OpenTelemetry or reads a private attribute of its objects:
they import from here. :mod:`otel_flask_monitor._otel_private_names` lists each private name, what
depends on it, what it must be and the versions checked; tests/test_otel_compat.py checks them all
against the installed packages, and that no other module of the package reaches past this one.
Names that pull in heavy modules (the OTLP exporters, gRPC) load on first use.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
from collections.abc import Callable, Sequence
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

__all__ = [  # what other modules import from the underscore modules, through here
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
    "get_logger",
    "get_logger_provider",
    "set_logger_provider",
]

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


def is_flask_instrumentation_hook(function: object) -> bool:
    """``function`` is one of the hooks the Flask instrumentation registered on an app."""
    return str(getattr(function, "__module__", "")).startswith(_INSTRUMENTATION_MODULE)


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


def renew_metric_export_locks(provider: object) -> None:
    """Give each ``PeriodicExportingMetricReader`` of an SDK meter provider a free export lock. The SDK
    (1.45) restarts a reader's thread in a forked child but keeps the lock held around every export:
    forked while the parent's reader was exporting (gunicorn ``--preload`` spawning a worker), the
    child's thread would wait on it forever. Other providers and readers are left as they are."""
    for reader in getattr(provider, "_metric_readers", ()):
        if hasattr(reader, "_export_lock"):
            reader._export_lock = threading.Lock()


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


FAST_EXPORT_CHECKS: Final[tuple[tuple[str, Callable[[Any], bool]], ...]] = (
    ("_shutdown", lambda value: isinstance(value, bool)),
    ("_max_request_size", lambda value: isinstance(value, int)),
    ("_metrics.export_operation", callable),
    ("_client.export", callable),
)
"""What :mod:`otel_flask_monitor.otlp_exporters` reads on an OTLP/HTTP span or log exporter."""


def read_attribute_path(value: object, dotted: str) -> Any:
    """``value.a.b`` for ``dotted`` = ``"a.b"`` (an ``AttributeError`` names the missing link)."""
    for name in dotted.split("."):
        value = getattr(value, name)
    return value


def fast_export_internals_present(exporter: object) -> bool:
    """Whether an OTLP/HTTP span or log exporter has what :mod:`otel_flask_monitor.otlp_exporters`
    reads around its encoding (the SDK's own ``export()``, repeated)."""
    try:
        _lazy("RequestPayloadTooLargeError")
        return all(check(read_attribute_path(exporter, path)) for path, check in FAST_EXPORT_CHECKS)
    except (ImportError, AttributeError):
        return False


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


# ---- the Flask instrumentation ------------------------------------------------------------------


def is_instrumented(app: Flask) -> bool:
    """``FlaskInstrumentor`` instrumented ``app`` (``instrument_app``, or the class it swaps in)."""
    return bool(getattr(app, "_is_instrumented_by_opentelemetry", False))


def uninstrumented_wsgi_app(app: Flask) -> WSGIApplication | None:
    """The ``wsgi_app`` the instrumentation wrapped (it keeps it on the app), or None."""
    original: WSGIApplication | None = getattr(app, "_original_wsgi_app", None)
    return original
