"""The fast OTLP encoder sends exactly what the SDK encoder sends.

Every check decodes both payloads with opentelemetry-proto's generated classes and compares the
messages (the canonical comparison), and also compares the raw bytes: both encoders write fields in
field-number order, so equal bytes is what "the same data" means here, and it also catches what a
parse would hide (a field written twice parses to its last value). If a future protobuf release
changes its field order, the byte assertion is the one to relax, never the message one.
"""

from __future__ import annotations

import logging
import math
import os
import struct
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs as sdk_encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode_spans
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from otel_flask_monitor import otlp_encoding
from otel_flask_monitor.otlp_encoding import (
    UnsupportedValueError,
    encode_logs,
    encode_logs_fast,
    encode_spans,
    encode_spans_fast,
)
from tests.conftest import Exported
from tests.support.apps import build_app
from tests.test_benchmarks_smoke import run_benchmark

TRACE_ID = 0x5CA175A3CE34CEC882A8ED488C8BBB11
SPAN_ID = 0xD4EA81DFA54C6C1A


def assert_same_traces(ours: bytes, spans: Sequence[ReadableSpan]) -> None:
    sdk_bytes = sdk_encode_spans(spans).SerializePartialToString()
    assert ExportTraceServiceRequest.FromString(ours) == ExportTraceServiceRequest.FromString(sdk_bytes)
    assert ours == sdk_bytes


def assert_same_logs(ours: bytes, batch: Sequence[ReadableLogRecord]) -> None:
    sdk_bytes = sdk_encode_logs(batch).SerializeToString()
    assert ExportLogsServiceRequest.FromString(ours) == ExportLogsServiceRequest.FromString(sdk_bytes)
    assert ours == sdk_bytes


def make_span(
    name: str = "GET /items/<int:item_id>",
    *,
    attributes: Any = None,
    resource: Resource | None = None,
    scope: InstrumentationScope | None = None,
    parent: SpanContext | None = None,
    trace_state: TraceState | None = None,
    **kwargs: Any,
) -> ReadableSpan:
    context = SpanContext(
        TRACE_ID, SPAN_ID, is_remote=False, trace_flags=TraceFlags(1), trace_state=trace_state
    )
    return ReadableSpan(
        name=name,
        context=context,
        parent=parent,
        resource=resource if resource is not None else Resource({"service.name": "shop"}),
        attributes=attributes,
        instrumentation_scope=scope,
        **kwargs,
    )


def make_log(
    body: Any = "GET /items/<int:item_id> 200 0.2 ms",
    *,
    attributes: Any = None,
    resource: Resource | None = None,
    scope: InstrumentationScope | None = None,
    **kwargs: Any,
) -> ReadableLogRecord:
    fields: dict[str, Any] = {
        "timestamp": 1_796_085_996_020_512_527,
        "observed_timestamp": 1_796_085_996_020_576_509,
        "trace_id": TRACE_ID,
        "span_id": SPAN_ID,
        "trace_flags": TraceFlags(1),
        "severity_text": "INFO",
        "severity_number": SeverityNumber.INFO,
        "event_name": "http.server.request",
    }
    fields.update(kwargs)
    return ReadableLogRecord(
        log_record=LogRecord(body=body, attributes=attributes, **fields),
        resource=resource if resource is not None else Resource({"service.name": "shop"}),
        instrumentation_scope=scope,
    )


# --- What the monitor really produces ---------------------------------------------------------------


def _drive_monitored_app() -> None:
    client = build_app("otlp-encoding").test_client()
    client.get("/items/7?page=2&token=secret", headers={"User-Agent": "curl/8.5 ünïcode"})
    client.get("/items/404")
    client.get("/boom")  # exception event on the span, ERROR status, stack trace in the log record
    client.get("/abort-500")
    client.get("/teapot")
    client.post("/items", json={"name": "keyboard", "tags": ["a", "b"]})
    client.post("/items", data=b"{not json", headers={"Content-Type": "application/json"})
    client.get("/stream").get_data()
    client.get("/no-such-route")


