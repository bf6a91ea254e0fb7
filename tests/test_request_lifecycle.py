"""One record per real request, built at its real end, written only to the request's own server span.

Copied request contexts (``copy_current_request_context``, ``stream_with_context``, contexts pushed on
other threads) must not end the request early; a monitor attached before the instrumentation must
still write to the instrumentation's span and to no other; what the instrumentation set is never
replaced; streamed bodies are recorded once, when they end.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from flask import Flask, Response, copy_current_request_context, jsonify, request, stream_with_context
from opentelemetry import trace
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from otel_flask_monitor import FlaskMonitor, get_state
from otel_flask_monitor.spans import SpanWriter
from tests.conftest import Exported
from tests.support.apps import build_app
from tests.support.real_processes import REPO

# What the monitor may add to a span when enrich_spans is on; by default it adds none of them.
MONITOR_SPAN_ATTRIBUTES = {
    "http.request.body.size",
    "http.response.body.size",
    "http.response.header.content-type",
    "duration_ms",
    "cpu_ms",
    "response_streamed",
}


def only_log(exported: Exported) -> ReadableLogRecord:
    logs = exported.request_logs()
    assert len(logs) == 1, [r.log_record.body for r in logs]
    return logs[0]


def only_server_span(exported: Exported) -> ReadableSpan:
    spans = exported.server_spans()
    assert len(spans) == 1, [s.name for s in spans]
    return spans[0]


def hex_ids(span: ReadableSpan) -> tuple[str, str]:
    assert span.context is not None
    return format(span.context.trace_id, "032x"), format(span.context.span_id, "016x")


def log_ids(log: ReadableLogRecord) -> tuple[str, str]:
    return format(log.log_record.trace_id or 0, "032x"), format(log.log_record.span_id or 0, "016x")


def with_copied_contexts(app: Flask) -> Flask:
    @app.post("/copy")
    def copy() -> Any:
        @copy_current_request_context
        def read_header() -> str:
            return request.headers.get("X-Req", "")

        return jsonify(header=read_header()), 201

    @app.post("/threads/<int:count>")
    def threads(count: int) -> Any:
        # As the instrumentation's own test_multithreaded: contexts copied here, pushed on workers.
        @copy_current_request_context
        def work(number: int) -> int:
            return number * 2 + len(request.headers.get("X-Req", ""))

        with ThreadPoolExecutor(count) as pool:
            doubled = sorted(pool.map(work, range(count)))
        return jsonify(doubled=doubled), 201

    @app.get("/generate/<int:count>")
    def generate(count: int) -> Response:
        @stream_with_context
        def lines() -> Iterator[str]:
            for number in range(count):
                yield f"{request.path} {number}\n"

        return Response(lines(), mimetype="text/plain")

    return app


# --- copied and pushed request contexts --------------------------------------------------------


@pytest.mark.parametrize("path", ["/copy", "/threads/5"])
def test_copied_request_contexts_do_not_end_the_request(path: str, exported: Exported) -> None:
    app = with_copied_contexts(build_app(monitor=False))
    FlaskMonitor(app, enrich_spans=True)

    response = app.test_client().post(path, headers={"X-Req": "a-header"})

    assert response.status_code == 201
    log = only_log(exported)
    attributes = dict(log.log_record.attributes or {})
    assert attributes["http.response.status_code"] == 201
    assert attributes["http.response.body.size"] == len(response.data)
    span = only_server_span(exported)
    assert response.headers["X-Trace-Id"] == hex_ids(span)[0]
    assert log_ids(log) == hex_ids(span)
    assert MONITOR_SPAN_ATTRIBUTES - {"response_streamed", "http.request.body.size"} <= set(
        span.attributes or {}
    )
    assert get_state(app).failures.counts() == {}


def test_stream_with_context_is_recorded_once_when_the_body_ends(exported: Exported) -> None:
    app = with_copied_contexts(build_app(monitor=False))
    FlaskMonitor(app)

    response = app.test_client().get("/generate/4")

    assert response.data == b"".join(f"/generate/4 {n}\n".encode() for n in range(4))
    attributes = dict(only_log(exported).log_record.attributes or {})
    assert attributes["http.response.body.size"] == len(response.data)
    assert attributes["response_streamed"] is True
    assert "response_cut_short" not in attributes


def test_a_failing_span_write_never_loses_a_streamed_request(
    exported: Exported, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = with_copied_contexts(build_app(monitor=False))
    FlaskMonitor(app, enrich_spans=True)

    def broken_enrich(*args: object) -> None:
        raise RuntimeError("span write failed")

    monkeypatch.setattr(SpanWriter, "enrich", broken_enrich)  # fault injection: no public seam fails it
    response = app.test_client().get("/generate/4")

    assert response.data == b"".join(f"/generate/4 {n}\n".encode() for n in range(4))  # the body ends
    attributes = dict(only_log(exported).log_record.attributes or {})
    assert attributes["http.response.body.size"] == len(response.data)
    state = get_state(app)
    (row,) = [r for r in state.stats_document()["routes"] if r["route"] == "/generate/<int:count>"]
    assert row["requests"] == 1
    assert state.failures.counts()["consumer 'span'"] >= 1


# --- the monitor attached before the instrumentation --------------------------------------------


@pytest.mark.parametrize("path", ["/items/7", "/boom"])
def test_monitor_attached_before_the_instrumentation_writes_only_to_its_span(
    path: str, exported: Exported, caplog: pytest.LogCaptureFixture
) -> None:
    app = build_app(instrument_flask=False, enrich_spans=True)
    FlaskInstrumentor().instrument_app(app)  # type: ignore[no-untyped-call]
    client = app.test_client()
    tracer = trace.get_tracer("caller")

    with caplog.at_level("INFO", logger="otel_flask_monitor"):
        for _ in range(2):  # the first request finds the hooks out of place, the second does not
            with tracer.start_as_current_span("caller's own span"):
                response = client.get(path, headers={"X-Req": "1"})

    spans = exported.spans()
    callers = [s for s in spans if s.name == "caller's own span"]
    theirs = [s for s in spans if s.instrumentation_scope and "flask" in s.instrumentation_scope.name]
    assert len(callers) == 2
    assert len(theirs) == 2
    for caller in callers:
        assert caller.status.status_code is StatusCode.UNSET
        assert not set(caller.attributes or {}) & (MONITOR_SPAN_ATTRIBUTES | {"error.type"})
        assert caller.events == ()
    logs = exported.request_logs()
    assert len(logs) == 2
    for span, log in zip(theirs, logs, strict=True):
        assert MONITOR_SPAN_ATTRIBUTES - {"response_streamed", "http.request.body.size"} <= set(
            span.attributes or {}
        )
        assert log_ids(log) == hex_ids(span)
    assert response.headers["X-Trace-Id"] == hex_ids(theirs[-1])[0]
    if path == "/boom":
        assert all(s.status.status_code is StatusCode.ERROR for s in theirs)
    moved = [r for r in caplog.records if "moved its request hooks" in r.getMessage()]
    assert len(moved) == 1


def test_hooks_are_placed_behind_an_instrumentation_applied_later() -> None:
    app = build_app(instrument_flask=False)
    FlaskInstrumentor().instrument_app(app)  # type: ignore[no-untyped-call]
    lifecycle = get_state(app).lifecycle

    app.test_client().get("/items/1")

    before = app.before_request_funcs[None]
    teardown = app.teardown_request_funcs[None]
    assert before.index(app._before_request) < before.index(lifecycle.before_request)  # type: ignore[attr-defined]
    # teardown functions run last-registered first: ours must run before the one ending the span
    assert teardown.index(app._teardown_request) < teardown.index(lifecycle.teardown_request)  # type: ignore[attr-defined]


def test_first_request_of_an_excluded_path_is_redacted_when_instrumented_later(exported: Exported) -> None:
    app = build_app(instrument_flask=False, excluded_paths=["^/items/"])
    FlaskInstrumentor().instrument_app(app)  # type: ignore[no-untyped-call]

    app.test_client().get("/items/1?token=first-request-secret")

    assert exported.request_logs() == []
    attributes = dict(only_server_span(exported).attributes or {})
    assert "first-request-secret" not in repr(attributes)
    assert attributes["http.target"] == "/items/1?token=[REDACTED]"


def test_percent_encoded_long_target_is_cut_on_the_span(exported: Exported) -> None:
    """The instrumentation copies the raw URI, up to three times longer than the decoded path."""
    build_app().test_client().get("/00" + "%00" * 400)

    target = dict(only_server_span(exported).attributes or {})["http.target"]
    assert isinstance(target, str)
    assert len(target) <= 1024  # the default max_attribute_length
    assert target.endswith("...")


# --- what the instrumentation set stays as it set it ------------------------------------------

_SEMCONV_SCRIPT = """
import json, sys
from flask import Flask
from opentelemetry import trace
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from otel_flask_monitor import FlaskMonitor

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
found = {}
for enrich in (False, True):
    for order in ("monitor after", "monitor before"):
        app = Flask(f"semconv-{enrich}-{order}")

        @app.get("/hello/<int:helloid>")
        def hello(helloid):
            raise ValueError(":-(")

        if order == "monitor before":
            FlaskMonitor(app, instrument_flask=False, setup_telemetry=False, dashboard_enabled=False,
                         enrich_spans=enrich)
            FlaskInstrumentor().instrument_app(app)
        else:
            FlaskInstrumentor().instrument_app(app)
            FlaskMonitor(app, instrument_flask=False, setup_telemetry=False, dashboard_enabled=False,
                         enrich_spans=enrich)
        exporter.clear()
        status = app.test_client().get("/hello/500").status_code
        (span,) = exporter.get_finished_spans()
        found[f"{order}, enrich_spans={enrich}"] = {
            "status": status,
            "attributes": dict(span.attributes),
            "span_status": span.status.status_code.name,
        }
