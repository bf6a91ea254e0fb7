"""Streamed responses through real servers: recorded once, when the body ends, as the client got it.

Both servers are started here on 127.0.0.1 and stopped afterwards: Werkzeug's threaded server in this
process (its records land in the test-wide in-memory exporters) and gunicorn with gthread workers
(its records are exported over OTLP/HTTP to a sink). Every route sleeps before each chunk, so the
duration of a body has a lower bound derived from the route itself; the client's own measurement is
an upper bound that holds under any load (the server's interval lies inside the client's).
"""

from __future__ import annotations

import http.client
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import pytest
import requests
from opentelemetry import trace
from werkzeug.serving import make_server

from tests.conftest import LOG_EXPORTER, SPAN_EXPORTER
from tests.support import streaming_app
from tests.support.otlp_sink import SPAN_KIND_SERVER, OtlpSink, ReceivedLog
from tests.support.real_processes import FAST_EXPORT, Gunicorn, base_env

WAIT_SECONDS: Final = 15.0
LOWER_BOUND: Final = 0.9
"""Fraction of a route's own sleeps its recorded duration must reach (sleep may end a bit early)."""
FILE_SIZE: Final = 256 * 1024 + 17
CONCURRENT_STREAMS: Final = 4  # gunicorn runs 4 threads
LOGS_AND_SPANS_FAST: Final = {**FAST_EXPORT, "OTEL_METRICS_EXPORTER": "none"}

pytestmark = pytest.mark.slow


class LiveServer(Protocol):
    base_url: str

    def records(self) -> list[ReceivedLog]:
        """The per-request log records exported so far."""
        ...

    def server_spans(self) -> set[tuple[str, str]]:
        """(trace_id, span_id) of every server span exported so far."""
        ...


class InProcessWerkzeug:
    def __init__(self, app: Any) -> None:
        self._server = make_server("127.0.0.1", 0, app, threaded=True)
        self.base_url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="werkzeug-test-server")

    def __enter__(self) -> InProcessWerkzeug:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def records(self) -> list[ReceivedLog]:
        return [
            ReceivedLog(
                resource=dict(item.resource.attributes),
                scope=item.instrumentation_scope.name if item.instrumentation_scope else "",
                event_name=str(item.log_record.event_name),
                severity_text=str(item.log_record.severity_text),
                body=item.log_record.body,
                attributes=dict(item.log_record.attributes or {}),
                trace_id=format(item.log_record.trace_id or 0, "032x"),
                span_id=format(item.log_record.span_id or 0, "016x"),
            )
            for item in LOG_EXPORTER.get_finished_logs()
            if item.log_record.event_name == "http.server.request"
        ]

    def server_spans(self) -> set[tuple[str, str]]:
        return {
            (format(span.context.trace_id, "032x"), format(span.context.span_id, "016x"))
            for span in SPAN_EXPORTER.get_finished_spans()
            if span.kind == trace.SpanKind.SERVER and span.context is not None
        }


class GunicornOverOtlp:
    def __init__(self, server: Gunicorn, sink: OtlpSink) -> None:
        self.base_url = server.base_url
        self.server = server
        self._sink = sink

    def records(self) -> list[ReceivedLog]:
        return [log for log in self._sink.logs() if log.event_name == "http.server.request"]

    def server_spans(self) -> set[tuple[str, str]]:
        return {(span.trace_id, span.span_id) for span in self._sink.spans() if span.kind == SPAN_KIND_SERVER}


