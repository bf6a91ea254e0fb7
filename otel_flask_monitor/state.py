"""One app's monitor state: what ``FlaskMonitor.init_app`` leaves in ``app.extensions``, and how to get it.

Imported at the top by the modules that serve an app's requests from it (the dashboard, its login,
the zero-code instrumentor, the CLI): it loads nothing of the monitor itself. What the state holds is
built by :mod:`otel_flask_monitor.extension`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from flask import Flask

if TYPE_CHECKING:
    from otel_flask_monitor.aggregates import AggregateStore
    from otel_flask_monitor.aggregates.multiprocess import MultiprocessAggregates
    from otel_flask_monitor.config import MonitorSettings
    from otel_flask_monitor.diagnostics import Diagnostics
    from otel_flask_monitor.dispatch import FailureReporter
    from otel_flask_monitor.hooks import RequestLifecycle
    from otel_flask_monitor.telemetry import Telemetry

EXTENSION_KEY: Final = "otel_flask_monitor"
"""The monitor's key in ``app.extensions``."""


@dataclass(frozen=True, slots=True)
class MonitorState:
    """Per-app state, kept in ``app.extensions["otel_flask_monitor"]``."""

    settings: MonitorSettings
    telemetry: Telemetry
    failures: FailureReporter
    lifecycle: RequestLifecycle
    aggregates: AggregateStore
    diagnostics: Diagnostics
    exchange: MultiprocessAggregates | None = None
    """Set with ``multiprocess_dir``: the aggregates of all the server's workers."""

    def stats_document(self) -> dict[str, Any]:
        """The ``/monitoring/stats`` JSON: merged across workers when ``multiprocess_dir`` is set."""
        if self.exchange is not None:
            try:
                return self.exchange.snapshot()
            except Exception:  # the files are a bonus; this process's own figures always answer
                self.failures.report("multiprocess merge")
        return self.aggregates.snapshot()

    def route_detail(self, method: str, route: str) -> dict[str, Any] | None:
        """The drill-down of one (method, route) over the window, merged like :meth:`stats_document`
        (None: no request of it in the window)."""
        if self.exchange is not None:
            try:
                return self.exchange.route_detail((method, route))
            except Exception:
                self.failures.report("multiprocess merge")
        return self.aggregates.route_detail((method, route))


def is_monitored(app: Flask) -> bool:
    return EXTENSION_KEY in app.extensions


def get_state(app: Flask) -> MonitorState:
    try:
        state: MonitorState = app.extensions[EXTENSION_KEY]
    except KeyError:
        raise RuntimeError(
            f"otel_flask_monitor is not registered on app {app.name!r}; call FlaskMonitor(app) or "
            "monitor.init_app(app) first"
        ) from None
    return state
