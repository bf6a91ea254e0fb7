"""An OTLP/HTTP endpoint the fault matrix controls (a helper module, not a test file).

:class:`FaultyCollector` answers 200 (and keeps the records the way Loki would), 500, 429 with
``Retry-After``, 400, or sleeps past the exporter timeout, as the test sets ``collector.mode``. It
listens on 127.0.0.1 only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)

from tests.support.loki_receiver import OTLP_ROUTES, LokiEntry, entries_from_request

MODES: Final = ("ok", "500", "429", "400", "slow")


@dataclass
class _CollectorState:
    condition: threading.Condition = field(default_factory=threading.Condition)
    mode: str = "ok"
    slow_seconds: float = 2.5
    retry_after: str = "1"
    entries: list[LokiEntry] = field(default_factory=list)
    spans: int = 0
    metric_requests: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    closing: threading.Event = field(default_factory=threading.Event)


class _FaultyHandler(BaseHTTPRequestHandler):
    server: _FaultyServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _reply(self, status: int, body: bytes = b"", headers: Iterable[tuple[str, str]] = ()) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        state = self.server.state
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        route = OTLP_ROUTES.get(self.path.split("?", 1)[0])
        if route is None:
            self._reply(404)
            return
        with state.condition:
            mode = state.mode
            if mode != "ok":
                state.refused[mode] = state.refused.get(mode, 0) + 1
        try:
            if mode == "slow":
                # Past the exporter's timeout: the exporter has given up before this answers.
                state.closing.wait(state.slow_seconds)
                self._reply(503)
            elif mode == "429":
                self._reply(429, headers=[("Retry-After", state.retry_after)])
            elif mode in ("500", "400"):
                self._reply(int(mode))
            else:
                self._accept(route, raw)
        except OSError:
            pass  # the exporter hung up (it timed out): nothing to answer

    def _accept(self, route: tuple[type[Any], type[Any]], raw: bytes) -> None:
        request_type, response_type = route
        message = request_type()
        message.ParseFromString(raw)
        state = self.server.state
        with state.condition:
            if isinstance(message, ExportLogsServiceRequest):
                state.entries.extend(entries_from_request(message))
            elif isinstance(message, ExportTraceServiceRequest):
                state.spans += sum(
                    len(scope.spans) for resource in message.resource_spans for scope in resource.scope_spans
                )
            else:
                state.metric_requests += 1
            state.condition.notify_all()
        self._reply(200, response_type().SerializeToString())


class _FaultyServer(ThreadingHTTPServer):
    daemon_threads = True
    state: _CollectorState


class FaultyCollector:
    """An OTLP/HTTP endpoint on 127.0.0.1 whose answer the test sets: ``collector.mode = "429"``."""

    def __init__(self) -> None:
        self._server = _FaultyServer(("127.0.0.1", 0), _FaultyHandler)
        self._server.state = _CollectorState()
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def mode(self) -> str:
        return self._server.state.mode

    @mode.setter
    def mode(self, value: str) -> None:
        assert value in MODES
        with self._server.state.condition:
            self._server.state.mode = value

    def entries(self) -> list[LokiEntry]:
        with self._server.state.condition:
            return list(self._server.state.entries)

    def spans(self) -> int:
        with self._server.state.condition:
            return self._server.state.spans

    def refused(self) -> dict[str, int]:
        with self._server.state.condition:
            return dict(self._server.state.refused)

    def wait_for(
        self, predicate: Callable[[list[LokiEntry]], bool], timeout: float, what: str
    ) -> list[LokiEntry]:
        state = self._server.state
        with state.condition:
            ok = state.condition.wait_for(lambda: predicate(state.entries), timeout)
            entries = list(state.entries)
        if not ok:
            raise AssertionError(f"{what} not met within {timeout}s ({len(entries)} entries received)")
        return entries

    def close(self) -> None:
        self._server.state.closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FaultyCollector:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
