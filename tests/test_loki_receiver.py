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

from tests.loki_receiver import LokiReceiver, detected_level, entries_from_request, sanitize_label_name

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


@pytest.mark.parametrize(
    ("name", "sanitized"),
    [("http.route", "http_route"), ("a-b/c", "a_b_c"), ("1abc", "key_1abc"), ("_x", "key_x"), ("__x", "__x")],
)
def test_label_names_are_sanitized_like_loki(name: str, sanitized: str) -> None:
    assert sanitize_label_name(name) == sanitized


@pytest.mark.parametrize(
    ("text", "number", "level"),
    [
        ("INFO", 9, "info"),
        ("WARN", 13, "warn"),
        ("Warning", 0, "warn"),
        ("ERROR", 17, "error"),
        ("", 21, "critical"),
    ],
)
def test_detected_level(text: str, number: int, level: str) -> None:
    assert detected_level(text, number) == level


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
        with pytest.raises(TimeoutError):
            loki.wait_for(lambda found: len(found) > 1, timeout=0.2)