def test_monitored_app_spans_and_logs_encode_as_the_sdk_does(exported: Exported) -> None:
    _drive_monitored_app()
    spans, logs = exported.spans(), exported.logs()
    assert len(exported.server_spans()) == 9
    assert len(exported.request_logs()) == 9
    assert any(span.events for span in spans), "the /boom span should carry its exception event"
    # The strict encoder (no fallback) handles everything the monitor and the instrumentation emit.
    assert_same_traces(encode_spans_fast(spans), spans)
    assert_same_logs(encode_logs_fast(logs), logs)
    # One at a time too: the caches must not carry anything from one item into the next.
    for span in spans:
        assert_same_traces(encode_spans(spans=[span]), [span])
    for record in logs:
        assert_same_logs(encode_logs([record]), [record])


def test_empty_batches_encode_as_empty_requests() -> None:
    assert encode_spans([]) == sdk_encode_spans([]).SerializePartialToString() == b""
    assert encode_logs([]) == sdk_encode_logs([]).SerializeToString() == b""


# --- Hand-made edge cases --------------------------------------------------------------------------

EDGE_VALUES: dict[str, Any] = {
    "str": "GET",
    "empty.str": "",
    "unicode": "Grüße, 世界 🌍",
    "true": True,
    "false": False,
    "zero": 0,
    "one": 1,
    "negative": -1,
    "int64.min": -(2**63),
    "int64.max": 2**63 - 1,
    "float": 0.222,
    "negative.zero": -0.0,
    "nan": math.nan,
    "negative.nan": struct.unpack("<d", struct.pack("<Q", 0xFFF8_0000_0000_0001))[0],
    "inf": math.inf,
    "minus.inf": -math.inf,
    "bytes": b"\x00\xff",
    "empty.bytes": b"",
    "none": None,
    "tuple": ("a", 1, 2.5, True, None, b"x"),
    "empty.tuple": (),
    "list": [1, [2, [3]]],
    "dict": {"a": 1, "nested": {"b": [None, {"c": "d"}]}, "": "empty key"},
    "empty.dict": {},
    "": "empty attribute key",
}


@pytest.mark.parametrize("name", sorted(EDGE_VALUES))
def test_every_value_kind_encodes_as_the_sdk_does(name: str) -> None:
    value = EDGE_VALUES[name]
    span = make_span(attributes={name: value})
    assert_same_traces(encode_spans_fast([span]), [span])
    record = make_log(body=value, attributes={name: value})
    assert_same_logs(encode_logs_fast([record]), [record])


def test_all_edge_values_in_one_item_and_through_bounded_attributes() -> None:
    bounded = BoundedAttributes(maxlen=10, attributes=EDGE_VALUES, immutable=False)
    assert bounded.dropped > 0
    spans = [make_span(attributes=EDGE_VALUES), make_span(attributes=bounded)]
    assert_same_traces(encode_spans_fast(spans), spans)
    logs = [make_log(body=EDGE_VALUES, attributes=EDGE_VALUES), make_log(attributes=bounded)]
    assert logs[1].dropped_attributes > 0
    assert_same_logs(encode_logs_fast(logs), logs)


def test_span_fields_events_links_status_and_flags() -> None:
    remote_parent = SpanContext(TRACE_ID, 0x1111, is_remote=True)
    local_parent = SpanContext(TRACE_ID, 0, is_remote=False)
    link_contexts = [
        SpanContext(2**128 - 1, 2**64 - 1, is_remote=True, trace_state=TraceState([("k", "v")])),
        SpanContext(1, 1, is_remote=False),
    ]
    events = BoundedList.from_seq(
        2,
        [
            Event("exception", {"exception.type": "ShopError"}, timestamp=5),
            Event("", BoundedAttributes(maxlen=1, attributes={"a": 1, "b": 2}), timestamp=6),
            Event("dropped", timestamp=7),
        ],
    )
    links = BoundedList.from_seq(
        3,
        [Link(link_contexts[0], {"link.attr": "x"}), Link(link_contexts[1]), Link(link_contexts[1], {})],
    )
    spans = [
        make_span(
            kind=kind,
            parent=parent,
            status=status,
            trace_state=trace_state,
            start_time=start,
            end_time=end,
            events=events,
            links=links,
        )
        for kind, parent, status, trace_state, (start, end) in [
            (SpanKind.SERVER, remote_parent, Status(StatusCode.ERROR, "boom"), None, (1, 2**64 - 1)),
            (
                SpanKind.CLIENT,
                local_parent,
                Status(StatusCode.OK),
                TraceState([("a", "1"), ("b", "2")]),
                (0, 0),
            ),
            (SpanKind.INTERNAL, None, Status(StatusCode.UNSET), TraceState(), (None, None)),
            (SpanKind.PRODUCER, None, Status(StatusCode.ERROR), None, (10, None)),
            (SpanKind.CONSUMER, None, Status(StatusCode.ERROR, ""), None, (None, 10)),
        ]
    ]
    spans.append(make_span(name="", status=None))  # type: ignore[arg-type]  # the SDK encodes it
    assert spans[0].dropped_events == 1
    assert_same_traces(encode_spans_fast(spans), spans)


