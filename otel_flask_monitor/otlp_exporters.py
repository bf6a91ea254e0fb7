"""OTLP/HTTP span and log exporters that post the fast encoder's bytes; everything else is the SDK's.

``FastOTLPSpanExporter`` and ``FastOTLPLogExporter`` are the SDK's ``OTLPSpanExporter`` and
``OTLPLogExporter`` (opentelemetry-exporter-otlp-proto-http) with one change: ``export()`` encodes
the batch with :mod:`otel_flask_monitor.otlp_encoding` (the same ``Export*ServiceRequest`` bytes,
several times cheaper) instead of the SDK encoder. Construction, the ``OTEL_EXPORTER_OTLP_*``
variables (endpoint, headers, compression, timeout, certificates), the HTTP client with its retries
and ``Retry-After`` handling, the request-size limit, the exporter's own metrics, the log messages
(under the SDK exporters' logger names) and shutdown are the SDK's own.

``export()`` repeats the few lines of the SDK's ``export()`` around the encoding, so it reads a
handful of the SDK exporter's private attributes (the list is ``SDK_PRIVATE_NAMES``, checked
against opentelemetry-exporter-otlp-proto-http 1.45.1). If any of them is missing in the installed
SDK, the exporter says so once at debug level and uses the SDK's ``export()`` unchanged: slower,
never wrong.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import Any, Final, TypeVar

from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExportResult
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.semconv.attributes.http_attributes import HTTP_RESPONSE_STATUS_CODE

from otel_flask_monitor.otlp_encoding import encode_logs, encode_spans

try:
    # Private module, public class: its name is the `error.type` of the exporter's failed-export
    # metric, so an oversized batch must fail with this very class.
    from opentelemetry.exporter.otlp.proto.http._common import RequestPayloadTooLargeError
except ImportError:  # pragma: no cover - another SDK layout: the SDK's export() is used
    RequestPayloadTooLargeError = None  # type: ignore[assignment,misc]

__all__ = ["SDK_PRIVATE_NAMES", "FastOTLPLogExporter", "FastOTLPSpanExporter"]

_debug_logger = logging.getLogger("otel_flask_monitor")

# Every private name of the SDK this module relies on (opentelemetry-exporter-otlp-proto-http 1.45.1).
SDK_PRIVATE_NAMES: Final = (
    "OTLPSpanExporter._shutdown / OTLPLogExporter._shutdown (bool, set by shutdown())",
    "OTLPSpanExporter._max_request_size / OTLPLogExporter._max_request_size (int, <= 0: no limit)",
    "OTLPSpanExporter._metrics / OTLPLogExporter._metrics (.export_operation(n) -> context manager "
    "yielding a result with .error and .error_attrs)",
    "OTLPSpanExporter._client / OTLPLogExporter._client (opentelemetry.exporter.otlp.common.http."
    "_OTLPHTTPClient: .export(bytes) -> _ExportResult with .success, .error, .status_code)",
    "opentelemetry.exporter.otlp.proto.http._common.RequestPayloadTooLargeError (imported)",
    "opentelemetry.exporter.otlp.proto.http._common._is_request_too_large (its rule repeated: "
    "0 < max_request_size < len(payload))",
    "opentelemetry.sdk._logs (ReadableLogRecord) and opentelemetry.sdk._logs.export "
    "(LogRecordExportResult): the Logs SDK's underscore modules",
    "opentelemetry.exporter.otlp.proto.common._log_encoder.encode_logs (the SDK log encoder the "
    "fast encoder falls back to)",
)

_REQUIRED_ATTRIBUTES: Final = ("_shutdown", "_max_request_size", "_metrics", "_client")

_Item = TypeVar("_Item")
_Result = TypeVar("_Result")


def sdk_internals_present(exporter: object) -> bool:
    """Whether ``exporter`` has the private attributes the fast ``export()`` reads."""
    if RequestPayloadTooLargeError is None:
        return False
    if not all(hasattr(exporter, name) for name in _REQUIRED_ATTRIBUTES):
        return False
    metrics = exporter._metrics  # type: ignore[attr-defined]
    client = exporter._client  # type: ignore[attr-defined]
    return (
        callable(getattr(metrics, "export_operation", None))
        and callable(getattr(client, "export", None))
        and isinstance(exporter._max_request_size, int)  # type: ignore[attr-defined]
        and isinstance(exporter._shutdown, bool)  # type: ignore[attr-defined]
    )


def _export(
    exporter: Any,
    batch: Sequence[_Item],
    *,
    encode: Callable[[Sequence[_Item]], bytes],
    noun: str,
    success: _Result,
    failure: _Result,
    logger: logging.Logger,
) -> _Result:
    """The SDK exporters' export() (1.45.1) with the fast encoder; the log messages are theirs, to the
    letter (same format strings and arguments), so filters keyed on them keep working."""
    if exporter._shutdown:
        logger.warning("Exporter already shutdown, ignoring batch")
        return failure
    with exporter._metrics.export_operation(len(batch)) as result:
        try:
            serialized = encode(batch)
        except Exception as error:
            logger.error(f"Failed to encode {noun} batch: %s", error)  # noqa: TRY400 - as the SDK: no traceback
            result.error = error
            return failure
        max_request_size = exporter._max_request_size
        if 0 < max_request_size < len(serialized):
            logger.warning(
                f"Dropping {noun} batch: serialized size %d bytes exceeds max_request_size %d bytes.",
                len(serialized),
                max_request_size,
            )
            result.error = RequestPayloadTooLargeError(
                f"Serialized {noun} request size {len(serialized)} bytes exceeds max_request_size "
                f"{max_request_size} bytes."
            )
            return failure
        outcome = exporter._client.export(serialized)
        if not outcome.success:
            result.error = outcome.error
            result.error_attrs = (
                {HTTP_RESPONSE_STATUS_CODE: outcome.status_code} if outcome.status_code is not None else None
            )
            return failure
    return success


class _FastEncodingCheck:
    @cached_property
    def uses_fast_encoding(self) -> bool:
        """False if the installed SDK lacks what the fast export() reads: then export() is the SDK's."""
        present = sdk_internals_present(self)
        if not present:
            _debug_logger.debug(
                "%s: the installed OTLP exporter lacks what the fast encoder needs; the SDK encoder is used",
                type(self).__name__,
            )
        return present


