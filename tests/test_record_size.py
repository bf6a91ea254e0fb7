"""One log record fits one Loki line, whatever the request: every cap counts UTF-8 bytes, and the
record's attributes as a whole stay within ``MAX_RECORD_ATTRIBUTE_BYTES`` (half of Loki's default
64 KB structured-metadata limit per line)."""

from __future__ import annotations

import sys
from typing import Any, Final

import pytest
from flask import Flask
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from otel_flask_monitor import FlaskMonitor
from otel_flask_monitor.attributes import (
    MAX_RECORD_ATTRIBUTE_BYTES,
    AttributeBound,
    entry_bytes,
    record_attributes,
)
from otel_flask_monitor.config import ConfigError
from otel_flask_monitor.otlp_encoding import encode_logs
from otel_flask_monitor.record import MAX_CAPTURED_HEADERS, ExceptionInfo, RequestRecord
from otel_flask_monitor.redaction import truncate, truncate_middle, utf8_length
from tests.conftest import Exported
from tests.support.loki_receiver import entries_from_request

LOKI_STRUCTURED_METADATA_LIMIT: Final = 64 * 1024  # limits_config.max_structured_metadata_size
LOKI_STRUCTURED_METADATA_ENTRIES: Final = 128  # limits_config.max_structured_metadata_entries_count
GRIN: Final = "\U0001f600"  # four bytes in UTF-8
HEADERS: Final = tuple(f"X-Hostile-{number:02d}" for number in range(MAX_CAPTURED_HEADERS))


def wsgi_header(text: str) -> str:
    """``text`` as a server hands its UTF-8 bytes to the app in a WSGI header (latin-1)."""
    return text.encode("utf-8").decode("latin-1")


def hostile_app() -> Flask:
    app = Flask("hostile-sizes")

    @app.get("/deep/<path:rest>")
    def deep(rest: str, depth: int = 150) -> Any:
        if depth == 0:
            raise ValueError(GRIN * 20_000 + rest)
        return deep(rest, depth - 1)

    FlaskMonitor(app, captured_headers=list(HEADERS))
    return app


def loki_metadata_bytes(metadata: dict[str, str]) -> int:
    """What Loki's distributor counts for a line: name plus value bytes of every entry."""
    return sum(len(name.encode()) + len(value.encode()) for name, value in metadata.items())


def test_a_hostile_request_leaves_one_record_that_fits_a_loki_line(exported: Exported) -> None:
    headers = {name: wsgi_header(GRIN * 2_000) for name in HEADERS}
    headers["User-Agent"] = wsgi_header(GRIN * 5_000)
    response = (
        hostile_app()
        .test_client()
        .get("/deep/" + GRIN * 4_000, query_string="token=secret&q=" + GRIN * 20_000, headers=headers)
    )
    assert response.status_code == 500

    (readable,) = exported.request_logs()
    attributes = dict(readable.log_record.attributes or {})
    assert sum(entry_bytes(key, value) for key, value in attributes.items()) <= MAX_RECORD_ATTRIBUTE_BYTES
    # Every captured header is there, cut rather than dropped, and no value is cut inside a character.
    assert {f"http.request.header.{name.lower()}" for name in HEADERS} <= set(attributes)
    for value in attributes.values():
        if isinstance(value, str):
            value.encode("utf-8")  # strict: a split character would raise
    assert str(attributes["exception.stacktrace"]).startswith("Traceback")
    assert "bytes cut" in str(attributes["exception.stacktrace"])
    assert "[REDACTED]" in str(attributes["url.query"])

    # The line as Loki would store it, from the bytes the exporter posts: within its limits, with room.
    request = ExportLogsServiceRequest.FromString(encode_logs([readable]))
    (entry,) = entries_from_request(request)
    assert loki_metadata_bytes(dict(entry.metadata)) <= LOKI_STRUCTURED_METADATA_LIMIT * 3 // 4
    assert len(entry.metadata) < LOKI_STRUCTURED_METADATA_ENTRIES


