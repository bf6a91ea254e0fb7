"""Production monitoring for Flask APIs on OpenTelemetry."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from otel_flask_monitor._version import __version__
from otel_flask_monitor.aggregates import AggregateStore
from otel_flask_monitor.objective_declarations import objective
from otel_flask_monitor.objectives import Availability, Latency
from otel_flask_monitor.record import ExceptionInfo, RequestRecord

if TYPE_CHECKING:
    from otel_flask_monitor.config import ConfigError, MonitorSettings
    from otel_flask_monitor.extension import FlaskMonitor
    from otel_flask_monitor.state import get_state

# Names whose modules import Flask load on first use, so that the Flask-free parts
# (``otel_flask_monitor.aggregates``, ``.objectives``, ``.record``) import without Flask.
_LAZY = {
    "ConfigError": "otel_flask_monitor.config",
    "MonitorSettings": "otel_flask_monitor.config",
    "FlaskMonitor": "otel_flask_monitor.extension",
    "get_state": "otel_flask_monitor.state",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "AggregateStore",
    "Availability",
    "ConfigError",
    "ExceptionInfo",
    "FlaskMonitor",
    "Latency",
    "MonitorSettings",
    "RequestRecord",
    "__version__",
    "get_state",
    "objective",
]