def test_log_fields_severity_flags_ids_and_event_name() -> None:
    logs = [
        make_log(),
        make_log(body=None, severity_number=None, severity_text=None, event_name=None),
        make_log(severity_number=SeverityNumber.UNSPECIFIED, event_name="", severity_text=""),
        make_log(severity_number=SeverityNumber.FATAL4, trace_flags=TraceFlags(0), timestamp=None),
        make_log(trace_id=2**128 - 1, span_id=2**64 - 1, trace_flags=TraceFlags(0xFF)),
        make_log(trace_id=0, span_id=0, observed_timestamp=1),
        make_log(body={"message": "structured", "items": [1, 2.5, None]}),
        make_log(body=[b"raw", ("nested",)]),
    ]
    assert_same_logs(encode_logs_fast(logs), logs)


def test_resources_and_scopes_group_as_the_sdk_groups_them() -> None:
    shop = Resource({"service.name": "shop"})
    shop_again = Resource({"service.name": "shop"})  # equal, another object: the SDK's dict merges them
    billing = Resource(
        {"service.name": "billing", "n": 1}, schema_url="https://opentelemetry.io/schemas/1.21.0"
    )
    flask_scope = InstrumentationScope("opentelemetry.instrumentation.flask", "0.66b1", "https://x/1.11.0")
    monitor_scope = InstrumentationScope("otel_flask_monitor", "0.1.0", None, {"scope.attr": True})
    monitor_scope_again = InstrumentationScope("otel_flask_monitor", "0.1.0", None, {"scope.attr": True})
    placements = [
        (shop, flask_scope),
        (billing, None),
        (shop_again, monitor_scope),
        (shop, monitor_scope_again),
        (billing, flask_scope),
        (shop, None),
        (shop, flask_scope),  # same resource object, another scope: a new group, not the last one
        (shop_again, flask_scope),
    ]
    spans = [make_span(f"span {i}", resource=r, scope=s) for i, (r, s) in enumerate(placements)]
    assert_same_traces(encode_spans_fast(spans), spans)
    logs = [make_log(f"log {i}", resource=r, scope=s) for i, (r, s) in enumerate(placements)]
    assert_same_logs(encode_logs_fast(logs), logs)
    request = ExportTraceServiceRequest.FromString(encode_spans(spans))
    assert [len(resource.scope_spans) for resource in request.resource_spans] == [3, 2]


def test_cached_encodings_follow_a_new_resource_and_new_values() -> None:
    first = [make_span(attributes={"http.route": "/a", "n": 1}, resource=Resource({"pid": "1"}))]
    second = [make_span(attributes={"http.route": "/b", "n": True}, resource=Resource({"pid": "2"}))]
    for batch in (first, second, first, second):
        assert_same_traces(encode_spans(batch), batch)


def test_caches_stay_bounded_under_unique_values() -> None:
    spans = [make_span(f"span {i}", attributes={"url.path": f"/items/{i}", "n": i}) for i in range(3000)]
    assert_same_traces(encode_spans_fast(spans), spans)
    for table in otlp_encoding._SPAN_ATTRIBUTES._tables.values():
        assert len(table) <= 512
    assert len(otlp_encoding._SPAN_NAMES._entries) <= 256


# --- What the fast path leaves to the SDK ----------------------------------------------------------


class _Text(str):
    pass


class _Number(int):
    pass


class _Opaque:
    def __repr__(self) -> str:
        return "<opaque>"


