"""pytest plugin injected into an upstream test suite (``-p otel_flask_monitor_compat``): attaches the
monitor to every Flask app the suite builds, without changing a line of the suite.

Configured by environment variables (set by tests/compat/upstream.py):

- ``OFM_COMPAT_ATTACH``: ``none``; ``after-flask-init`` (right after ``Flask.__init__``, so before any
  instrumentation, of the class and of every subclass); ``after-instrumentation`` (right after
  ``FlaskInstrumentor.instrument_app`` or the instrumented ``Flask`` subclass's ``__init__``).
- ``OFM_COMPAT_OPTIONS``: the ``FlaskMonitor`` keyword options, as a JSON object.
- ``OFM_COMPAT_PROVIDERS``: ``1`` installs SDK tracer, logger and meter providers without exporters,
  so spans record and the monitor's span and log paths run (as in an app with OTel configured).
- ``OFM_COMPAT_INTENDED_OFF``: ``1`` switches the monitor's intended span differences off
  (tests/compat/differences.py): what it would add to a span (attributes the span does not have
  yet, events) and its span renames are dropped, while everything else it does, overwriting an
  attribute included, still happens. A test that fails only because of the intended differences
  passes in such a run; one that fails for another reason too still fails.
- ``OFM_COMPAT_REPORT``: a file that receives ``{"attached": <apps monitored>}`` at the end.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Mapping
from typing import Any

import flask.app

_counts = {"attached": 0}  # a count, never the apps: an app must stay free to go


def _attach(app: flask.app.Flask, options: dict[str, Any]) -> None:
    from otel_flask_monitor import FlaskMonitor
    from otel_flask_monitor.extension import EXTENSION_KEY

    if EXTENSION_KEY in app.extensions:
        return
    FlaskMonitor(app, **options)
    _counts["attached"] += 1


def _after(original: Any, attach: Any) -> Any:
    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        attach(args[0])
        return result

    return wrapper


def _install_providers() -> None:
    from opentelemetry import metrics, trace
    from opentelemetry._logs import set_logger_provider
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider

    trace.set_tracer_provider(TracerProvider())
    set_logger_provider(LoggerProvider())
    metrics.set_meter_provider(MeterProvider())


def _called_by_monitor() -> bool:
    """Is the caller of the patched span method (two frames up) the monitor's code?"""
    return str(sys._getframe(2).f_globals.get("__name__", "")).startswith("otel_flask_monitor")


def _switch_intended_differences_off() -> None:
    from opentelemetry.sdk.trace import Span

    set_attribute, set_attributes = Span.set_attribute, Span.set_attributes
    add_event, update_name = Span.add_event, Span.update_name

    def set_attribute_unless_added(self: Span, key: str, value: Any) -> None:
        if not _called_by_monitor() or key in (self.attributes or {}):
            set_attribute(self, key, value)

    def set_attributes_unless_added(self: Span, attributes: Mapping[str, Any]) -> None:
        if _called_by_monitor():
            present = self.attributes or {}
            attributes = {key: value for key, value in attributes.items() if key in present}
        set_attributes(self, attributes)

    def add_event_unless_monitor(self: Span, *args: Any, **kwargs: Any) -> None:
        if not _called_by_monitor():
            add_event(self, *args, **kwargs)

    def update_name_unless_monitor(self: Span, name: str) -> None:
        if not _called_by_monitor():
            update_name(self, name)

    Span.set_attribute = set_attribute_unless_added  # type: ignore[method-assign]
    Span.set_attributes = set_attributes_unless_added  # type: ignore[method-assign]
    Span.add_event = add_event_unless_monitor  # type: ignore[method-assign]
    Span.update_name = update_name_unless_monitor  # type: ignore[method-assign]


def pytest_configure(config: Any) -> None:
    mode = os.environ.get("OFM_COMPAT_ATTACH", "none")
    options = json.loads(os.environ.get("OFM_COMPAT_OPTIONS", "{}"))
    if os.environ.get("OFM_COMPAT_PROVIDERS") == "1":
        _install_providers()
    if os.environ.get("OFM_COMPAT_INTENDED_OFF") == "1":
        _switch_intended_differences_off()

    def attach(app: flask.app.Flask) -> None:
        _attach(app, options)

    if mode == "after-flask-init":
        flask.app.Flask.__init__ = _after(flask.app.Flask.__init__, attach)  # type: ignore[method-assign]
    elif mode == "after-instrumentation":
        from opentelemetry.instrumentation import flask as instrumentation

        instrument_app = instrumentation.FlaskInstrumentor.instrument_app
        instrumentation.FlaskInstrumentor.instrument_app = staticmethod(_after(instrument_app, attach))
        instrumented = instrumentation._InstrumentedFlask
        instrumented.__init__ = _after(instrumented.__init__, attach)  # type: ignore[method-assign]
    elif mode != "none":
        raise ValueError(f"OFM_COMPAT_ATTACH: unknown mode {mode!r}")


def pytest_unconfigure(config: Any) -> None:
    report = os.environ.get("OFM_COMPAT_REPORT")
    if report:
        with open(report, "w", encoding="utf-8") as handle:
            json.dump(_counts, handle)