class FastOTLPSpanExporter(_FastEncodingCheck, OTLPSpanExporter):
    """``OTLPSpanExporter`` (OTLP/HTTP, protobuf) whose batches are encoded by the fast encoder."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if not self.uses_fast_encoding:
            return super().export(spans)
        return _export(
            self,
            spans,
            encode=encode_spans,
            noun="span",
            success=SpanExportResult.SUCCESS,
            failure=SpanExportResult.FAILURE,
            logger=_SPAN_EXPORTER_LOGGER,
        )


class FastOTLPLogExporter(_FastEncodingCheck, OTLPLogExporter):
    """``OTLPLogExporter`` (OTLP/HTTP, protobuf) whose batches are encoded by the fast encoder."""

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        if not self.uses_fast_encoding:
            return super().export(batch)
        return _export(
            self,
            batch,
            encode=encode_logs,
            noun="logs",
            success=LogRecordExportResult.SUCCESS,
            failure=LogRecordExportResult.FAILURE,
            logger=_LOG_EXPORTER_LOGGER,
        )


# The SDK exporters' own loggers (their module names), so the monitor's export-status capture and
# any user's logging configuration see the same messages under the same names.
_SPAN_EXPORTER_LOGGER: Final = logging.getLogger(OTLPSpanExporter.__module__)
_LOG_EXPORTER_LOGGER: Final = logging.getLogger(OTLPLogExporter.__module__)
