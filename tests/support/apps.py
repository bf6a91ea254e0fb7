"""Small Flask apps the core tests monitor."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from flask import Flask, Response, abort, jsonify, request, stream_with_context

from otel_flask_monitor import FlaskMonitor


class ShopError(RuntimeError):
    pass


def build_app(name: str = "core-tests", *, monitor: bool = True, **options: Any) -> Flask:
    app = Flask(name)

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> Any:
        if item_id == 404:
            abort(404)
        return {"id": item_id}

    @app.post("/items")
    def create_item() -> Any:
        payload = request.get_json()  # malformed JSON -> werkzeug's own 400
        return jsonify(created=payload), 201

    @app.get("/boom")
    def boom() -> Any:
        raise ShopError("the till is on fire")

    @app.get("/abort-500")
    def abort_500() -> Any:
        abort(500, description="planned outage")

    @app.get("/teapot")
    def teapot() -> Any:
        abort(418)

    @app.get("/stream")
    def stream() -> Response:
        def chunks() -> Iterator[str]:
            for number in range(3):
                yield f"chunk {number}\n"

        return Response(stream_with_context(chunks()), mimetype="text/plain")

    @app.get("/health-check")
    def health_check() -> Any:
        return "ok"

    if monitor:
        FlaskMonitor(app, **options)
    return app
