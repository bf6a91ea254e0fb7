"""Record -> flat OTel attributes (semantic-convention names; primitives only, never None), bounded.

Built once per record, by :mod:`otel_flask_monitor.signals`, which hands the same mapping to the
server span and the log record. Loki stores every log attribute as structured metadata with dots
turned into underscores (``http.route`` -> ``http_route``). The full table is in docs/log-schema.md.

Loki refuses a line whose structured metadata (name and value bytes of every entry, resource
attributes and ids included) exceed 64 KB by default (``max_structured_metadata_size``, counted in
its distributor's ``validateEntry``, grafana/loki 3.x ``pkg/distributor/validator.go``; at most 128
entries, ``max_structured_metadata_entries_count``). Every value here is capped on its own (the
settings' limits, in UTF-8 bytes); :class:`AttributeBound` keeps their sum within
:data:`MAX_RECORD_ATTRIBUTE_BYTES` whatever the settings allow, and costs nothing per record when the
limits cannot add up to more.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from opentelemetry.util.types import AttributeValue

from otel_flask_monitor.log_policy import DEFAULT_LOG_ATTRIBUTES, FULL_LOG_ATTRIBUTES, OPTIONAL_LOG_ATTRIBUTES
from otel_flask_monitor.record import MAX_METHOD_BYTES, RequestRecord
from otel_flask_monitor.redaction import truncate, truncate_middle, utf8_length

HEADER_PREFIX: Final = "http.request.header."
EXCEPTION_ATTRIBUTE_NAMES: Final = ("exception.type", "exception.message", "exception.stacktrace")

MAX_RECORD_ATTRIBUTE_BYTES: Final = 32 * 1024
"""The most a record's attributes take as Loki counts structured metadata: half of its default limit
per line, the other half left for resource attributes, trace and span ids and severity."""

# The attributes whose values the settings' max_attribute_length caps, and the most the others take
# (digits of an int64, a float rounded to 3 decimals, a bool, the longest cut_short value).
_CAPPED_BY_MAX_LENGTH: Final = (
    "http.route",
    "url.path",
    "url.query",
    "url.scheme",
    "http.response.header.content-type",
    "client.address",
    "user_agent.original",
    "server.address",
    "error.type",
    "exception.type",
    "exception.message",
)
_AT_MOST_BYTES: Final = {
    "http.request.method": MAX_METHOD_BYTES,
    "http.request.method_original": MAX_METHOD_BYTES,
    "http.response.status_code": 20,
    "http.request.body.size": 20,
    "http.response.body.size": 20,
    "duration_ms": 24,
    "cpu_ms": 24,
    "response_streamed": 5,
    "response_cut_short": 12,
}


def record_attributes(
    record: RequestRecord, selected: frozenset[str] = FULL_LOG_ATTRIBUTES
) -> dict[str, AttributeValue]:
    """The record's attributes named in ``selected`` (:mod:`otel_flask_monitor.log_policy`): the HTTP
    ones the span and the log record share, the captured headers, then (on the log record only; the
    span carries them as an event) the exception's. An attribute not selected is never computed."""
    attributes: dict[str, AttributeValue] = {"http.request.method": record.method}
    if record.method_original is not None:
        attributes["http.request.method_original"] = record.method_original
    if record.route is not None:
        attributes["http.route"] = record.route
    attributes["url.path"] = record.path
    attributes["http.response.status_code"] = record.status_code
    if selected is not DEFAULT_LOG_ATTRIBUTES:
        for name, field in _OPTIONAL_FIELDS:
            value = getattr(record, field) if name in selected else None
            if value is not None and (value or name != "url.query"):  # an empty query is none
                attributes[name] = value
    attributes["duration_ms"] = round(record.duration_ms, 3)
    attributes["cpu_ms"] = round(record.cpu_ms, 3)
    if record.streamed:
        attributes["response_streamed"] = True
    if record.cut_short is not None:
        attributes["response_cut_short"] = record.cut_short
    exception = record.exception
    if record.is_server_error:
        attributes["error.type"] = exception.type if exception else str(record.status_code)
    for name, header in record.captured_headers:
        attributes[HEADER_PREFIX + name] = header
    if exception is not None:
        attributes["exception.type"] = exception.type
        attributes["exception.message"] = exception.message
        attributes["exception.stacktrace"] = exception.stacktrace
    if not (
        selected is DEFAULT_LOG_ATTRIBUTES
        or selected is FULL_LOG_ATTRIBUTES
        or selected >= DEFAULT_LOG_ATTRIBUTES
    ):
        # An explicit list may leave out default attributes too.
        return {
            key: value
            for key, value in attributes.items()
            if key in selected or key.startswith(HEADER_PREFIX)
        }
    return attributes


# The attributes outside the default set, with the record field each is read from.
_OPTIONAL_FIELDS: Final = tuple(
    zip(
        OPTIONAL_LOG_ATTRIBUTES,
        (
            "query",
            "scheme",
            "request_size",
            "response_size",
            "content_type",
            "client_address",
            "user_agent",
            "server_address",
        ),
        strict=True,
    )
)


def entry_bytes(key: str, value: AttributeValue) -> int:
    """What one attribute counts against Loki's limit: its name and its value as text, in bytes."""
    if isinstance(value, str):
        return utf8_length(key) + utf8_length(value)
    if isinstance(value, bool):
        return utf8_length(key) + (4 if value else 5)
    return utf8_length(key) + len(str(value))


class AttributeBound:
    """Keeps a record's attributes within ``budget`` bytes: the longest string values are cut to the
    one length that makes them fit (shorter values stay whole), the stack trace keeping its head and
    tail."""

    __slots__ = ("_budget",)

    def __init__(self, budget: int = MAX_RECORD_ATTRIBUTE_BYTES) -> None:
        self._budget = budget

    @classmethod
    def needed(
        cls,
        *,
        max_length: int,
        max_stacktrace_length: int,
        captured_headers: Sequence[str],
        budget: int = MAX_RECORD_ATTRIBUTE_BYTES,
    ) -> AttributeBound | None:
        """A bound when the settings' limits could add up to more than ``budget``, else None (the
        limits alone keep every record within it)."""
        worst = sum(utf8_length(key) + max_length for key in _CAPPED_BY_MAX_LENGTH)
        worst += sum(utf8_length(key) + size for key, size in _AT_MOST_BYTES.items())
        worst += utf8_length("exception.stacktrace") + max_stacktrace_length
        worst += sum(utf8_length(HEADER_PREFIX + name.lower()) + max_length for name in captured_headers)
        return cls(budget) if worst > budget else None

    def fit(self, attributes: dict[str, AttributeValue]) -> dict[str, AttributeValue]:
        total = sum(entry_bytes(key, value) for key, value in attributes.items())
        if total <= self._budget:
            return attributes
        strings = {key: utf8_length(value) for key, value in attributes.items() if isinstance(value, str)}
        room = self._budget - (total - sum(strings.values()))
        cap = _fair_share(sorted(strings.values()), room)
        fitted = dict(attributes)
        for key, size in strings.items():
            if size > cap:
                value = str(attributes[key])
                fitted[key] = (
                    truncate_middle(value, cap) if key == "exception.stacktrace" else truncate(value, cap)
                )
        return fitted


def _fair_share(sizes: Sequence[int], room: int) -> int:
    """The largest length such that every size cut to it sums to at most ``room`` (sizes ascending)."""
    for index, size in enumerate(sizes):
        share = room // (len(sizes) - index)
        if size > share:
            return max(share, 0)
        room -= size
    return sizes[-1] if sizes else 0
