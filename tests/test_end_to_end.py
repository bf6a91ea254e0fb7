"""End to end: the demo app under gunicorn -> OTLP -> a real Collector process (rotel) -> Loki's OTLP
endpoint, played by tests/loki_receiver.py, which stores entries the way Loki maps OTLP.

Asserts what a user finds in Grafana: one line per request, exactly once, with the documented
labels, structured metadata, severities and trace ids, and every name docs/queries.md filters on.
"""

from __future__ import annotations

import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest
import requests

from tests.logql_queries import QUERIES_DOC, label_names, logql_blocks
from tests.loki_receiver import LokiEntry, LokiReceiver

pytestmark = pytest.mark.slow

REPO: Final = Path(__file__).resolve().parent.parent
SERVICE_NAME: Final = "shop"
START_TIMEOUT_SECONDS: Final = 30.0
ARRIVAL_TIMEOUT_SECONDS: Final = 20.0
STOP_TIMEOUT_SECONDS: Final = 15.0
HEX32: Final = re.compile(r"^[0-9a-f]{32}$")
HEX16: Final = re.compile(r"^[0-9a-f]{16}$")
# Attributes every per-request record carries (docs/log-schema.md), by their Loki names.
ALWAYS: Final = (
    "http_request_method",
    "url_path",
    "url_scheme",
    "http_response_status_code",
    "duration_ms",
    "cpu_ms",
    "client_address",
    "server_address",
    "user_agent_original",
    "severity_text",
    "severity_number",
    "detected_level",
    "trace_id",
    "span_id",
    "scope_name",
)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _rotel_agent() -> Path:
    import rotel

    agent = pathlib.Path(rotel.__file__).parent / "rotel-agent"
    if not agent.is_file():
        pytest.fail(f"rotel-agent not found in the rotel package at {agent}", pytrace=False)
    return agent


