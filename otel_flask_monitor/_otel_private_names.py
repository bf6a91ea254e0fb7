"""The checked list of the private OpenTelemetry names the monitor relies on: where, what for, what each is.

:mod:`otel_flask_monitor._otel_compat` is the only code that touches them; this table says which
they are, so that tests/test_otel_compat.py can check every entry against the installed packages
(an upgrade that moves one fails a test that names it, not a request). Nothing in the package
imports this module at run time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Final

import requests

from otel_flask_monitor._otel_compat import (
    FAST_EXPORT_CHECKS,
    INSTRUMENTATION_BEFORE_REQUEST,
    INSTRUMENTATION_SPAN_KEY,
    INSTRUMENTATION_TEARDOWN_REQUEST,
    SDK_EXPORT_LOGGERS,
    is_flask_instrumentation_hook,
)

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
    owner: str
    """``module`` (then ``path`` is ``package.module:name``), ``logger`` (``path`` is a module that
    logs under its own name), or the kind of object it is read on (tests/test_otel_compat.py builds
    one of each)."""
    path: str
    used_for: str
    holds: Callable[[Any], bool] = bool
    """What the value must be for the monitor's use of it to hold."""


def _is(kind: type) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, kind)


def _logs_under_its_name(module: ModuleType) -> bool:
    return any(
        isinstance(value, logging.Logger) and value.name == module.__name__ for value in vars(module).values()
    )


_PRIVATE_MODULE_NAMES: Final = {
    "opentelemetry._logs:Logger": "the Logs API (Logger, LogRecord, SeverityNumber)",
    "opentelemetry._logs._internal:ProxyLoggerProvider": "is a logger provider set?",
    "opentelemetry.metrics._internal:_ProxyMeterProvider": "is a meter provider set?",
    "opentelemetry.sdk._logs:LoggerProvider": "the Logs SDK",
    "opentelemetry.sdk._logs.export:BatchLogRecordProcessor": "the Logs SDK's processors",
    "opentelemetry.sdk.resources:_get_process_dependent_resource": "after fork: the child's instance id",
    "opentelemetry.exporter.otlp.proto.http._log_exporter:OTLPLogExporter": "OTLP/HTTP logs",
    "opentelemetry.exporter.otlp.proto.grpc._log_exporter:OTLPLogExporter": "OTLP/gRPC logs",
    "opentelemetry.exporter.otlp.proto.http._common:RequestPayloadTooLargeError": "otlp_exporters",
    "opentelemetry.exporter.otlp.proto.common._log_encoder:encode_logs": "otlp_encoding's fallback",
}

PRIVATE_NAMES: Final = (
    *(PrivateName("module", path, used_for) for path, used_for in _PRIVATE_MODULE_NAMES.items()),
    PrivateName(
        "module",
        "opentelemetry.instrumentation.flask:_ENVIRON_SPAN_KEY",
        "the server span of a request (INSTRUMENTATION_SPAN_KEY)",
        lambda key: key == INSTRUMENTATION_SPAN_KEY,
    ),
    *(
        PrivateName(
            provider, "_update_resource", "after fork: a worker's own process.pid and instance id", callable
        )
        for provider in ("tracer_provider", "logger_provider", "meter_provider")
    ),
    PrivateName("meter_provider", "_metric_readers", "after fork: each reader's export lock", _is(tuple)),
    PrivateName(
        "metric_reader",
        "_export_lock",
        "after fork: a free export lock",
        lambda lock: hasattr(lock, "acquire"),
    ),
    PrivateName(
        "logger_provider",
        "_multi_log_record_processor._log_record_processors",
        "diagnostics: a provider without a processor drops every record",
        _is(tuple),
    ),
    *(
        PrivateName(
            processor, "_batch_processor._queue.maxlen", "export health: drops of a full queue", _is(int)
        )
        for processor in ("log_batch_processor", "span_batch_processor")
    ),
    *(
        PrivateName(
            exporter, "_client._transport._session", "after fork: fresh connections", _is(requests.Session)
        )
        for exporter in ("otlp_http_span_exporter", "otlp_http_log_exporter", "otlp_http_metric_exporter")
    ),
    *(
        PrivateName(exporter, name, "otlp_exporters: the SDK's export() around the fast encoder", check)
        for exporter in ("otlp_http_span_exporter", "otlp_http_log_exporter")
        for name, check in FAST_EXPORT_CHECKS
    ),
    *(
        PrivateName(
            "otlp_http_metric_exporter", name, "the metric reader reads it from the exporter", _is(dict)
        )
        for name in ("_preferred_temporality", "_preferred_aggregation")
    ),
    *(
        PrivateName("instrumented_app", name, "FlaskInstrumentor.instrument_app keeps it on the app", check)
        for name, check in (
            ("_is_instrumented_by_opentelemetry", bool),
            ("_original_wsgi_app", callable),
            (INSTRUMENTATION_BEFORE_REQUEST, is_flask_instrumentation_hook),
            (INSTRUMENTATION_TEARDOWN_REQUEST, is_flask_instrumentation_hook),
        )
    ),
    *(
        PrivateName("logger", name, "export health: the SDK's per-retry lines", _logs_under_its_name)
        for name in SDK_EXPORT_LOGGERS
    ),
)
"""Every private name of OpenTelemetry the monitor relies on: where, what for, what it must be."""
