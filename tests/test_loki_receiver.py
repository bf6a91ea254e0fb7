"""The Loki stand-in maps OTLP the way Loki does, so end-to-end assertions mean what they say."""

from __future__ import annotations

import gzip

import pytest
import requests
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue, KeyValueList
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from tests.support.loki_receiver import LokiReceiver, entries_from_request, sanitize_label_name

PROTOBUF = {"Content-Type": "application/x-protobuf"}


def _kv(key: str, value: object) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    if isinstance(value, dict):
        return KeyValue(
            key=key, value=AnyValue(kvlist_value=KeyValueList(values=[_kv(k, v) for k, v in value.items()]))
        )
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


def _request(resource: dict[str, object], **record: object) -> ExportLogsServiceRequest:
    attributes = record.pop("attributes", {})
    assert isinstance(attributes, dict)
    log = LogRecord(attributes=[_kv(k, v) for k, v in attributes.items()], **record)  # type: ignore[arg-type]
    return ExportLogsServiceRequest(
        resource_logs=[
            ResourceLogs(
                resource=Resource(attributes=[_kv(k, v) for k, v in resource.items()]),
                scope_logs=[ScopeLogs(log_records=[log])],
            )
        ]
    )


def test_resource_attributes_split_into_index_labels_and_structured_metadata() -> None:
    request = _request(
        {"service.name": "shop", "service.instance.id": "i-1", "telemetry.sdk.language": "python"},
        time_unix_nano=5,
        observed_time_unix_nano=6,
        severity_text="WARN",
        severity_number=13,
        body=AnyValue(string_value="GET /x 404 1.0 ms"),
        trace_id=bytes.fromhex("0af7651916cd43dd8448eb211c80319c"),
        span_id=bytes.fromhex("b7ad6b7169203331"),
        attributes={
            "http.route": "/x",
            "http.response.status_code": 404,
            "duration_ms": 12.5,
            "http.response.header.content-type": "application/json",
            "flag": True,
            "nested": {"a.b": "c"},
        },
    )
    (entry,) = entries_from_request(request)
    assert entry.labels == {"service_name": "shop", "service_instance_id": "i-1"}
    assert entry.line == "GET /x 404 1.0 ms"
    assert entry.timestamp_ns == 5
    assert entry.metadata == {
        "http_route": "/x",
        "http_response_status_code": "404",
        "duration_ms": "12.5",
        "http_response_header_content_type": "application/json",
        "flag": "true",
        "nested_a_b": "c",
        "observed_timestamp": "6",
        "severity_text": "WARN",
        "severity_number": "13",
        "trace_id": "0af7651916cd43dd8448eb211c80319c",
        "span_id": "b7ad6b7169203331",
        "telemetry_sdk_language": "python",
        "detected_level": "warn",
    }


def test_a_resource_without_service_name_is_unknown_service() -> None:
    (entry,) = entries_from_request(_request({}, body=AnyValue(int_value=3)))
    assert entry.labels == {"service_name": "unknown_service"}
    assert entry.line == "3"
    assert "trace_id" not in entry.metadata


def test_without_service_name_loki_takes_a_discovered_index_label() -> None:
    (entry,) = entries_from_request(_request({"k8s.container.name": "shop-api", "container.name": "c"}))
    assert entry.labels["service_name"] == "shop-api"


# Loki 3.7 (otlptranslator v1.0.0 LabelNamer): runs of characters outside [a-zA-Z0-9] (underscores and
# non-ASCII letters included) become one "_"; a leading digit gets "key_"; __reserved__ names are kept.
# (Loki 3.0-3.4 kept non-ASCII letters and digits, 3.5-3.6 neither collapsed runs nor kept "_x".)
@pytest.mark.parametrize(
    ("name", "sanitized"),
    [
        ("http.route", "http_route"),
        ("a-b/c", "a_b_c"),
        ("1abc", "key_1abc"),
        ("_x", "_x"),
        ("__x", "_x"),
        ("a__b..c", "a_b_c"),
        ("__name__", "__name__"),
        ("größe.kg", "gr_e_kg"),
        ("durée_ms", "dur_e_ms"),
        ("٣abc", "_abc"),
    ],
)
def test_label_names_are_sanitized_like_loki(name: str, sanitized: str) -> None:
    assert sanitize_label_name(name) == sanitized


