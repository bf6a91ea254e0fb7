"""Record -> flat OTel attributes (semantic-convention names; primitives only, never None).

Built once per record, by :mod:`otel_flask_monitor.signals`, which hands the same mapping to the
server span and the log record. Loki stores every log attribute as structured metadata with dots
turned into underscores (``http.route`` -> ``http_route``). The full table is in docs/log-schema.md.
"""

from __future__ import annotations

from typing import Final

from opentelemetry.util.types import AttributeValue

from otel_flask_monitor.record import RequestRecord

HEADER_PREFIX: Final = "http.request.header."
EXCEPTION_ATTRIBUTE_NAMES: Final = ("exception.type", "exception.message", "exception.stacktrace")


def record_attributes(record: RequestRecord) -> dict[str, AttributeValue]:
    """Every attribute of the record: the HTTP ones the span and the log record share, then (on the
    log record only; the span carries them as an event) the exception's."""
    candidates: dict[str, AttributeValue | None] = {
        "http.request.method": record.method,
        "http.request.method_original": record.method_original,
        "http.route": record.route,
        "url.path": record.path,
        "url.query": record.query or None,
        "url.scheme": record.scheme,
        "http.response.status_code": record.status_code,
        "http.request.body.size": record.request_size,
        "http.response.body.size": record.response_size,
        "http.response.header.content-type": record.content_type,
        "client.address": record.client_address,
        "user_agent.original": record.user_agent,
        "server.address": record.server_address,
        "duration_ms": round(record.duration_ms, 3),
        "cpu_ms": round(record.cpu_ms, 3),
        "response_streamed": True if record.streamed else None,
        "response_cut_short": record.cut_short,
    }
    if record.is_server_error:
        candidates["error.type"] = record.exception.type if record.exception else str(record.status_code)
    for name, value in record.captured_headers:
        candidates[HEADER_PREFIX + name] = value
    exception = record.exception
    if exception is not None:
        candidates["exception.type"] = exception.type
        candidates["exception.message"] = exception.message
        candidates["exception.stacktrace"] = exception.stacktrace
    return {key: value for key, value in candidates.items() if value is not None}
