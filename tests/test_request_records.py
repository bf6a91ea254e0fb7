"""One record per request: the server span it enriches and the log record it emits."""

from __future__ import annotations

import re
from typing import Final

import pytest
from flask import Flask, Response
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from otel_flask_monitor import FlaskMonitor
from tests.conftest import Exported
from tests.support.apps import build_app
from tests.support.loki_receiver import entries_from_request

HEX32 = re.compile(r"^[0-9a-f]{32}$")


@pytest.fixture
def app() -> Flask:
    return build_app()


def only(items: list[ReadableLogRecord]) -> ReadableLogRecord:
    assert len(items) == 1, [i.log_record.body for i in items]
    return items[0]


def only_span(items: list[ReadableSpan]) -> ReadableSpan:
    assert len(items) == 1, [s.name for s in items]
    return items[0]


def test_successful_request_produces_one_log_record_inside_the_server_span(
    app: Flask, exported: Exported
) -> None:
    response = app.test_client().get("/items/7?colour=red", headers={"User-Agent": "pytest-agent/1.0"})

    assert response.status_code == 200
    span = only_span(exported.server_spans())
    log = only(exported.request_logs()).log_record
    assert span.context is not None
    assert log.trace_id == span.context.trace_id
    assert log.span_id == span.context.span_id
    assert response.headers["X-Trace-Id"] == format(span.context.trace_id, "032x")
    assert log.severity_number == SeverityNumber.INFO
    assert log.severity_text == "INFO"
    assert isinstance(log.body, str)
    assert re.fullmatch(r"GET /items/<int:item_id> 200 \d+\.\d ms", log.body)
    attributes = dict(log.attributes or {})
    assert attributes["http.request.method"] == "GET"
    assert attributes["http.route"] == "/items/<int:item_id>"
    assert attributes["url.path"] == "/items/7"
    assert attributes["url.query"] == "colour=red"
    assert attributes["url.scheme"] == "http"
    assert attributes["http.response.status_code"] == 200
    assert attributes["http.response.header.content-type"] == "application/json"
    assert attributes["http.response.body.size"] == len(response.data)
    assert attributes["client.address"] == "127.0.0.1"
    assert attributes["user_agent.original"] == "pytest-agent/1.0"
    assert attributes["server.address"] == "localhost"
    assert isinstance(attributes["duration_ms"], float)
    assert attributes["duration_ms"] > 0
    assert isinstance(attributes["cpu_ms"], float)
    assert attributes["cpu_ms"] >= 0
    assert "error.type" not in attributes


def test_log_attributes_are_flat_primitives_without_none(app: Flask, exported: Exported) -> None:
    client = app.test_client()
    client.get("/items/1")
    client.get("/boom")
    client.get("/nowhere")
    for record in exported.request_logs():
        for key, value in (record.log_record.attributes or {}).items():
            assert isinstance(value, (str, int, float, bool)), (key, value)


def test_server_span_gets_what_the_instrumentation_does_not_record_when_asked(exported: Exported) -> None:
    response = build_app(enrich_spans=True).test_client().post("/items", json={"name": "lamp"})

    span = only_span(exported.server_spans())
    attributes = dict(span.attributes or {})
    # The instrumentation's own HTTP attributes, in the naming OTEL_SEMCONV_STABILITY_OPT_IN selects
    # (the default: the older names) ...
    assert attributes["http.route"] == "/items"
    assert attributes["http.method"] == "POST"
    assert attributes["http.status_code"] == 201
    # ... plus the monitor's additions, without a second copy of the above under the stable names.
    assert attributes["http.request.body.size"] == len(b'{"name": "lamp"}')
    assert attributes["http.response.body.size"] == len(response.data)
    assert attributes["http.response.header.content-type"] == "application/json"
    assert isinstance(attributes["duration_ms"], float)
    assert isinstance(attributes["cpu_ms"], float)
    assert "http.request.method" not in attributes
    assert "http.response.status_code" not in attributes
    assert span.status.status_code != StatusCode.ERROR


