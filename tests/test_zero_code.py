"""Zero-code monitoring: real ``opentelemetry-instrument`` processes exporting OTLP/HTTP to a sink.

Each test starts the app (tests/support/zero_code_app.py, which holds no monitoring code unless a variant
asks for it) under Flask's own server or gunicorn, sends requests, stops the server gracefully (so
every batch is flushed at exit) and then asserts on what the sink decoded.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from otel_flask_monitor.logs import EVENT_NAME
from tests.support.otlp_sink import SPAN_KIND_SERVER, OtlpSink, ReceivedLog, ReceivedSpan
from tests.support.real_processes import FAST_EXPORT, free_port, wait_for_port

pytestmark = pytest.mark.slow

APP_DIR = Path(__file__).parent / "support"  # gunicorn imports zero_code_app from there
APP_SCRIPT = APP_DIR / "zero_code_app.py"
BIN_DIR = Path(sys.executable).parent
SERVICE_NAME = "zero-code-shop"
ITEM_ROUTE = "/items/<int:item_id>"
# A gauge the monitor's process metrics export from every process it attaches to.
PROCESS_GAUGE = "process.memory.usage"


def _otel_env(sink: OtlpSink, **overrides: str) -> dict[str, str]:
    # Start from a clean slate: an OTEL_* variable of the developer's shell must not leak in.
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    env.update(
        OTEL_SERVICE_NAME=SERVICE_NAME,
        OTEL_EXPORTER_OTLP_ENDPOINT=sink.endpoint,
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_LOGS_EXPORTER="otlp",
        OTEL_METRICS_EXPORTER="otlp",
        **FAST_EXPORT,
        # Span enrichment is opt-in: switched on here to show the monitor's hooks reach the span.
        OTEL_FLASK_MONITOR_ENRICH_SPANS="true",
        PYTHONUNBUFFERED="1",
    )
    env.update(overrides)
    return env


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    output: Path

    def get(self, path: str) -> tuple[str | None, Any]:
        """GET ``path`` on a fresh connection (so gunicorn spreads them); (X-Trace-Id, JSON body)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as response:
            return response.headers.get("X-Trace-Id"), json.loads(response.read())

    def stop(self, stop_signal: signal.Signals) -> str:
        """Stop gracefully (exit handlers flush the batches) and return everything the server printed."""
        os.killpg(self.process.pid, stop_signal)
        self.process.wait(timeout=20)
        return self.output.read_text(errors="replace")


@contextmanager
def running(command: Sequence[str], env: dict[str, str], port: int, tmp_path: Path) -> Iterator[Server]:
    output = tmp_path / f"server-{port}.log"
    with output.open("wb") as sink_file:
        process = subprocess.Popen(
            [str(BIN_DIR / "opentelemetry-instrument"), *command],
            env=env,
            cwd=APP_DIR,
            stdout=sink_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # one process group: the reloader's child and gunicorn's workers too
        )
    try:
        wait_for_port(port, process, "server", lambda: output.read_text(errors="replace"))
        yield Server(process, port, output)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def flask_server(sink: OtlpSink, tmp_path: Path, **env_overrides: str) -> Any:
    port = free_port()
    command = [sys.executable, str(APP_SCRIPT), str(port)]
    return running(command, _otel_env(sink, **env_overrides), port, tmp_path)


def request_logs(sink: OtlpSink) -> list[ReceivedLog]:
    return [log for log in sink.logs() if log.event_name == EVENT_NAME]


def server_spans(sink: OtlpSink) -> list[ReceivedSpan]:
    return [span for span in sink.spans() if span.kind == SPAN_KIND_SERVER]


