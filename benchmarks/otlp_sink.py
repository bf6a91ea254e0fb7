"""The cheapest OTLP/HTTP receiver: answers 200 with an empty response to every POST and counts bytes.

The benchmarks point exporters at it so export costs what it costs against a real endpoint (encoding,
HTTP round trip) without a Collector's own CPU competing with the process under measurement.
An empty body is a valid Export*ServiceResponse (no partial success), so exporters count a success.
It also takes Loki's push API (``POST /loki/api/v1/push``, JSON), the article variant's target: it
answers 204 like Loki, or 400 to a body that is not a push request, and counts the lines pushed.
Connections are kept alive (HTTP/1.1), as a Collector or Loki keeps them.

    python benchmarks/otlp_sink.py --port 4318    # standalone, until Ctrl+C
"""

from __future__ import annotations

import argparse
import contextlib
import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

LOKI_PUSH_PATH = "/loki/api/v1/push"


def loki_push_lines(body: bytes) -> int:
    """Lines in a Loki JSON push request; ValueError if the body is not one."""
    streams = json.loads(body)["streams"]
    lines = 0
    for stream in streams:
        labels, values = stream["stream"], stream["values"]
        if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
            raise ValueError("stream labels must be a map of strings")
        for value in values:  # [ns, line] or [ns, line, {structured metadata}]
            timestamp_ns, line = value[0], value[1]
            if not (
                len(value) in (2, 3)
                and isinstance(timestamp_ns, str)
                and timestamp_ns.isdigit()
                and isinstance(line, str)
            ):
                raise ValueError('values must be ["<unix ns>", "<line>"(, {metadata})]')
            lines += 1
    return lines


class _Handler(BaseHTTPRequestHandler):
    server: _SinkServer
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        status = 200
        if self.path == LOKI_PUSH_PATH:
            try:
                self.server.note_lines(loki_push_lines(body))
                status = 204
            except (ValueError, KeyError, TypeError, IndexError):
                status = 400
        self.server.note(self.path, length)
        self.send_response(status)
        if status == 200:
            self.send_header("Content-Type", "application/x-protobuf")
        if status != 204:
            self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per export would drown the benchmark's table


class _SinkServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, _Handler)
        self.lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.bytes: Counter[str] = Counter()
        self.loki_lines = 0

    def note(self, path: str, length: int) -> None:
        with self.lock:
            self.requests[path] += 1
            self.bytes[path] += length

    def note_lines(self, lines: int) -> None:
        with self.lock:
            self.loki_lines += lines


class OtlpSink:
    """``with OtlpSink() as sink:`` serves on 127.0.0.1 (a free port unless given) in a thread."""

    def __init__(self, port: int = 0) -> None:
        self._server = _SinkServer(("127.0.0.1", port))
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-sink", daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def counts(self) -> dict[str, tuple[int, int]]:
        """path -> (requests, bytes) received so far."""
        with self._server.lock:
            return {
                path: (self._server.requests[path], self._server.bytes[path])
                for path in self._server.requests
            }

    def loki_lines(self) -> int:
        """Log lines received in valid Loki push requests so far."""
        with self._server.lock:
            return self._server.loki_lines

    def summary(self) -> str:
        """One line: posts and KiB per path, and the Loki lines if any."""
        posts = (
            f"{path} {count} posts / {size // 1024} KiB"
            for path, (count, size) in sorted(self.counts().items())
        )
        lines = self.loki_lines()
        return ", ".join(posts) + (f"; {lines} Loki lines" if lines else "")

    def __enter__(self) -> OtlpSink:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=4318)
    port = parser.parse_args().port
    with OtlpSink(port) as sink:
        print(f"OTLP/HTTP sink on {sink.endpoint} (Ctrl+C to stop)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    print(sink.counts())


if __name__ == "__main__":
    main()