@pytest.mark.parametrize("name", ["", ".", "名前", "__"])
def test_a_name_loki_cannot_sanitize_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="label name"):
        sanitize_label_name(name)


# Expected values from grafana/loki v3.7.6 (5003600d7c78, same as v3.7.4),
# pkg/distributor/field_detection.go: normalizeLogLevel keeps unknown texts exactly as sent, maps
# the severity-number ranges 1-4 trace ... 21-24 fatal, and searches a plain line for level words.
@pytest.mark.parametrize(
    ("text", "number", "line", "level"),
    [
        ("INFO", 9, "GET / 200", "info"),
        ("WARN", 13, "GET / 404", "warn"),
        ("Warning", 0, "", "warn"),
        ("ERROR", 17, "", "error"),
        ("fatal", 21, "", "fatal"),
        ("FATAL", 0, "", "fatal"),
        ("Critical", 0, "", "critical"),
        ("inf", 0, "", "info"),
        ("information", 0, "", "info"),
        ("dbg", 0, "", "debug"),
        ("WRN", 0, "", "warn"),
        ("trc", 0, "", "trace"),
        ("err", 0, "", "error"),
        ("notice", 10, "", "notice"),
        ("informational", 9, "", "informational"),
        ("crit", 21, "", "crit"),
        ("Notice", 10, "", "Notice"),
        (" warn", 13, "", " warn"),
        ("", 1, "", "trace"),
        ("", 8, "", "debug"),
        ("", 12, "", "info"),
        ("", 16, "", "warn"),
        ("", 20, "", "error"),
        ("", 21, "", "fatal"),
        ("", 24, "", "fatal"),
        ("", 25, "", "unknown"),
        ("", 0, "GET /orders 200 1.0 ms", "unknown"),
        ("", 0, "payment failed: error code 7", "error"),
        ("", 0, "[WARN] disk almost full, error soon", "warn"),
        ("", 0, "a warning, then an error", "warn"),
        ("", 0, "misc:error terror", "unknown"),
    ],
)
def test_detected_level(text: str, number: int, line: str, level: str) -> None:
    request = _request(
        {"service.name": "shop"}, severity_text=text, severity_number=number, body=AnyValue(string_value=line)
    )
    (entry,) = entries_from_request(request)
    assert entry.metadata["detected_level"] == level


def test_a_level_attribute_comes_before_the_severity_and_a_sent_detected_level_is_only_normalised() -> None:
    (by_attribute,) = entries_from_request(
        _request({}, severity_text="ERROR", severity_number=17, attributes={"level": "DBG"})
    )
    (sent,) = entries_from_request(
        _request({}, severity_text="ERROR", severity_number=17, attributes={"detected_level": "WRN"})
    )
    assert by_attribute.metadata["detected_level"] == "debug"
    assert sent.metadata["detected_level"] == "warn"


def test_the_server_accepts_protobuf_gzip_and_the_other_signals() -> None:
    with LokiReceiver() as loki:
        payload = _request({"service.name": "shop"}, body=AnyValue(string_value="line")).SerializeToString()
        response = requests.post(
            f"{loki.otlp_endpoint}/v1/logs",
            data=gzip.compress(payload),
            headers={**PROTOBUF, "Content-Encoding": "gzip"},
            timeout=5,
        )
        assert response.status_code == 200
        entries = loki.wait_for(lambda found: len(found) == 1, timeout=5)
        assert entries[0].line == "line"
        traces = requests.post(
            f"{loki.otlp_endpoint}/v1/traces",
            data=ExportTraceServiceRequest().SerializeToString(),
            headers=PROTOBUF,
            timeout=5,
        )
        assert traces.status_code == 200
        assert len(loki.trace_requests()) == 1
        garbage = requests.post(
            f"{loki.otlp_endpoint}/v1/logs", data=b"\xff\x00garbage", headers=PROTOBUF, timeout=5
        )
        assert garbage.status_code == 400
        assert loki.errors()
        assert requests.post(f"{loki.base_url}/loki/api/v1/push", data=b"", timeout=5).status_code == 404
        unnamable = _request({"service.name": "shop"}, attributes={".": "x"}).SerializeToString()
        refused = requests.post(f"{loki.otlp_endpoint}/v1/logs", data=unnamable, headers=PROTOBUF, timeout=5)
        assert refused.status_code == 400
        with pytest.raises(TimeoutError):
            loki.wait_for(lambda found: len(found) > 1, timeout=0.2)