def test_unhandled_exception_answers_json_500_and_is_recorded_once(app: Flask, exported: Exported) -> None:
    response = app.test_client().get("/boom")

    assert response.status_code == 500
    body = response.get_json()
    assert body["error"] == "Internal Server Error"
    assert HEX32.match(body["trace_id"])
    assert response.headers["X-Trace-Id"] == body["trace_id"]
    span = only_span(exported.server_spans())
    assert span.status.status_code == StatusCode.ERROR
    assert [event.name for event in span.events] == ["exception"]
    assert format(span.context.trace_id, "032x") == body["trace_id"]  # type: ignore[union-attr]
    log = only(exported.request_logs()).log_record
    assert log.severity_number == SeverityNumber.ERROR
    attributes = dict(log.attributes or {})
    assert attributes["exception.type"] == "tests.support.apps.ShopError"
    assert attributes["exception.message"] == "the till is on fire"
    assert "ShopError: the till is on fire" in str(attributes["exception.stacktrace"])
    assert attributes["error.type"] == "tests.support.apps.ShopError"
    assert attributes["http.response.status_code"] == 500


def test_view_that_raises_still_produces_a_record_when_exceptions_propagate(
    app: Flask, exported: Exported
) -> None:
    app.config["TESTING"] = True  # Flask re-raises instead of answering 500; after_request never runs
    with pytest.raises(RuntimeError, match="the till is on fire"):
        app.test_client().get("/boom")

    log = only(exported.request_logs()).log_record
    attributes = dict(log.attributes or {})
    assert attributes["http.response.status_code"] == 500
    assert attributes["exception.type"] == "tests.support.apps.ShopError"
    assert log.severity_number == SeverityNumber.ERROR


@pytest.mark.parametrize(
    ("path", "status", "severity"),
    [
        ("/items/404", 404, SeverityNumber.WARN),
        ("/no/such/route", 404, SeverityNumber.WARN),
        ("/teapot", 418, SeverityNumber.WARN),
        ("/abort-500", 500, SeverityNumber.ERROR),
    ],
)
def test_http_errors_keep_their_status_and_body(
    app: Flask, exported: Exported, path: str, status: int, severity: SeverityNumber
) -> None:
    bare = build_app(monitor=False).test_client().get(path)
    response = app.test_client().get(path)

    assert response.status_code == status == bare.status_code
    assert response.data == bare.data
    log = only(exported.request_logs()).log_record
    assert log.severity_number == severity
    assert "exception.type" not in (log.attributes or {})


def _status_app() -> Flask:
    app = build_app(monitor=False)

    @app.get("/status/<int:code>")
    def status(code: int) -> tuple[str, int]:
        return "", code

    FlaskMonitor(app)
    return app


# The whole mapping (docs/log-schema.md), by number and by text ("WARN", the OpenTelemetry short name,
# never Python's "WARNING"), and the detected_level Loki derives from it (tests/support/loki_receiver.py
# follows Loki's own rules).
INFO: Final = (SeverityNumber.INFO, "INFO", "info")
WARN: Final = (SeverityNumber.WARN, "WARN", "warn")
ERROR: Final = (SeverityNumber.ERROR, "ERROR", "error")


SEVERITY_CASES: Final = [
    ("/status/200", 200, INFO),
    ("/status/201", 201, INFO),
    ("/status/204", 204, INFO),
    ("/status/301", 301, INFO),
    ("/status/304", 304, INFO),
    ("/status/399", 399, INFO),
    ("/status/400", 400, WARN),
    ("/status/401", 401, WARN),
    ("/status/404", 404, WARN),
    ("/no/such/route", 404, WARN),
    ("/status/429", 429, WARN),
    ("/status/499", 499, WARN),
    ("/status/500", 500, ERROR),
    ("/status/503", 503, ERROR),
    ("/status/599", 599, ERROR),
    ("/boom", 500, ERROR),
]


