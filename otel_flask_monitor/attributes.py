"""Record -> flat OTel attributes (semantic-convention names; primitives only, never None).

Loki stores every log attribute as structured metadata with dots turned into underscores
(``http.route`` -> ``http_route``). The full table is in docs/log-schema.md.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from opentelemetry.util.types import AttributeValue

from otel_flask_monitor.record import RequestRecord


class _LastRecord(threading.local):
    """The span and the log consumer read the same record one after the other on one thread."""

    record: RequestRecord | None = None
    attributes: Mapping[str, AttributeValue] = MappingProxyType({})


_last = _LastRecord()


def request_attributes(record: RequestRecord) -> Mapping[str, AttributeValue]:
    """The HTTP attributes shared by the server span and the log record (built once per record)."""
    if _last.record is record:
        return _last.attributes
    attributes = MappingProxyType(_build_request_attributes(record))
    _last.record, _last.attributes = record, attributes
    return attributes


def _build_request_attributes(record: RequestRecord) -> dict[str, AttributeValue]:
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
        candidates[f"http.request.header.{name}"] = value
    return {key: value for key, value in candidates.items() if value is not None}


# What the Flask instrumentation does not put on its server span itself (opt-in: ``enrich_spans``).
# Method, route, path, query, scheme, status, client, user agent and host are there already, in the
# naming the user selects with OTEL_SEMCONV_STABILITY_OPT_IN; writing them again under a second
# naming would cost every span about 40 us of CPU (mostly OTLP encoding) and half a kilobyte.
# ``response_cut_short`` is known only after the span has ended, so it never reaches a span.
SPAN_ATTRIBUTE_NAMES: Final = frozenset(
    {
        "http.request.body.size",
        "http.response.body.size",
        "http.response.header.content-type",
        "duration_ms",
        "cpu_ms",
        "error.type",
        "response_streamed",
    }
)


def span_attributes(record: RequestRecord) -> dict[str, AttributeValue]:
    """The monitor's candidate additions to the instrumentation's server span (the span consumer
    writes only those the span does not carry yet)."""
    return {
        key: value
        for key, value in request_attributes(record).items()
        if key in SPAN_ATTRIBUTE_NAMES or key.startswith("http.request.header.")
    }


def exception_attributes(record: RequestRecord) -> dict[str, AttributeValue]:
    """On the log record only: the span carries the exception as an event instead."""
    if record.exception is None:
        return {}
    return {
        "exception.type": record.exception.type,
        "exception.message": record.exception.message,
        "exception.stacktrace": record.exception.stacktrace,
    }
