"""A monitored app whose routes stream, for tests against real servers (a helper, not a test file).

gunicorn loads it as ``tests.support.streaming_app:create_app()``; the in-process tests call
:func:`create_app` themselves. Every route sleeps ``STEP_SECONDS`` before each chunk, so the time a
body takes has a lower bound the tests can rely on: ``chunks x STEP_SECONDS``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Final, TypeVar

from flask import Flask, Response, request, send_file, stream_with_context

from otel_flask_monitor import FlaskMonitor

T = TypeVar("T")

STEP_SECONDS: Final = 0.1
CHUNKS: Final = 3
CHUNK: Final = b"x" * 1000 + b"\n"
BEFORE_FAILING: Final = 2
"""Chunks ``/explode`` sends before it raises."""
ENDLESS_CHUNKS: Final = 100
"""``/endless`` stops by itself after this many chunks (``ENDLESS_CHUNKS x ENDLESS_STEP_SECONDS``)."""
ENDLESS_STEP_SECONDS: Final = 0.05
FILE_ENV: Final = "STREAMING_APP_FILE"


class StreamBrokeError(RuntimeError):
    pass


def paced(items: Iterable[T], step: float = STEP_SECONDS) -> Iterator[T]:
    """``items``, each after ``step`` seconds."""
    for item in items:
        time.sleep(step)
        yield item


def create_app(file_path: str | None = None, **options: Any) -> Flask:
    app = Flask("streaming")
    served_file = Path(file_path or os.environ[FILE_ENV])

    @app.get("/plain")
    def plain() -> Response:
        return Response(paced([CHUNK] * CHUNKS), mimetype="application/octet-stream")

    @app.get("/context")
    def context() -> Response:
        # Each line reads the request while the server iterates: stream_with_context keeps it.
        lines = (f"{request.args.get('tag', '')} line {number}\n" for number in range(CHUNKS))
        return Response(stream_with_context(paced(lines)), mimetype="text/plain")

    @app.get("/events")
    def events() -> Response:
        ticks = (f"event: tick\ndata: {number}\n\n" for number in range(CHUNKS))
        return Response(paced(ticks), mimetype="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.get("/file")
    def file() -> Response:
        return send_file(served_file, mimetype="application/octet-stream")

    @app.get("/explode")
    def explode() -> Response:
        def chunks() -> Iterator[bytes]:
            yield from paced([CHUNK] * BEFORE_FAILING)
            raise StreamBrokeError("the feed went away")

        return Response(chunks(), mimetype="application/octet-stream")

    @app.get("/endless")
    def endless() -> Response:
        chunks = paced([CHUNK] * ENDLESS_CHUNKS, ENDLESS_STEP_SECONDS)
        return Response(chunks, mimetype="application/octet-stream")

    @app.get("/fixed")
    def fixed() -> dict[str, str]:
        return {"body": "fixed"}

    FlaskMonitor(app, **options)
    return app