@pytest.mark.parametrize(
    ("path", "status", "severity"),
    SEVERITY_CASES,
    ids=[f"{path} {status}" for path, status, _ in SEVERITY_CASES],
)
def test_severity_follows_the_status_and_exceptions(
    exported: Exported, path: str, status: int, severity: tuple[SeverityNumber, str, str]
) -> None:
    number, text, loki_level = severity
    assert _status_app().test_client().get(path).status_code == status

    record = only(exported.request_logs())
    assert record.log_record.severity_number == number
    assert record.log_record.severity_text == text
    (entry,) = entries_from_request(encode_logs([record]))
    assert entry.metadata["severity_text"] == text
    assert entry.metadata["severity_number"] == str(number.value)
    assert entry.metadata["detected_level"] == loki_level


def test_method_not_allowed_and_malformed_json_keep_their_answers(app: Flask, exported: Exported) -> None:
    client = app.test_client()
    bare = build_app(monitor=False).test_client()

    wrong_method = client.delete("/items/1")
    malformed = client.post("/items", data=b"{not json", content_type="application/json")

    assert wrong_method.status_code == 405
    assert wrong_method.data == bare.delete("/items/1").data
    assert malformed.status_code == 400
    assert malformed.data == bare.post("/items", data=b"{not json", content_type="application/json").data
    statuses = sorted(
        dict(r.log_record.attributes or {})["http.response.status_code"] for r in exported.request_logs()
    )
    assert statuses == [400, 405]


def test_unmatched_route_has_no_route_attribute_and_the_path_in_the_body(
    app: Flask, exported: Exported
) -> None:
    app.test_client().get("/no/such/route")

    log = only(exported.request_logs()).log_record
    assert "http.route" not in (log.attributes or {})
    assert str(log.body).startswith("GET /no/such/route 404 ")
    # One span name per method, not one per scanned path.
    assert only_span(exported.server_spans()).name == "GET"


def test_app_error_handler_takes_precedence(exported: Exported) -> None:
    app = build_app(monitor=False)

    @app.errorhandler(Exception)
    def own_handler(error: Exception) -> tuple[str, int]:
        return f"handled by the app: {type(error).__name__}", 503

    FlaskMonitor(app)
    response = app.test_client().get("/boom")

    assert response.status_code == 503
    assert response.data == b"handled by the app: ShopError"
    assert only(exported.request_logs()).log_record.severity_number == SeverityNumber.ERROR


@pytest.mark.parametrize("status", [500, 200])
def test_app_500_handler_registered_before_the_monitor_wins(exported: Exported, status: int) -> None:
    app = build_app(monitor=False)

    @app.errorhandler(500)
    def own_500(error: Exception) -> tuple[str, int]:
        return "our own 500 page", status

    FlaskMonitor(app)
    response = app.test_client().get("/boom")

    assert response.status_code == status
    assert response.data == b"our own 500 page"
    # An unhandled exception is an error whatever status the app's handler answers with.
    log = only(exported.request_logs()).log_record
    assert log.severity_number == SeverityNumber.ERROR
    assert log.severity_text == "ERROR"
    assert dict(log.attributes or {})["exception.type"] == "tests.support.apps.ShopError"


def test_excluded_paths_produce_nothing(exported: Exported) -> None:
    app = build_app(excluded_paths=["^/health-check$"])
    client = app.test_client()

    client.get("/health-check")
    assert exported.request_logs() == []

    client.get("/items/3")
    assert len(exported.request_logs()) == 1


def test_otel_excluded_urls_variable_is_honoured(monkeypatch: pytest.MonkeyPatch, exported: Exported) -> None:
    monkeypatch.setenv("OTEL_PYTHON_FLASK_EXCLUDED_URLS", "health-check")
    app = build_app()
    app.test_client().get("/health-check")

    assert exported.request_logs() == []
    assert exported.server_spans() == []