def assert_one_record_and_enriched_span_per_request(sink: OtlpSink, trace_ids: Sequence[str]) -> None:
    records = sink.wait_for(lambda: request_logs(sink), lambda got: len(got) >= len(trace_ids))
    spans = sink.wait_for(lambda: server_spans(sink), lambda got: len(got) >= len(trace_ids))
    records_per_trace = Counter(record.trace_id for record in records)
    assert {trace_id: records_per_trace[trace_id] for trace_id in trace_ids} == dict.fromkeys(trace_ids, 1)
    assert len(records) == len(trace_ids), "a record for a request the test did not send"
    spans_by_trace = {span.trace_id: span for span in spans}
    for record in records:
        assert record.scope == "otel_flask_monitor"
        assert record.resource["service.name"] == SERVICE_NAME
        # The distro made this resource; the monitor set up no provider of its own.
        assert "telemetry.auto.version" in record.resource
        span = spans_by_trace[record.trace_id]
        assert record.span_id == span.span_id, "the record was emitted inside the server span"
        assert "duration_ms" in span.attributes
        assert span.attributes["http.route"] == record.attributes["http.route"]
        assert record.attributes["http.request.method"] == "GET"
        assert record.attributes["http.response.status_code"] == 200


@pytest.mark.parametrize(
    "variant",
    [
        "from_import",  # the Flask docs' `from flask import Flask`
        "flask_module",  # `flask.Flask(...)`
        "original_class",  # a name bound before the Flask instrumentation replaced flask.Flask
        "self_monitored",  # the app also calls FlaskMonitor(app) itself
    ],
)
def test_flask_server_monitors_every_way_of_making_the_app(variant: str, tmp_path: Path) -> None:
    with OtlpSink() as sink:
        with flask_server(sink, tmp_path, ZERO_CODE_APP_VARIANT=variant) as server:
            trace_ids = []
            for item_id in range(3):
                trace_id, body = server.get(f"/items/{item_id}")
                assert body["id"] == item_id
                assert trace_id, "the monitor's X-Trace-Id response header is missing"
                trace_ids.append(trace_id)
            trace_id, introspection = server.get("/introspect")
            assert trace_id
            trace_ids.append(trace_id)
            server.stop(signal.SIGINT)

        assert introspection["monitored"] is True
        assert introspection["monitor_hooks"] == 1, "the monitor attached more than once"
        assert introspection["owned_providers"] == 0, "the monitor set up providers of its own"
        assert introspection["tracer_provider"] == "opentelemetry.sdk.trace"
        assert_one_record_and_enriched_span_per_request(sink, trace_ids)
        item_records = [r for r in request_logs(sink) if r.attributes.get("http.route") == ITEM_ROUTE]
        assert len(item_records) == 3
        points = sink.wait_for(sink.metric_points, lambda got: any(p.name == PROCESS_GAUGE for p in got))
        assert any(point.name == PROCESS_GAUGE and point.value > 0 for point in points)


def test_debug_reloader_child_is_monitored(tmp_path: Path) -> None:
    """Flask's reloader re-executes the script; the child must come up instrumented (contrib #546)."""
    with OtlpSink() as sink:
        with flask_server(sink, tmp_path, ZERO_CODE_APP_DEBUG="1") as server:
            trace_ids = [server.get(f"/items/{item_id}")[0] or "" for item_id in range(2)]
            output = server.stop(signal.SIGINT)
        assert "Restarting with" in output, "the reloader did not run"
        assert_one_record_and_enriched_span_per_request(sink, trace_ids)


def test_logging_auto_instrumentation_duplicates_nothing(tmp_path: Path) -> None:
    with OtlpSink() as sink:
        with flask_server(sink, tmp_path, OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED="true") as server:
            log_trace_id, _ = server.get("/log")
            item_trace_id, _ = server.get("/items/7")
            output = server.stop(signal.SIGINT)

        assert log_trace_id
        assert item_trace_id
        assert_one_record_and_enriched_span_per_request(sink, [log_trace_id, item_trace_id])
        app_lines = sink.wait_for(
            lambda: [log for log in sink.logs() if log.body == "hello from the app"],
            lambda got: len(got) >= 1,
        )
        assert len(app_lines) == 1
        assert app_lines[0].scope == "zero_code_app"
        assert app_lines[0].trace_id == log_trace_id
        # The app's own handler (logging.basicConfig) still prints the line, once.
        assert output.count("app-log zero_code_app WARNING hello from the app") == 1


