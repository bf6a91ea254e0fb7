"""OTLP/HTTP span and log exporters that post the fast encoder's bytes; everything else is the SDK's.

``FastOTLPSpanExporter`` and ``FastOTLPLogExporter`` are the SDK's ``OTLPSpanExporter`` and
``OTLPLogExporter`` (opentelemetry-exporter-otlp-proto-http) with one change: ``export()`` encodes
the batch with :mod:`otel_flask_monitor.otlp_encoding` (the same ``Export*ServiceRequest`` bytes,
several times cheaper) instead of the SDK encoder. Construction, the ``OTEL_EXPORTER_OTLP_*``
variables (endpoint, headers, compression, timeout, certificates), the HTTP client with its retries
and ``Retry-After`` handling, the request-size limit, the exporter's own metrics, the log messages
(under the SDK exporters' logger names) and shutdown are the SDK's own.

``export()`` repeats the few lines of the SDK's ``export()`` around the encoding, so it reads a
handful of the SDK exporter's private attributes, through :mod:`otel_flask_monitor._otel_compat`
(listed in ``_otel_private_names.PRIVATE_NAMES``). If any of them is missing in the installed SDK,
the exporter says so once at debug level and uses the SDK's ``export()`` unchanged: slower, never wrong.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import Any, Final, TypeVar

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.semconv.attributes.http_attributes import HTTP_RESPONSE_STATUS_CODE

from otel_flask_monitor import _otel_compat as compat
from otel_flask_monitor._otel_compat import LogRecordExportResult, OTLPHttpLogExporter, ReadableLogRecord
from otel_flask_monitor.otlp_encoding import encode_logs, encode_spans

__all__ = ["FastOTLPLogExporter", "FastOTLPSpanExporter"]

_debug_logger = logging.getLogger("otel_flask_monitor")

_Item = TypeVar("_Item")
_Result = TypeVar("_Result")


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
    if compat.exporter_is_shut_down(exporter):
        logger.warning("Exporter already shutdown, ignoring batch")
        return failure
    with compat.export_operation(exporter, len(batch)) as result:
        try:
            serialized = encode(batch)
        except Exception as error:
            logger.error(f"Failed to encode {noun} batch: %s", error)  # noqa: TRY400 - as the SDK: no traceback
            result.error = error
            return failure
        max_request_size = compat.max_request_size(exporter)
        if 0 < max_request_size < len(serialized):
            logger.warning(
                f"Dropping {noun} batch: serialized size %d bytes exceeds max_request_size %d bytes.",
                len(serialized),
                max_request_size,
            )
            result.error = compat.RequestPayloadTooLargeError(
                f"Serialized {noun} request size {len(serialized)} bytes exceeds max_request_size "
                f"{max_request_size} bytes."
            )
            return failure
        outcome = compat.post_export_request(exporter, serialized)
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
        present = compat.fast_export_internals_present(self)
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


class FastOTLPLogExporter(_FastEncodingCheck, OTLPHttpLogExporter):
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
_LOG_EXPORTER_LOGGER: Final = logging.getLogger(OTLPHttpLogExporter.__module__)