UNSUPPORTED_ATTRIBUTES: dict[str, Any] = {
    "above.int64": 2**63,
    "below.int64": -(2**63) - 1,
    "str.subclass": _Text("subclass"),
    "int.subclass": _Number(3),
    "enum": SpanKind.SERVER,
    "surrogate": "\udc80",
    "range": range(3),
    "bytearray": bytearray(b"ab"),
    "opaque": _Opaque(),
    "dict.with.int.key": {1: "one"},
}


@pytest.mark.parametrize("name", sorted(UNSUPPORTED_ATTRIBUTES))
def test_values_the_fast_path_does_not_take_go_to_the_sdk_encoder(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL)  # the SDK logs each attribute it cannot encode, and drops it
    attributes = {"before": 1, name: UNSUPPORTED_ATTRIBUTES[name], "after": "x"}
    span = make_span(attributes=attributes)
    with pytest.raises((UnsupportedValueError, UnicodeEncodeError)):  # the fast path declines...
        encode_spans_fast([span])
    assert_same_traces(encode_spans([span]), [span])  # ...so the SDK encoder decides
    record = make_log(attributes=attributes)
    with pytest.raises((UnsupportedValueError, UnicodeEncodeError)):
        encode_logs_fast([record])
    assert_same_logs(encode_logs([record]), [record])


def test_a_body_the_sdk_cannot_encode_fails_the_same_way() -> None:
    record = make_log(body=_Opaque())
    with pytest.raises(Exception) as sdk_error:
        sdk_encode_logs([record])
    with pytest.raises(type(sdk_error.value)):
        encode_logs([record])


def test_items_with_out_of_range_fields_go_to_the_sdk_encoder(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL)
    big_dropped = BoundedAttributes(maxlen=0, attributes={"a": 1})
    big_dropped.dropped = 2**32  # what a uint32 field cannot hold: the SDK raises, so must we
    for make, encode, sdk_encode in (
        (make_span, encode_spans, sdk_encode_spans),
        (make_log, encode_logs, sdk_encode_logs),
    ):
        item = make(attributes=big_dropped)
        with pytest.raises(ValueError):
            sdk_encode([item])
        with pytest.raises(ValueError):
            encode([item])
    negative_time = make_span(start_time=-1)
    with pytest.raises(ValueError):
        sdk_encode_spans([negative_time])
    with pytest.raises(ValueError):
        encode_spans([negative_time])


# --- Properties over generated spans and log records -----------------------------------------------

PRIMITIVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.integers(min_value=-300, max_value=300),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.binary(max_size=10),
)
VALUES = st.recursive(
    PRIMITIVES,
    lambda children: st.one_of(
        st.lists(children, max_size=4).map(tuple),
        st.lists(children, max_size=3),
        st.dictionaries(st.text(max_size=6), children, max_size=3),
    ),
    max_leaves=6,
)
KEYS = st.one_of(st.sampled_from(["http.route", "http.request.method", "n", ""]), st.text(max_size=12))
ATTRIBUTE_MAPS = st.dictionaries(KEYS, VALUES, max_size=5)


@st.composite
def attributes(draw: st.DrawFn) -> Any:
    values = draw(ATTRIBUTE_MAPS)
    if draw(st.booleans()):
        return values
    # What the SDK hands the exporter: cleaned values in a BoundedAttributes, maybe with drops.
    return BoundedAttributes(maxlen=draw(st.none() | st.integers(0, 6)), attributes=values)


RESOURCES = [
    Resource({"service.name": "shop", "process.pid": "1"}),
    Resource({"service.name": "shop", "process.pid": "1"}),
    Resource({"service.name": "billing"}, schema_url="https://opentelemetry.io/schemas/1.21.0"),
    Resource({}),
]
SCOPES = [
    None,
    InstrumentationScope(
        "opentelemetry.instrumentation.flask", "0.66b1", "https://opentelemetry.io/schemas/1.11.0"
    ),
    InstrumentationScope("otel_flask_monitor", "0.1.0"),
    InstrumentationScope("otel_flask_monitor", "0.1.0", None, {"a": 1}),
    InstrumentationScope("", None, None, {"": ""}),
]
TIMESTAMPS = st.none() | st.integers(0, 2**64 - 1)
IDS_128 = st.integers(0, 2**128 - 1)
IDS_64 = st.integers(0, 2**64 - 1)
TRACE_STATES = st.none() | st.lists(
    st.tuples(
        st.sampled_from(["rojo", "congo", "vendor@tenant"]), st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True)
    ),
    max_size=3,
    unique_by=lambda pair: pair[0],
).map(TraceState)