bare = Flask("bare")

@bare.get("/hello/<int:helloid>")
def hello(helloid):
    raise ValueError(":-(")

FlaskInstrumentor().instrument_app(bare)
exporter.clear()
bare.test_client().get("/hello/500")
(span,) = exporter.get_finished_spans()
found["bare"] = {"attributes": dict(span.attributes)}
json.dump(found, sys.stdout)
"""


def test_error_type_the_instrumentation_sets_is_kept() -> None:
    """Under the stable HTTP conventions the instrumentation sets ``error.type="500"``; the monitor
    adds nothing to the span by default and, asked to enrich it, still keeps that value. The opt-in
    is read once per process: one subprocess per value, run side by side."""
    processes = {
        opt_in: subprocess.Popen(
            [sys.executable, "-c", _SEMCONV_SCRIPT],
            env={"OTEL_SEMCONV_STABILITY_OPT_IN": opt_in, "PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for opt_in in ("http", "http/dup")
    }
    for opt_in, process in processes.items():
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, (opt_in, stderr)
        found = json.loads(stdout)
        bare = found.pop("bare")["attributes"]
        assert bare["error.type"] == "500", opt_in
        for case, seen in found.items():
            assert seen["status"] == 500, (opt_in, case)
            assert seen["span_status"] == "ERROR", (opt_in, case)
            assert seen["attributes"]["error.type"] == "500", (opt_in, case)
            if case.endswith("enrich_spans=False"):
                assert seen["attributes"] == bare, (opt_in, case)  # the upstream test's exact comparison
            else:
                assert set(seen["attributes"]) - set(bare) <= MONITOR_SPAN_ATTRIBUTES, (opt_in, case)
                assert {k: seen["attributes"][k] for k in bare} == bare, (opt_in, case)


def test_headers_the_instrumentation_captures_are_not_overwritten(
    monkeypatch: pytest.MonkeyPatch, exported: Exported
) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST", "x-tenant")
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE", "content-type")
    app = build_app(enrich_spans=True, captured_headers=["X-Tenant"])

    app.test_client().get("/items/1", headers={"X-Tenant": "acme"})

    attributes = dict(only_server_span(exported).attributes or {})
    assert attributes["http.request.header.x_tenant"] == ("acme",)  # the instrumentation's, as a list
    assert "http.request.header.x-tenant" not in attributes
    assert attributes["http.response.header.content_type"] == ("application/json",)
    assert "http.response.header.content-type" not in attributes
    # The log record is the monitor's own: it keeps its spelling.
    log_attributes = dict(only_log(exported).log_record.attributes or {})
    assert log_attributes["http.request.header.x-tenant"] == "acme"


def test_status_the_instrumentation_set_is_kept(exported: Exported) -> None:
    app = build_app(enrich_spans=True)

    app.test_client().get("/abort-500")

    span = only_server_span(exported)
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description is None  # the instrumentation's ERROR, without a monitor description


# --- additive span attributes are opt-in --------------------------------------------------------


def test_by_default_the_span_is_the_instrumentations_own(exported: Exported) -> None:
    bare = build_app("bare", monitor=False)
    FlaskInstrumentor().instrument_app(bare)  # type: ignore[no-untyped-call]
    monitored = build_app("monitored")

    bare.test_client().post("/items", json={"name": "lamp"})
    monitored.test_client().post("/items", json={"name": "lamp"})

    bare_span, monitored_span = exported.server_spans()
    assert dict(monitored_span.attributes or {}) == dict(bare_span.attributes or {})
    assert monitored_span.status.status_code is bare_span.status.status_code
    attributes = dict(only_log_of(exported, "POST").log_record.attributes or {})
    assert attributes["duration_ms"] > 0  # the monitor's figures are in its log record
    assert attributes["http.request.body.size"] == len(b'{"name": "lamp"}')


def only_log_of(exported: Exported, method: str) -> ReadableLogRecord:
    (log,) = [
        r
        for r in exported.request_logs()
        if (r.log_record.attributes or {}).get("http.request.method") == method
    ]
    return log


# --- OTEL_PYTHON_INSTRUMENTATION_HTTP_CAPTURE_ALL_METHODS ---------------------------------------


def test_non_standard_methods_follow_the_capture_all_methods_choice(
    monkeypatch: pytest.MonkeyPatch, exported: Exported
) -> None:
    app = build_app()
    client = app.test_client()

    client.open("/items/756", method="NONSTANDARD")
    monkeypatch.setenv("OTEL_PYTHON_INSTRUMENTATION_HTTP_CAPTURE_ALL_METHODS", "true")
    client.open("/items/756", method="NONSTANDARD")

    default, captured = exported.server_spans()
    assert default.name == "HTTP"
    assert captured.name == "NONSTANDARD"  # the method as sent, without the raw path
    first, second = (dict(r.log_record.attributes or {}) for r in exported.request_logs())
    assert first["http.request.method"] == "_OTHER"
    assert first["http.request.method_original"] == "NONSTANDARD"
    assert second["http.request.method"] == "NONSTANDARD"
    assert "http.request.method_original" not in second
    assert [str(r.log_record.body).split()[0] for r in exported.request_logs()] == ["NONSTANDARD"] * 2


# --- streamed bodies (test client) ---------------------------------------------------------------


def test_streamed_body_left_unread_is_recorded_when_closed(
    app_with_stream: Flask, exported: Exported
) -> None:
    response = app_with_stream.test_client().get("/stream")

    assert exported.request_logs() == []  # the body is still on its way
    response.close()

    attributes = dict(only_log(exported).log_record.attributes or {})
    assert attributes["response_cut_short"] == "closed_early"
    assert attributes["http.response.status_code"] == 200


def test_head_of_a_streamed_route_is_complete_with_no_body(
    app_with_stream: Flask, exported: Exported
) -> None:
    response = app_with_stream.test_client().head("/stream")
    response.close()

    assert response.data == b""
    attributes = dict(only_log(exported).log_record.attributes or {})
    assert attributes["http.response.body.size"] == 0
    assert "response_cut_short" not in attributes


def test_error_pages_are_recorded_as_fixed_size_bodies(exported: Exported) -> None:
    response = build_app().test_client().get("/no/such/route")

    assert response.status_code == 404
    attributes = dict(only_log(exported).log_record.attributes or {})
    assert attributes["http.response.body.size"] == len(response.data)
    assert "response_streamed" not in attributes


def test_streamed_span_ends_with_the_view_and_says_so_when_enriched(exported: Exported) -> None:
    app = build_app(enrich_spans=True)

    response = app.test_client().get("/stream")
    assert response.data

    span = only_server_span(exported)
    attributes = dict(span.attributes or {})
    assert attributes["response_streamed"] is True
    assert "http.response.body.size" not in attributes  # not known before the span ends
    log = only_log(exported)
    assert log_ids(log) == hex_ids(span)


@pytest.fixture
def app_with_stream() -> Flask:
    return build_app()