def test_the_default_limits_bound_a_record_by_themselves() -> None:
    assert AttributeBound.needed(max_length=1024, max_stacktrace_length=8192, captured_headers=()) is None
    assert AttributeBound.needed(max_length=1024, max_stacktrace_length=8192, captured_headers=HEADERS)
    assert AttributeBound.needed(max_length=100_000, max_stacktrace_length=8192, captured_headers=())


def full_record(text: str) -> RequestRecord:
    """A record with every field that makes an attribute set, each to ``text``."""
    return RequestRecord(
        method="_OTHER",
        method_original="BREW",
        route=text,
        path=text,
        query=text,
        scheme=text,
        status_code=500,
        request_size=sys.maxsize,
        response_size=sys.maxsize,
        content_type=text,
        client_address=text,
        user_agent=text,
        server_address=text,
        duration_ms=1e12 / 7,
        cpu_ms=1e12 / 7,
        end_time_ns=1,
        trace_id=None,
        exception=ExceptionInfo(type=text, message=text, stacktrace=text * 8, escaped=False),
        captured_headers=tuple((name.lower(), text) for name in HEADERS),
        streamed=True,
        cut_short="closed_early",
    )


def test_the_bound_knows_every_attribute_a_record_can_have() -> None:
    """needed() adds up the most each attribute can take; a new attribute must be counted there."""
    limit = 1000
    attributes = record_attributes(full_record("a" * limit))
    worst = sum(entry_bytes(key, value) for key, value in attributes.items())
    bound = AttributeBound.needed(
        max_length=limit, max_stacktrace_length=8 * limit, captured_headers=HEADERS, budget=worst - 1
    )
    assert bound is not None  # it counts at least what the fullest record takes
    assert (
        AttributeBound.needed(
            max_length=limit, max_stacktrace_length=8 * limit, captured_headers=HEADERS, budget=worst + 500
        )
        is None
    )  # and not much more


@pytest.mark.parametrize("budget", [4_000, 12_000, 30_000])
def test_the_longest_values_are_cut_to_one_length_and_the_short_ones_stay(budget: int) -> None:
    record = full_record(GRIN * 2_000)
    attributes = dict(record_attributes(record)) | {"url.scheme": "https", "server.address": "shop"}
    fitted = AttributeBound(budget).fit(attributes)
    assert sum(entry_bytes(key, value) for key, value in fitted.items()) <= budget
    assert fitted["url.scheme"] == "https"
    assert fitted["server.address"] == "shop"
    assert fitted.keys() == attributes.keys()
    cut = {utf8_length(str(value)) for key, value in fitted.items() if value != attributes[key]}
    # The cut ones end up about one length (a character less, or the stack trace's marker).
    assert len(cut) <= 3
    stacktrace = str(fitted["exception.stacktrace"])
    assert stacktrace.startswith(GRIN)
    assert "bytes cut" in stacktrace


def test_a_record_within_the_budget_is_left_as_it_is() -> None:
    attributes = record_attributes(full_record("short"))
    assert AttributeBound().fit(attributes) is attributes


@pytest.mark.parametrize("text", ["a" * 50, GRIN * 50, "é" * 50, "a" + GRIN * 49, "\udcff" * 50])
@pytest.mark.parametrize("limit", [0, 1, 3, 4, 5, 7, 20, 199, 200, 201])
def test_caps_count_utf8_bytes_and_never_split_a_character(text: str, limit: int) -> None:
    for cut in (truncate(text, limit), truncate_middle(text, max(limit, 3))):
        cut.encode("utf-8", "surrogatepass")
        if utf8_length(text) <= limit:
            assert cut == text
    if limit >= 3:
        assert utf8_length(truncate(text, limit)) <= limit
        assert utf8_length(truncate_middle(text, limit)) <= limit


@pytest.mark.parametrize(
    "headers",
    [
        [f"X-H{number}" for number in range(MAX_CAPTURED_HEADERS + 1)],
        ["X-" + "a" * 70],
    ],
)
def test_too_many_or_too_long_captured_headers_are_a_clear_error(headers: list[str]) -> None:
    with pytest.raises(ConfigError, match="captured_headers"):
        FlaskMonitor(captured_headers=headers)