@st.composite
def span_contexts(draw: st.DrawFn) -> SpanContext:
    return SpanContext(
        draw(IDS_128),
        draw(IDS_64),
        is_remote=draw(st.booleans()),
        trace_flags=TraceFlags(draw(st.integers(0, 255))),
        trace_state=draw(TRACE_STATES),
    )


@st.composite
def bounded(draw: st.DrawFn, items: st.SearchStrategy[Any]) -> Any:
    values = draw(st.lists(items, max_size=2))
    if draw(st.booleans()):
        return values
    return BoundedList.from_seq(draw(st.integers(0, 2)), values)


@st.composite
def spans(draw: st.DrawFn) -> ReadableSpan:
    status_code = draw(st.sampled_from(list(StatusCode)))
    description = draw(st.none() | st.text(max_size=10)) if status_code is StatusCode.ERROR else None
    return ReadableSpan(
        name=draw(st.text(max_size=20)),
        context=draw(span_contexts()),
        parent=draw(st.none() | span_contexts()),
        resource=draw(st.sampled_from(RESOURCES)),
        attributes=draw(attributes()),
        events=draw(bounded(st.builds(Event, st.text(max_size=8), attributes(), st.integers(0, 2**64 - 1)))),
        links=draw(bounded(st.builds(Link, span_contexts(), st.none() | attributes()))),
        kind=draw(st.sampled_from(list(SpanKind))),
        status=Status(status_code, description),
        start_time=draw(TIMESTAMPS),
        end_time=draw(TIMESTAMPS),
        instrumentation_scope=draw(st.sampled_from(SCOPES)),
    )


@st.composite
def log_records(draw: st.DrawFn) -> ReadableLogRecord:
    record = LogRecord(
        timestamp=draw(TIMESTAMPS),
        observed_timestamp=draw(st.integers(0, 2**64 - 1)),
        trace_id=draw(IDS_128),
        span_id=draw(IDS_64),
        trace_flags=TraceFlags(draw(st.integers(0, 255))),
        severity_text=draw(st.none() | st.sampled_from(["INFO", "WARN", "ERROR", ""])),
        severity_number=draw(st.none() | st.sampled_from(list(SeverityNumber))),
        body=draw(VALUES),
        attributes=draw(attributes()),
        event_name=draw(st.none() | st.text(max_size=12)),
    )
    return ReadableLogRecord(
        log_record=record,
        resource=draw(st.sampled_from(RESOURCES)),
        instrumentation_scope=draw(st.sampled_from(SCOPES)),
    )


# Derandomized in CI (the same examples every run); OTLP_ENCODING_RANDOM=1 with a larger
# OTLP_ENCODING_EXAMPLES explores further on demand.
PROPERTY_SETTINGS = settings(
    max_examples=int(os.environ.get("OTLP_ENCODING_EXAMPLES", "60")),
    deadline=None,
    derandomize=os.environ.get("OTLP_ENCODING_RANDOM", "") != "1",
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@PROPERTY_SETTINGS
@given(st.lists(spans(), min_size=1, max_size=5))
def test_generated_span_batches_encode_as_the_sdk_does(batch: list[ReadableSpan]) -> None:
    assert_same_traces(encode_spans_fast(batch), batch)


@PROPERTY_SETTINGS
@given(st.lists(log_records(), min_size=1, max_size=5))
def test_generated_log_batches_encode_as_the_sdk_does(batch: list[ReadableLogRecord]) -> None:
    assert_same_logs(encode_logs_fast(batch), batch)


@pytest.mark.slow
def test_benchmark_runs_on_real_monitored_batches() -> None:
    output = run_benchmark("otlp_encoding.py", "--rounds", "1", "--batch", "32")
    for variant in ("spans sdk", "spans fast", "logs sdk", "logs fast"):
        assert f"\n{variant} " in output, output
    assert "the fast encoder is" in output
