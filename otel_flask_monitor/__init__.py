"""Production monitoring for Flask APIs on OpenTelemetry."""

from __future__ import annotations

__version__ = "0.1.0"

from otel_flask_monitor.config import ConfigError, MonitorSettings
from otel_flask_monitor.extension import FlaskMonitor, get_state
from otel_flask_monitor.record import ExceptionInfo, RequestRecord

__all__ = [
    "ConfigError",
    "ExceptionInfo",
    "FlaskMonitor",
    "MonitorSettings",
    "RequestRecord",
    "__version__",
    "get_state",
]
