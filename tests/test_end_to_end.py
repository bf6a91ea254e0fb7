"""End to end: the demo app under gunicorn -> OTLP -> a real Collector process (rotel) -> Loki's OTLP
endpoint, played by tests/support/loki_receiver.py, which stores entries the way Loki maps OTLP.

Asserts what a user finds in Grafana: one line per request, exactly once, with the documented
labels, structured metadata, severities and trace ids, and every name docs/queries.md filters on.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest
import requests

from tests.support.logql_queries import QUERIES_DOC, label_names, logql_blocks
from tests.support.loki_receiver import LokiEntry, LokiReceiver
from tests.support.real_processes import FAST_EXPORT, Gunicorn, Rotel, base_env

pytestmark = pytest.mark.slow

SERVICE_NAME: Final = "shop"
ARRIVAL_TIMEOUT_SECONDS: Final = 60.0  # a deadline for what certainly arrives
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


@dataclass
class Pipeline:
    loki: LokiReceiver
    collector: Rotel
    app: Gunicorn

    def diagnostics(self) -> str:
        return f"--- gunicorn ---\n{self.app.diagnostics()}\n--- rotel ---\n{self.collector.output()}"


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[Pipeline]:
    with LokiReceiver() as loki, Rotel(loki.otlp_endpoint, tmp_path) as collector:
        # rotel appends /v1/logs, /v1/traces, /v1/metrics, like the Collector's otlphttp.
        collector.start()
        env = base_env(
            collector.endpoint,
            OTEL_SERVICE_NAME=SERVICE_NAME,
            **FAST_EXPORT,
            PYTHONUNBUFFERED="1",
        )
        with Gunicorn(env, tmp_path, workers=2) as app:
            yield Pipeline(loki, collector, app)


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
    base = pipeline.app.base_url
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

    # Stop the app (SIGTERM: gunicorn's graceful stop, each worker flushes at exit), then the
    # Collector (SIGTERM: it forwards what it holds, then exits): everything sent is in Loki now,
    # and nothing may have arrived twice.
    assert pipeline.app.stop() == 0, pipeline.diagnostics()
    assert pipeline.collector.stop() == 0, pipeline.diagnostics()
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