def test_monitor_routes_produce_no_records(exported: Exported) -> None:
    app = build_app()
    app.test_client().get("/monitoring/health")
    app.test_client().get("/monitoring")

    assert exported.request_logs() == []
    assert exported.server_spans() == []


def test_trace_id_header_can_be_renamed_or_disabled(exported: Exported) -> None:
    renamed = build_app("renamed", trace_id_header="X-Request-Trace").test_client().get("/items/1")
    disabled = build_app("disabled", trace_id_header="").test_client().get("/items/1")

    assert HEX32.match(renamed.headers["X-Request-Trace"])
    assert "X-Trace-Id" not in renamed.headers
    assert "X-Trace-Id" not in disabled.headers


def test_streamed_response_is_recorded_with_the_bytes_sent(app: Flask, exported: Exported) -> None:
    response = app.test_client().get("/stream")

    assert response.data == b"chunk 0\nchunk 1\nchunk 2\n"
    attributes = dict(only(exported.request_logs()).log_record.attributes or {})
    assert attributes["http.response.status_code"] == 200
    assert attributes["http.response.body.size"] == len(response.data)
    assert attributes["response_streamed"] is True


def test_head_and_options_are_recorded(app: Flask, exported: Exported) -> None:
    client = app.test_client()
    assert client.head("/items/1").status_code == 200
    assert client.options("/items/1").status_code == 200

    methods = sorted(
        str(dict(r.log_record.attributes or {})["http.request.method"]) for r in exported.request_logs()
    )
    assert methods == ["HEAD", "OPTIONS"]


def test_disabled_consumers_emit_nothing(exported: Exported) -> None:
    app = build_app(emit_logs=False, enrich_spans=False)
    app.test_client().get("/items/1")

    assert exported.request_logs() == []
    span = only_span(exported.server_spans())
    assert "duration_ms" not in (span.attributes or {})


def test_requests_answered_by_the_apps_own_hooks_are_recorded(exported: Exported) -> None:
    app = build_app(monitor=False)

    @app.before_request
    def require_key() -> tuple[str, int] | None:
        from flask import request

        return ("missing key", 401) if request.path == "/items/9" else None

    @app.after_request
    def mark_accepted(response: Response) -> Response:
        if response.status_code == 201:
            response.status_code = 202
        return response

    from otel_flask_monitor import FlaskMonitor

    FlaskMonitor(app)
    client = app.test_client()
    assert client.get("/items/9").status_code == 401
    assert client.post("/items", json={}).status_code == 202

    statuses = [
        dict(r.log_record.attributes or {})["http.response.status_code"] for r in exported.request_logs()
    ]
    assert statuses == [401, 202]
    assert [s.attributes["http.status_code"] for s in exported.server_spans() if s.attributes] == [
        401,
        202,
    ]


def test_untrusted_host_header_still_produces_a_record(exported: Exported) -> None:
    # Without the Flask instrumentation: its own teardown reads request.url and raises for such a host.
    app = build_app(instrument_flask=False)
    app.config["TRUSTED_HOSTS"] = ["shop.example"]
    from otel_flask_monitor import get_state

    response = app.test_client().get("/items/1", headers={"Host": "evil.example"})

    assert response.status_code == 400  # Flask's own answer to an untrusted host
    assert len(exported.request_logs()) == 1
    assert get_state(app).failures.counts() == {}


def test_span_name_of_an_unmatched_request_with_an_invented_method(exported: Exported) -> None:
    build_app().test_client().open("/no/such/route", method="BREWCOFFEE")

    assert only_span(exported.server_spans()).name == "HTTP"


def test_prefix_routes_of_the_app_are_recorded_when_the_dashboard_is_off(exported: Exported) -> None:
    app = build_app(dashboard_enabled=False)

    @app.get("/monitoring/orders")
    def orders() -> dict[str, int]:
        return {"orders": 3}

    assert app.test_client().get("/monitoring/orders").status_code == 200
    assert len(exported.request_logs()) == 1
