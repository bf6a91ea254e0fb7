"""A Flask app with no monitoring code, for runs under ``opentelemetry-instrument``.

``ZERO_CODE_APP_VARIANT`` picks how the app is made, the ways real apps do it:

- ``from_import`` (default): ``from flask import Flask``, the Flask docs' way;
- ``flask_module``: ``flask.Flask(...)``;
- ``original_class``: Flask's own class, which is what a name bound before the Flask
  instrumentation replaced ``flask.Flask`` holds (the instrumentation misses such apps);
- ``self_monitored``: ``from flask import Flask`` and the app calls ``FlaskMonitor(app)`` itself.

Run ``python zero_code_app.py PORT`` (Flask's own server on 127.0.0.1) or ``gunicorn zero_code_app:app``.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import flask
import flask.app
from flask import Flask

VARIANT = os.environ.get("ZERO_CODE_APP_VARIANT", "from_import")

# Apps configure logging their own way; the test checks these lines still reach stderr unchanged.
logging.basicConfig(level=logging.INFO, format="app-log %(name)s %(levelname)s %(message)s")
app_logger = logging.getLogger("zero_code_app")


def _make_app() -> flask.Flask:
    if VARIANT == "flask_module":
        return flask.Flask("zero_code_app")
    if VARIANT == "original_class":
        return flask.app.Flask("zero_code_app")
    if VARIANT in {"from_import", "self_monitored"}:
        return Flask("zero_code_app")
    raise SystemExit(f"unknown ZERO_CODE_APP_VARIANT {VARIANT!r}")


app = _make_app()

if VARIANT == "self_monitored":
    from otel_flask_monitor import FlaskMonitor

    FlaskMonitor(app)


@app.get("/items/<int:item_id>")
def item(item_id: int) -> Any:
    return {"id": item_id, "pid": os.getpid()}


@app.get("/log")
def log_line() -> Any:
    app_logger.warning("hello from the app")
    return {"logged": True, "pid": os.getpid()}


@app.get("/introspect")
def introspect() -> Any:
    """What the test cannot see from outside: which providers exist and how often hooks attached."""
    from opentelemetry import trace

    from otel_flask_monitor.process import PROCESS

    lifecycle_hooks = [
        hook
        for hook in app.before_request_funcs.get(None, [])
        if type(getattr(hook, "__self__", None)).__name__ == "RequestLifecycle"
    ]
    return {
        "pid": os.getpid(),
        "app_class": type(app).__qualname__,
        "monitored": "otel_flask_monitor" in app.extensions,
        "monitor_hooks": len(lifecycle_hooks),
        "owned_providers": len(PROCESS.telemetry.owned),
        "tracer_provider": type(trace.get_tracer_provider()).__module__,
    }


if __name__ == "__main__":
    app.run(
        host="127.0.0.1",
        port=int(sys.argv[1]),
        threaded=True,
        debug=os.environ.get("ZERO_CODE_APP_DEBUG") == "1",
    )
