"""The JSON 500 for unhandled exceptions, which yields to every error handler of the app.

Flask looks an error handler up in this order (``flask.sansio.app.App._find_error_handler``, Flask
3.1): handlers for the error's code before handlers for a class, and in each of the two the current
blueprints' (innermost first) before the app's, each map searched along the error's MRO. A handler
for code 500 therefore beats the app's ``HTTPException`` or ``Exception`` handler, whenever either
was registered. So the monitor's 500 handler decides when it is called, not when it is registered:
if the app would have answered without it, it calls the app's handler, exactly as Flask would have.
The trace id reaches the client in the response header either way (the ``after_request`` hook).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask, current_app, jsonify, request
from werkzeug.exceptions import HTTPException, InternalServerError

from otel_flask_monitor.spans import current_trace_id

ErrorHandler = Callable[[Any], Any]


def register_json_500(app: Flask) -> None:
    """Answer an unhandled exception with ``{"error": ..., "trace_id": ...}`` unless the app (or a
    blueprint of the request) has a handler that would answer it."""
    if app.error_handler_spec.get(None, {}).get(500):
        return  # the app's 500 handler already owns the slot; registering ours would replace it

    def json_internal_server_error(error: InternalServerError) -> Any:
        # The handler must not hold the app: it is stored in the app (see app_lifetime.py).
        handler = app_error_handler(current_app, error, request.blueprints, ignore=json_internal_server_error)
        if handler is not None:
            return current_app.ensure_sync(handler)(error)
        original = error.original_exception
        if original is None or isinstance(original, HTTPException):
            return error  # abort(500) and friends keep their own body
        body: dict[str, str] = {"error": "Internal Server Error"}
        trace_id = current_trace_id()
        if trace_id:
            body["trace_id"] = trace_id
        return jsonify(body), 500

    app.register_error_handler(500, json_internal_server_error)


def app_error_handler(
    app: Flask, error: HTTPException, blueprints: list[str], *, ignore: ErrorHandler
) -> ErrorHandler | None:
    """The handler Flask would pick for ``error`` if ``ignore`` were not registered (same order as
    ``_find_error_handler``), read without changing the app's handler maps."""
    spec = app.error_handler_spec
    code = type(error).code  # Flask files a handler under its class's code
    for slot in (code, None) if code is not None else (None,):
        for name in (*blueprints, None):
            handlers = spec.get(name, {}).get(slot)
            if not handlers:
                continue
            for cls in type(error).__mro__:
                handler = handlers.get(cls)
                if handler is not None and handler is not ignore:
                    return handler
    return None