def _wait_for_port(port: int, process: subprocess.Popen[bytes], name: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{name} exited with {process.returncode} before listening on {port}", pytrace=False)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"{name} did not listen on 127.0.0.1:{port} within {timeout}s", pytrace=False)


def _stop(process: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT_SECONDS) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def _output(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-4000:]
    except OSError:
        return ""


@dataclass
class Pipeline:
    loki: LokiReceiver
    app_url: str
    app: subprocess.Popen[bytes]
    collector: subprocess.Popen[bytes]
    app_log: Path
    collector_log: Path

    def diagnostics(self) -> str:
        return f"--- gunicorn ---\n{_output(self.app_log)}\n--- rotel ---\n{_output(self.collector_log)}"


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[Pipeline]:
    grpc_port, http_port, app_port = _free_port(), _free_port(), _free_port()
    collector_log, app_log = tmp_path / "rotel.out", tmp_path / "gunicorn.out"
    processes: list[subprocess.Popen[bytes]] = []
    with LokiReceiver() as loki:
        try:
            with collector_log.open("wb") as out:
                collector = subprocess.Popen(
                    [
                        str(_rotel_agent()),
                        "start",
                        "--otlp-grpc-endpoint",
                        f"127.0.0.1:{grpc_port}",
                        "--otlp-http-endpoint",
                        f"127.0.0.1:{http_port}",
                        "--exporter",
                        "otlp",
                        "--otlp-exporter-protocol",
                        "http",
                        # rotel appends /v1/logs, /v1/traces, /v1/metrics, like the Collector's otlphttp.
                        "--otlp-exporter-endpoint",
                        loki.otlp_endpoint,
                        "--batch-timeout",
                        "100ms",
                        "--pid-file",
                        str(tmp_path / "rotel.pid"),
                        "--log-file",
                        str(tmp_path / "rotel.log"),
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            processes.append(collector)
            _wait_for_port(http_port, collector, "rotel-agent", START_TIMEOUT_SECONDS)

            env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
            env.update(
                {
                    "OTEL_SERVICE_NAME": SERVICE_NAME,
                    "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{http_port}",
                    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                    "OTEL_BLRP_SCHEDULE_DELAY": "100",
                    "OTEL_BSP_SCHEDULE_DELAY": "100",
                    "OTEL_METRIC_EXPORT_INTERVAL": "1000",
                    "PYTHONUNBUFFERED": "1",
                }
            )
            with app_log.open("wb") as out:
                app = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "gunicorn",
                        "--bind",
                        f"127.0.0.1:{app_port}",
                        "--workers",
                        "2",
                        "--graceful-timeout",
                        "10",
                        "otel_flask_monitor.demo.app:create_app()",
                    ],
                    cwd=REPO,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            processes.append(app)
            _wait_for_port(app_port, app, "gunicorn", START_TIMEOUT_SECONDS)
            yield Pipeline(loki, f"http://127.0.0.1:{app_port}", app, collector, app_log, collector_log)
        finally:
            for process in reversed(processes):
                _stop(process)


@dataclass(frozen=True)
class Sent:
    method: str
    path: str
    status: int
    route: str | None
    severity: str
    trace_id: str


def _send(session: requests.Session, base: str, method: str, path: str, **kwargs: object) -> Sent:
    response = session.request(method, base + path, timeout=10, **kwargs)  # type: ignore[arg-type]
    trace_id = response.headers.get("X-Trace-Id", "")
    assert HEX32.match(trace_id), f"{method} {path}: no trace id header ({response.headers})"
    status = response.status_code
    severity = "ERROR" if status >= 500 else "WARN" if status >= 400 else "INFO"
    return Sent(method, path, status, None, severity, trace_id)


def test_requests_arrive_in_loki_once_with_the_documented_names(pipeline: Pipeline) -> None:
    base = pipeline.app_url
    plan: list[tuple[str, str, int, str | None, dict[str, object]]] = [
        ("GET", "/api/products", 200, "/api/products", {}),
        ("GET", "/api/products/1", 200, "/api/products/<int:product_id>", {}),
        ("GET", "/api/products?page=2&api_key=hunter2", 200, "/api/products", {}),
        ("GET", "/api/products/999", 404, "/api/products/<int:product_id>", {}),
        ("GET", "/no/such/page", 404, None, {}),
        ("POST", "/api/products/1/purchase", 400, "/api/products/<int:product_id>/purchase", {"data": "x"}),
        ("GET", "/simulate-error", 500, "/simulate-error", {}),
        ("GET", "/api/orders", 200, "/api/orders", {}),
    ]
    sent: list[Sent] = []
    with requests.Session() as session:
        for method, path, status, route, kwargs in plan:
            result = _send(session, base, method, path, **kwargs)
            assert result.status == status, f"{method} {path}: {result.status}, expected {status}"
            sent.append(Sent(method, path, status, route, result.severity, result.trace_id))
    wanted = {s.trace_id for s in sent}

    try:
        pipeline.loki.wait_for(
            lambda entries: wanted <= {e.trace_id for e in entries},
            ARRIVAL_TIMEOUT_SECONDS,
            "every request's log line in Loki",
        )
    except TimeoutError as error:
        pytest.fail(f"{error}\n{pipeline.diagnostics()}", pytrace=False)

    # Stop the app (SIGTERM: gunicorn's graceful stop, each worker flushes at exit), then let the
    # Collector forward whatever the exit flush sent: nothing may arrive twice.
    _stop(pipeline.app)
    assert pipeline.app.returncode == 0, pipeline.diagnostics()
    time.sleep(0.5)
    entries = pipeline.loki.entries()
    assert not pipeline.loki.errors()
    by_trace: dict[str, list[LokiEntry]] = {}
    for entry in entries:
        if entry.trace_id in wanted:
            by_trace.setdefault(entry.trace_id, []).append(entry)

    for request in sent:
        found = by_trace.get(request.trace_id, [])
        assert len(found) == 1, f"{request}: arrived {len(found)} times: {found}"
        _check_entry(found[0], request)

    # Only the index labels Loki derives from the resource; per-request detail stays out of them.
    for entry in entries:
        assert set(entry.labels) == {"service_name", "service_instance_id"}, entry.labels

    # The request with a secret query parameter: redacted before it left the process.
    query_entry = by_trace[sent[2].trace_id][0]
    assert query_entry.metadata["url_query"] == "page=2&api_key=[REDACTED]"
    assert not any("hunter2" in value for e in entries for value in (*e.metadata.values(), e.line))

    # Every name docs/queries.md filters, unwraps or groups on exists in what Loki stored.
    arrived = set().union(*(entry.names() for entry in entries))
    for query in logql_blocks(QUERIES_DOC):
        missing = label_names(query) - arrived
        assert not missing, f"docs/queries.md: {query}\n    uses {sorted(missing)}, not in Loki's data"

    # The Collector forwards the other signals too: the server spans of these very traces.
    span_traces = {
        span.trace_id.hex()
        for request in pipeline.loki.trace_requests()
        for resource_spans in request.resource_spans
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
    }
    assert wanted <= span_traces, "spans of the requests did not reach the trace backend"


def _check_entry(entry: LokiEntry, request: Sent) -> None:
    context = f"{request.method} {request.path} -> {request.status}: {entry}"
    assert entry.labels["service_name"] == SERVICE_NAME, context
    assert re.fullmatch(r"[0-9a-f-]{36}", entry.labels["service_instance_id"]), context
    for name in ALWAYS:
        assert name in entry.metadata, f"{name} missing: {context}"
    meta = entry.metadata
    path_only = request.path.split("?", 1)[0]
    target = request.route or path_only
    assert re.fullmatch(rf"{request.method} {re.escape(target)} {request.status} \d+\.\d ms", entry.line), (
        context
    )
    assert meta["http_request_method"] == request.method, context
    assert meta["url_path"] == path_only, context
    assert meta["url_scheme"] == "http", context
    assert meta["http_response_status_code"] == str(request.status), context
    assert float(meta["duration_ms"]) >= 0, context
    assert float(meta["cpu_ms"]) >= 0, context
    assert meta["client_address"] == "127.0.0.1", context
    assert meta["user_agent_original"].startswith("python-requests/"), context
    assert meta["severity_text"] == request.severity, context
    assert meta["detected_level"] == request.severity.lower(), context
    assert meta["trace_id"] == request.trace_id, context
    assert HEX16.match(meta["span_id"]), context
    assert meta["scope_name"] == "otel_flask_monitor", context
    if request.route is None:
        assert "http_route" not in meta, context
    else:
        assert meta["http_route"] == request.route, context
    if "?" not in request.path:
        assert "url_query" not in meta, context
    if request.status >= 500:
        assert meta["error_type"], context
        assert meta["exception_type"].endswith("SimulatedFailureError"), context
        assert "payment gateway" in meta["exception_message"], context
        assert "Traceback" in meta["exception_stacktrace"], context
    else:
        for name in ("error_type", "exception_type", "exception_message", "exception_stacktrace"):
            assert name not in meta, context
