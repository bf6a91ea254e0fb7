"""SDK spans and log records -> serialized OTLP export requests, written straight to protobuf wire format.

This module owns the encoding of a batch of ``ReadableSpan`` / ``ReadableLogRecord`` (SDK 1.45) into
the bytes of an ``ExportTraceServiceRequest`` / ``ExportLogsServiceRequest``: the payload the OTLP
exporters post. It produces the message the SDK's own encoder
(``opentelemetry.exporter.otlp.proto.common``: ``encode_spans``, ``encode_logs``) builds, byte for
byte, without the SDK's detour through one protobuf object per span, attribute and value: each
message is written in place, and what repeats is encoded once and reused across batches (the
resource and scope, recent attribute key/value pairs, span names, severity texts, event names). The
fields and caches it writes with are :mod:`otel_flask_monitor.otlp_wire`.

What the SDK encoder does, this one does the same way: grouping by resource then scope in order of
first appearance (by the same dict equality), span kinds, status, events, links, trace state, the
``is_remote`` flags, dropped counts, timestamps, severity, ``event_name``, and every AnyValue kind
(``None``, ``bool``, ``int`` as int64, ``float``, ``bytes``, ``str``, sequences, mappings). Anything
it does not encode itself -- a value of another type (a ``str`` or ``int`` subclass, an enum, an
object), an int outside int64, a string that is not valid UTF-8, a counter out of range -- sends
the whole batch to the SDK encoder instead, so the output is always what the SDK would have sent
(and the SDK's own handling of bad values, logging and dropping them, applies unchanged).

Pure Python on purpose: the SDK encoder's cost is building one protobuf object per field from
Python, not the serialisation itself; writing the bytes with ``str.encode``, ``struct`` and joins is
several times cheaper and needs no compiled wheel. The caches are module-level, shared by every
exporter of the process: each touch is one dict operation (atomic under the GIL, safe in
free-threaded builds), and a lost race costs a re-encoding, never a wrong entry. Each is bounded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode_spans
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import Link, SpanContext, SpanKind, Status

from otel_flask_monitor._otel_compat import ReadableLogRecord, sdk_encode_logs
from otel_flask_monitor.otlp_wire import (
    INT32_END,
    UINT32_END,
    AttributeEncoder,
    IdentityCache,
    StringFieldCache,
    UnsupportedValueError,
    any_value,
    delimited,
    fixed64_field,
    pack_fixed32,
    string_field,
    uint32_field,
    varint,
)

__all__ = ["UnsupportedValueError", "encode_logs", "encode_logs_fast", "encode_spans", "encode_spans_fast"]


# One encoder per attribute field tag: Resource.attributes 1, InstrumentationScope.attributes and
# Span.Event.attributes 3, Span.Link.attributes 4, Span.attributes 9, LogRecord.attributes 6.
_RESOURCE_ATTRIBUTES: Final = AttributeEncoder(b"\x0a", max_entries=256)
_FIELD_3_ATTRIBUTES: Final = AttributeEncoder(b"\x1a", max_entries=256)
_LINK_ATTRIBUTES: Final = AttributeEncoder(b"\x22", max_entries=256)
_SPAN_ATTRIBUTES: Final = AttributeEncoder(b"\x4a")
_LOG_ATTRIBUTES: Final = AttributeEncoder(b"\x32")


# ---------------------------------------------------------------------------------------------------
# Resource and scope, grouped the SDK's way and encoded once per object


def _resource_message(resource: Any) -> bytes:
    """``Resource`` (attributes 1) as a length-delimited field body."""
    return delimited(_RESOURCE_ATTRIBUTES.encode(resource.attributes))


def _scope_message(scope: Any) -> bytes:
    """``InstrumentationScope`` (name 1, version 2, attributes 3) as a length-delimited field body."""
    if scope is None:
        return b"\x00"
    return delimited(
        string_field(b"\x0a", scope.name)
        + string_field(b"\x12", scope.version)
        + _FIELD_3_ATTRIBUTES.encode(scope.attributes)
    )


_RESOURCES: Final = IdentityCache()
_SCOPES: Final = IdentityCache()
_NOTHING: Final = object()


def _grouped(items: Iterable[Any]) -> dict[Any, dict[Any, list[Any]]]:
    """Items by resource, then by scope, in order of first appearance.

    The same nesting of dicts keyed by the SDK objects as the SDK encoder's, so equal resources and
    scopes group exactly as there; consecutive items with the very same objects (the common case:
    one provider) skip the lookups, whose ``Resource.__hash__`` serialises the attributes to JSON.
    """
    groups: dict[Any, dict[Any, list[Any]]] = {}
    last_resource: object = _NOTHING
    last_scope: object = _NOTHING
    current: list[Any] = []
    for item in items:
        resource = item.resource
        scope = item.instrumentation_scope or None
        if resource is not last_resource or scope is not last_scope:
            scopes = groups.get(resource)
            if scopes is None:
                scopes = groups[resource] = {}
            current = scopes.get(scope)  # type: ignore[assignment]
            if current is None:
                current = scopes[scope] = []
            last_resource, last_scope = resource, scope
        current.append(item)
    return groups


def _request(
    groups: dict[Any, dict[Any, list[Any]]],
    encode_item: Callable[[Any], bytes],
) -> bytes:
    """ExportXServiceRequest: resource_X 1 -> {resource 1, scope_X 2 -> {scope 1, items 2,
    schema_url 3}, schema_url 3}; the field numbers are the same for traces and logs."""
    resource_parts = []
    for resource, scopes in groups.items():
        scope_parts = []
        for scope, items in scopes.items():
            body = b"".join([b"\x12" + delimited(encode_item(item)) for item in items])
            schema_url = scope.schema_url if scope is not None else None
            scope_parts.append(
                b"\x12"
                + delimited(
                    b"\x0a" + _SCOPES.get(scope, _scope_message) + body + string_field(b"\x1a", schema_url)
                )
            )
        resource_parts.append(
            b"\x0a"
            + delimited(
                b"\x0a"
                + _RESOURCES.get(resource, _resource_message)
                + b"".join(scope_parts)
                + string_field(b"\x1a", resource.schema_url)
            )
        )
    return b"".join(resource_parts)


# ---------------------------------------------------------------------------------------------------
# Spans (opentelemetry/proto/trace/v1/trace.proto)
#
# Span: trace_id 1, span_id 2, trace_state 3, parent_span_id 4, name 5, kind 6, start 7 (fixed64),
# end 8 (fixed64), attributes 9, dropped_attributes_count 10, events 11, dropped_events_count 12,
# links 13, dropped_links_count 14, status 15, flags 16 (fixed32).

_SPAN_KINDS: Final = {
    SpanKind.INTERNAL: b"\x30\x01",
    SpanKind.SERVER: b"\x30\x02",
    SpanKind.CLIENT: b"\x30\x03",
    SpanKind.PRODUCER: b"\x30\x04",
    SpanKind.CONSUMER: b"\x30\x05",
}
_HAS_IS_REMOTE: Final = 0x100
_IS_REMOTE: Final = 0x200
_SPAN_FLAGS_LOCAL_PARENT: Final = b"\x85\x01" + pack_fixed32(_HAS_IS_REMOTE)
_SPAN_FLAGS_REMOTE_PARENT: Final = b"\x85\x01" + pack_fixed32(_HAS_IS_REMOTE | _IS_REMOTE)
_LINK_FLAGS_LOCAL: Final = b"\x35" + pack_fixed32(_HAS_IS_REMOTE)
_LINK_FLAGS_REMOTE: Final = b"\x35" + pack_fixed32(_HAS_IS_REMOTE | _IS_REMOTE)
_EMPTY_STATUS: Final = b"\x7a\x00"


def _trace_id(value: int) -> bytes:
    return value.to_bytes(16, "big")  # OverflowError (negative, too large): the SDK's own error


def _span_id(value: int) -> bytes:
    return value.to_bytes(8, "big")


def _trace_state(trace_state: Any) -> bytes:
    """The SDK writes ``k1=v1,k2=v2`` (nothing for an empty or missing trace state)."""
    if not trace_state:
        return b""
    return string_field(b"\x1a", ",".join([f"{key}={value}" for key, value in trace_state.items()]))


def _status(status: Status | None) -> bytes:
    """Status: message 2, code 3; present (maybe empty) whenever the span has a status."""
    if status is None:
        return b""
    code = status.status_code.value
    description = status.description
    if not code and description is None:
        return _EMPTY_STATUS
    body = string_field(b"\x12", description) + (b"\x18" + varint(code) if code else b"")
    return b"\x7a" + delimited(body)


def _event(event: Event) -> bytes:
    """Span.Event: time_unix_nano 1, name 2, attributes 3, dropped_attributes_count 4."""
    return b"\x5a" + delimited(
        fixed64_field(b"\x09", event.timestamp)
        + string_field(b"\x12", event.name)
        + _FIELD_3_ATTRIBUTES.encode(event.attributes)
        + uint32_field(b"\x20", event.dropped_attributes)
    )


def _link(link: Link) -> bytes:
    """Span.Link: trace_id 1, span_id 2, attributes 4, dropped_attributes_count 5, flags 6; the SDK
    leaves trace_state (3) unset."""
    context = link.context
    return b"\x6a" + delimited(
        b"\x0a\x10"
        + _trace_id(context.trace_id)
        + b"\x12\x08"
        + _span_id(context.span_id)
        + _LINK_ATTRIBUTES.encode(link.attributes)
        + uint32_field(b"\x28", link.dropped_attributes)
        + (_LINK_FLAGS_REMOTE if context and context.is_remote else _LINK_FLAGS_LOCAL)
    )


_SPAN_NAMES: Final = StringFieldCache(b"\x2a")


def _span(span: ReadableSpan) -> bytes:
    context = span.get_span_context()
    if context is None:
        raise UnsupportedValueError("span without a context")
    parent: SpanContext | None = span.parent
    parts = [
        b"\x0a\x10" + _trace_id(context.trace_id) + b"\x12\x08" + _span_id(context.span_id),
        _trace_state(context.trace_state),
    ]
    if parent:  # the SDK's test: a SpanContext (a tuple) is always true
        parts.append(b"\x22\x08" + _span_id(parent.span_id))
    parts.append(_SPAN_NAMES.field(span.name))
    parts.append(_SPAN_KINDS[span.kind])
    parts.append(fixed64_field(b"\x39", span.start_time))
    parts.append(fixed64_field(b"\x41", span.end_time))
    parts.append(_SPAN_ATTRIBUTES.encode(span.attributes))
    parts.append(uint32_field(b"\x50", span.dropped_attributes))
    events = span.events
    if events:
        parts.extend([_event(event) for event in events])
    parts.append(uint32_field(b"\x60", span.dropped_events))
    links = span.links
    if links:
        parts.extend([_link(link) for link in links])
    parts.append(uint32_field(b"\x70", span.dropped_links))
    parts.append(_status(span.status))
    parts.append(_SPAN_FLAGS_REMOTE_PARENT if parent and parent.is_remote else _SPAN_FLAGS_LOCAL_PARENT)
    return b"".join(parts)


def encode_spans_fast(spans: Sequence[ReadableSpan]) -> bytes:
    """The ExportTraceServiceRequest for ``spans``; raises for anything left to the SDK encoder."""
    return _request(_grouped(spans), _span)


def encode_spans(spans: Sequence[ReadableSpan]) -> bytes:
    """The serialized ExportTraceServiceRequest for ``spans``, as the SDK encoder would produce it."""
    return _fast_else_sdk(
        encode_spans_fast, spans, lambda: sdk_encode_spans(spans).SerializePartialToString()
    )


def _fast_else_sdk(
    fast: Callable[[Sequence[Any]], bytes], batch: Sequence[Any], sdk: Callable[[], bytes]
) -> bytes:
    try:
        return fast(batch)
    except Exception:  # anything unexpected: the SDK encoder decides (it may raise the same error)
        return sdk()


# ---------------------------------------------------------------------------------------------------
# Log records (opentelemetry/proto/logs/v1/logs.proto)
#
# LogRecord: time_unix_nano 1 (fixed64), severity_number 2, severity_text 3, body 5, attributes 6,
# dropped_attributes_count 7, flags 8 (fixed32), trace_id 9, span_id 10, observed_time_unix_nano 11
# (fixed64), event_name 12.


_SEVERITY_TEXTS: Final = StringFieldCache(b"\x1a")
_EVENT_NAMES: Final = StringFieldCache(b"\x62")


def _log_record(readable: ReadableLogRecord) -> bytes:
    record = readable.log_record
    severity = getattr(record.severity_number, "value", None)  # as the SDK reads it
    if severity is not None and (type(severity) is not int or not 0 <= severity < INT32_END):
        raise UnsupportedValueError("severity number")
    flags = int(record.trace_flags)  # None raises, as in the SDK
    if not 0 <= flags < UINT32_END:
        raise UnsupportedValueError("trace flags")
    trace_id = record.trace_id
    span_id = record.span_id
    return b"".join(
        [
            fixed64_field(b"\x09", record.timestamp),
            b"\x10" + varint(severity) if severity else b"",
            _SEVERITY_TEXTS.field(record.severity_text),
            b"\x2a" + delimited(any_value(record.body)),  # always present: empty for None
            _LOG_ATTRIBUTES.encode(record.attributes),
            uint32_field(b"\x38", readable.dropped_attributes),
            b"\x45" + pack_fixed32(flags) if flags else b"",
            b"" if trace_id == 0 else b"\x4a\x10" + _trace_id(trace_id),
            b"" if span_id == 0 else b"\x52\x08" + _span_id(span_id),
            fixed64_field(b"\x59", record.observed_timestamp),
            _EVENT_NAMES.field(record.event_name),
        ]
    )


def encode_logs_fast(batch: Sequence[ReadableLogRecord]) -> bytes:
    """The ExportLogsServiceRequest for ``batch``; raises for anything left to the SDK encoder."""
    return _request(_grouped(batch), _log_record)


def encode_logs(batch: Sequence[ReadableLogRecord]) -> bytes:
    """The serialized ExportLogsServiceRequest for ``batch``, as the SDK encoder would produce it."""
    return _fast_else_sdk(encode_logs_fast, batch, lambda: sdk_encode_logs(batch).SerializeToString())