def test_disabled_by_entry_point_name(tmp_path: Path) -> None:
    with OtlpSink() as sink:
        with flask_server(sink, tmp_path, OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="flask_monitor") as server:
            for item_id in range(3):
                trace_id, _ = server.get(f"/items/{item_id}")
                assert trace_id is None
            _, introspection = server.get("/introspect")
            server.stop(signal.SIGINT)

        assert introspection["monitored"] is False
        assert introspection["monitor_hooks"] == 0
        # The Flask instrumentation still traces; the spans are simply not enriched.
        spans = sink.wait_for(lambda: server_spans(sink), lambda got: len(got) >= 4)
        assert len(spans) == 4
        assert not any("duration_ms" in span.attributes for span in spans)
        assert request_logs(sink) == []
        assert not any(point.name == PROCESS_GAUGE for point in sink.metric_points())


# gunicorn's access log tells which worker answered which trace: pid and the X-Trace-Id header.
ACCESS_LOG_FORMAT = "access pid=%(p)s trace_id=%({x-trace-id}o)s"
ACCESS_LINE = re.compile(r"access pid=<(\d+)> trace_id=([0-9a-f]{32})")


def _worker_by_trace(output: str) -> dict[str, int]:
    return {trace_id: int(pid) for pid, trace_id in ACCESS_LINE.findall(output)}


@pytest.mark.parametrize(
    ("app_spec", "path"),
    [
        ("zero_code_app:app", "/items/1"),
        # The demo calls FlaskMonitor(app) itself: the instrumentor must leave it alone.
        ("otel_flask_monitor.demo.app:create_app()", "/api/products"),
    ],
)
def test_gunicorn_workers_each_report(app_spec: str, path: str, tmp_path: Path) -> None:
    port = free_port()
    command = [
        str(BIN_DIR / "gunicorn"),
        "--workers=2",
        f"--bind=127.0.0.1:{port}",
        "--no-control-socket",  # gunicorn 23+ would otherwise share ~/.gunicorn/gunicorn.ctl
        "--access-logfile=-",
        f"--access-logformat={ACCESS_LOG_FORMAT}",
        app_spec,
    ]
    with OtlpSink() as sink:
        with running(command, _otel_env(sink), port, tmp_path) as server:
            trace_ids: list[str] = []
            for _batch in range(20):  # batches until both workers answered a few times; usually one
                for _request in range(10):
                    trace_id, _body = server.get(path)
                    assert trace_id
                    trace_ids.append(trace_id)
                worker_of = _worker_by_trace(server.output.read_text(errors="replace"))
                answered = Counter(worker_of[t] for t in trace_ids if t in worker_of)
                if len(answered) == 2 and min(answered.values()) >= 3:
                    break
            output = server.stop(signal.SIGTERM)  # the master only: a graceful stop of both workers

        worker_of = _worker_by_trace(output)
        trace_ids_by_pid: dict[int, list[str]] = {}
        for trace_id in trace_ids:
            trace_ids_by_pid.setdefault(worker_of[trace_id], []).append(trace_id)
        assert len(trace_ids_by_pid) == 2, f"one worker answered everything: {trace_ids_by_pid.keys()}"
        assert_one_record_and_enriched_span_per_request(sink, trace_ids)

        # What tells workers apart under opentelemetry-instrument: the SDK re-detects
        # service.instance.id after fork, so each worker has its own (the resource has no pid).
        records_by_trace = {record.trace_id: record for record in request_logs(sink)}
        instance_by_pid = {
            pid: {records_by_trace[trace_id].resource["service.instance.id"] for trace_id in ids}
            for pid, ids in trace_ids_by_pid.items()
        }
        assert all(len(instances) == 1 for instances in instance_by_pid.values()), instance_by_pid
        worker_instances = {next(iter(instances)) for instances in instance_by_pid.values()}
        assert len(worker_instances) == 2

        points = sink.wait_for(
            sink.metric_points,
            lambda got: (
                worker_instances
                <= {p.resource["service.instance.id"] for p in got if p.name == PROCESS_GAUGE}
            ),
        )
        gauge_instances = {p.resource["service.instance.id"] for p in points if p.name == PROCESS_GAUGE}
        assert worker_instances <= gauge_instances, "process gauges missing from a worker"