@pytest.fixture(scope="module")
def served_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("served") / "download.bin"
    path.write_bytes(bytes(range(256)) * (FILE_SIZE // 256) + b"z" * (FILE_SIZE % 256))
    return path


@pytest.fixture(scope="module", params=["werkzeug-threaded", "gunicorn-gthread"])
def server(
    request: pytest.FixtureRequest, served_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    if request.param == "werkzeug-threaded":
        with InProcessWerkzeug(streaming_app.create_app(str(served_file))) as werkzeug:
            yield werkzeug
        return
    with OtlpSink() as sink:
        env = base_env(sink.endpoint, **LOGS_AND_SPANS_FAST, **{streaming_app.FILE_ENV: str(served_file)})
        logs = tmp_path_factory.mktemp("gunicorn")
        with Gunicorn(env, logs, threads=4, app="tests.support.streaming_app:create_app()") as gunicorn:
            yield GunicornOverOtlp(gunicorn, sink)


@dataclass(frozen=True)
class Fetched:
    status: int
    body: bytes
    broken: bool
    """The connection ended before the body did (the server gave up on it)."""


def fetch(base_url: str, path: str) -> Fetched:
    host, port = base_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=WAIT_SECONDS)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        try:
            body, broken = response.read(), False
        except (http.client.IncompleteRead, ConnectionError) as error:
            body, broken = getattr(error, "partial", b""), True
        return Fetched(response.status, body, broken)
    finally:
        connection.close()


def tagged(path: str) -> tuple[str, str]:
    tag = uuid.uuid4().hex[:12]
    return f"{path}?tag={tag}", tag


def records_of(server: LiveServer, tag: str) -> list[ReceivedLog]:
    return [r for r in server.records() if f"tag={tag}" in str(r.attributes.get("url.query", ""))]


def only_record(server: LiveServer, tag: str) -> ReceivedLog:
    """The single record of the request tagged ``tag``."""
    (record,) = only_records(server, [tag])
    return record


def only_records(server: LiveServer, tags: list[str]) -> list[ReceivedLog]:
    """The single record of each tagged request, once a later request's record has arrived too
    (exporters deliver in order, so a duplicate of an earlier one would be there by then)."""
    wait_until(lambda: all(records_of(server, tag) for tag in tags), f"the records of {tags}")
    fence_path, fence = tagged("/fixed")
    assert fetch(server.base_url, fence_path).status == 200
    wait_until(lambda: records_of(server, fence), "the fence request's record")
    found = {tag: records_of(server, tag) for tag in tags}
    assert all(len(records) == 1 for records in found.values()), found
    return [records[0] for records in found.values()]


def wait_until(condition: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {WAIT_SECONDS}s")
        time.sleep(0.05)


def assert_carries_its_server_span(server: LiveServer, record: ReceivedLog) -> None:
    """Emitted when the body ended, after the span did and outside the request: still its ids."""
    wait_until(lambda: (record.trace_id, record.span_id) in server.server_spans(), "matching server span")


@pytest.mark.parametrize(
    ("path", "chunk_sizes"),
    [
        ("/plain", [len(streaming_app.CHUNK)] * streaming_app.CHUNKS),
        ("/context", None),  # stream_with_context: the lines carry the tag
        ("/events", None),  # server-sent events
    ],
)
def test_streamed_body_is_recorded_once_at_its_last_byte(
    server: LiveServer, path: str, chunk_sizes: list[int] | None
) -> None:
    target, tag = tagged(path)
    fetched = fetch(server.base_url, target)

    assert fetched.status == 200
    assert not fetched.broken
    if chunk_sizes is not None:
        assert len(fetched.body) == sum(chunk_sizes)
    record = only_record(server, tag)
    attributes = record.attributes
    assert attributes["http.response.status_code"] == 200
    assert attributes["http.response.body.size"] == len(fetched.body)
    assert attributes["response_streamed"] is True
    assert "response_cut_short" not in attributes
    sleeps_ms = streaming_app.CHUNKS * streaming_app.STEP_SECONDS * 1000
    # No upper bound from the client's clock: the server closes the body (and ends the record) after
    # it sent the last byte, which the client may have read before that close runs.
    assert attributes["duration_ms"] >= LOWER_BOUND * sleeps_ms
    assert record.severity_text == "INFO"
    assert_carries_its_server_span(server, record)


def test_concurrent_streams_are_each_recorded_once(server: LiveServer) -> None:
    targets = [tagged("/plain") for _ in range(CONCURRENT_STREAMS)]
    with ThreadPoolExecutor(CONCURRENT_STREAMS) as pool:
        fetched = list(pool.map(lambda target: fetch(server.base_url, target[0]), targets))

    assert [f.status for f in fetched] == [200] * CONCURRENT_STREAMS
    records = only_records(server, [tag for _, tag in targets])
    full = streaming_app.CHUNKS * len(streaming_app.CHUNK)
    assert [r.attributes["http.response.body.size"] for r in records] == [full] * CONCURRENT_STREAMS
    assert len({(r.trace_id, r.span_id) for r in records}) == CONCURRENT_STREAMS


def test_the_aggregates_cover_the_whole_body(server: LiveServer) -> None:
    target, tag = tagged("/plain")
    assert fetch(server.base_url, target).status == 200
    only_record(server, tag)

    stats = requests.get(server.base_url + "/monitoring/stats", timeout=WAIT_SECONDS).json()
    (row,) = [r for r in stats["routes"] if r["route"] == "/plain"]
    sleeps_ms = streaming_app.CHUNKS * streaming_app.STEP_SECONDS * 1000
    assert row["latency_ms"]["p50"] >= LOWER_BOUND * sleeps_ms  # every /plain request takes that long
    assert row["response_bytes"] == row["requests"] * streaming_app.CHUNKS * len(streaming_app.CHUNK)


def test_send_file_is_recorded_with_the_bytes_sent(server: LiveServer, served_file: Path) -> None:
    target, tag = tagged("/file")
    fetched = fetch(server.base_url, target)

    assert fetched.status == 200
    assert fetched.body == served_file.read_bytes()
    attributes = only_record(server, tag).attributes
    assert attributes["http.response.body.size"] == FILE_SIZE
    assert attributes["response_streamed"] is True
    assert "response_cut_short" not in attributes
    assert attributes["duration_ms"] > 0


def test_client_that_goes_away_mid_stream_is_recorded_once_as_cut_short(server: LiveServer) -> None:
    target, tag = tagged("/endless")
    host, port = server.base_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=WAIT_SECONDS)
    connection.request("GET", target)
    response = connection.getresponse()
    first = response.read(len(streaming_app.CHUNK))
    # Closing with unread data makes the kernel reset the connection: the server's next write fails.
    response.close()
    connection.close()

    assert response.status == 200
    assert first == streaming_app.CHUNK
    record = only_record(server, tag)
    attributes = record.attributes
    assert attributes["response_cut_short"] == "closed_early"
    assert attributes["http.response.status_code"] == 200
    full = streaming_app.ENDLESS_CHUNKS * len(streaming_app.CHUNK)
    assert len(first) <= attributes["http.response.body.size"] < full
    assert attributes["duration_ms"] >= LOWER_BOUND * streaming_app.ENDLESS_STEP_SECONDS * 1000
    assert "exception.type" not in attributes
    assert record.severity_text == "INFO"  # the client left; the server did nothing wrong


def test_exception_mid_stream_is_recorded_once_as_an_error_with_a_truncated_200(server: LiveServer) -> None:
    target, tag = tagged("/explode")
    fetched = fetch(server.base_url, target)

    assert fetched.status == 200  # the status line had gone out before the generator raised
    record = only_record(server, tag)
    attributes = record.attributes
    assert attributes["http.response.status_code"] == 200
    assert attributes["response_cut_short"] == "exception"
    assert attributes["exception.type"] == "tests.support.streaming_app.StreamBrokeError"
    assert attributes["exception.message"] == "the feed went away"
    assert "StreamBrokeError: the feed went away" in attributes["exception.stacktrace"]
    assert attributes["error.type"] == "tests.support.streaming_app.StreamBrokeError"
    assert record.severity_text == "ERROR"
    sent = streaming_app.BEFORE_FAILING * len(streaming_app.CHUNK)
    assert attributes["http.response.body.size"] == sent
    assert fetched.body[:sent] == streaming_app.CHUNK * streaming_app.BEFORE_FAILING
    sleeps_ms = streaming_app.BEFORE_FAILING * streaming_app.STEP_SECONDS * 1000
    # No upper bound from the client's clock: the server closes the body (and ends the record) after
    # it sent the last byte, which the client may have read before that close runs.
    assert attributes["duration_ms"] >= LOWER_BOUND * sleeps_ms
    assert_carries_its_server_span(server, record)
