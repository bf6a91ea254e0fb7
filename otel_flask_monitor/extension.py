"""FlaskMonitor: the Flask extension contract (app factory, several apps, no app stored on self)."""

from __future__ import annotations

import logging
import os
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask

from otel_flask_monitor._otel_compat import is_instrumented
from otel_flask_monitor.aggregates import AggregateStore
from otel_flask_monitor.aggregates.multiprocess import MultiprocessAggregates
from otel_flask_monitor.app_lifetime import bind_wsgi_app_weakly
from otel_flask_monitor.attributes import AttributeBound
from otel_flask_monitor.config import resolve_settings
from otel_flask_monitor.dashboard import build_blueprint
from otel_flask_monitor.diagnostics import Diagnostics
from otel_flask_monitor.dispatch import Consumer, FailureReporter, RecordDispatcher
from otel_flask_monitor.errors import register_json_500
from otel_flask_monitor.hooks import RequestLifecycle
from otel_flask_monitor.instrumentation_guard import guard_instrumentation
from otel_flask_monitor.log_policy import LogSampler
from otel_flask_monitor.objective_metrics import ObjectiveCounter, objective_counter
from otel_flask_monitor.process import PROCESS
from otel_flask_monitor.redaction import Redactor, instrumentation_captures_headers
from otel_flask_monitor.signals import RecordSignals
from otel_flask_monitor.spans import SpanWriter
from otel_flask_monitor.state import EXTENSION_KEY, MonitorState, get_state
from otel_flask_monitor.telemetry import setup_telemetry

__all__ = ["EXTENSION_KEY", "FlaskMonitor", "MonitorState", "get_state"]

_logger = logging.getLogger("otel_flask_monitor")


class FlaskMonitor:
    """Monitor a Flask app: ``FlaskMonitor(app)``, or ``monitor = FlaskMonitor()`` then
    ``monitor.init_app(app)`` in an app factory.

    Keyword options override ``app.config["OTEL_FLASK_MONITOR_<NAME>"]``, which overrides the
    environment variable of the same name, which overrides the default (docs/configuration.md).
    What is not a setting (a store, a clock, more consumers) goes to :meth:`init_app`.
    """

    def __init__(self, app: Flask | None = None, **options: Any) -> None:
        resolve_settings(options, {}, {})  # unknown or malformed options fail here, not at init_app
        self._options = dict(options)
        if app is not None:
            self.init_app(app)

    def init_app(
        self,
        app: Flask,
        *,
        aggregates: AggregateStore | None = None,
        clock: Callable[[], float] = time.time,
        consumers: Iterable[tuple[str, Consumer]] = (),
    ) -> None:
        """Monitor ``app``. The keywords are the seams for tests, benchmarks and extensions
        (docs/configuration.md#seams-for-tests-benchmarks-and-extensions):

        - ``aggregates``: the store this app's records feed and ``/monitoring/stats`` reads, e.g. one
          filled beforehand; it keeps its own window, route cap and clock, and its objectives if it has
          some (else it counts the app's; without ``aggregates``, one built from the settings, on
          ``clock``);
        - ``clock``: Unix seconds, for the rolling window the monitor builds and for login-session
          expiry;
        - ``consumers``: ``(name, callable)`` pairs given each finished
          :class:`~otel_flask_monitor.record.RequestRecord` after the monitor's own; one that raises
          is counted as ``consumer '<name>'`` in ``/monitoring/health`` and never reaches the request.
        """
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                f"otel_flask_monitor is already registered on app {app.name!r}; "
                "create one FlaskMonitor per app and call init_app once"
            )
        settings = resolve_settings(self._options, app.config)
        telemetry = setup_telemetry(
            PROCESS.telemetry,
            enabled=settings.setup_telemetry,
            service_name=settings.service_name,
            fallback_service_name=app.name,
            flush_timeout_seconds=settings.flush_timeout_seconds,
            attribute_length_limit=max(settings.max_stacktrace_length, settings.max_attribute_length),
        )
        instrumented_by_monitor = False
        if settings.instrument_flask:
            bind_wsgi_app_weakly(app)  # what the instrumentation keeps must not hold the app
            instrumented_by_monitor = _instrument(app)
        PROCESS.system_metrics.start(telemetry.meter)  # once per process, however many apps
        failures = FailureReporter()
        objectives = objective_counter(settings, telemetry.meter, PROCESS.objective_metric)
        # The aggregates count requests within each route's latency objective for the live view;
        # objectives declared by @objective alone count too (they resolve at the first request).
        if aggregates is None:
            store = AggregateStore.from_settings(settings, clock, objectives=objectives)
        else:
            store = aggregates
            if store.objectives is None:
                store.objectives = objectives
        diagnostics = Diagnostics(settings, telemetry.health, lambda: store.has_recorded)
        redactor = Redactor(
            settings.redacted_headers,
            settings.redacted_query_params,
            instrumentation_captures_headers=instrumentation_captures_headers(),
        )
        spans = SpanWriter(
            redactor,
            settings.max_attribute_length,
            # Headers the instrumentation copies onto the span at the user's request can be long too.
            may_carry_headers=bool(
                os.environ.get("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST")
            ),
        )
        signals = RecordSignals(
            spans=spans if settings.enrich_spans else None,
            logger=telemetry.logger if settings.emit_logs else None,
            failures=failures,
            bound=AttributeBound.needed(
                max_length=settings.max_attribute_length,
                max_stacktrace_length=settings.max_stacktrace_length,
                captured_headers=settings.captured_headers,
            ),
            log_attributes=settings.log_attributes,
            sampler=LogSampler(settings.log_sample_ratio, settings.slow_request_ms),
        )
        dispatcher = RecordDispatcher([*_consumers(signals, store, objectives), *consumers], failures)
        lifecycle = RequestLifecycle(
            settings,
            redactor=redactor,
            spans=spans,
            dispatcher=dispatcher,
            failures=failures,
            diagnostics=diagnostics,
            span_ending=signals.enrich_span if settings.enrich_spans else None,
        )
        lifecycle.register(app)
        if settings.json_errors:
            register_json_500(app)
        if settings.dashboard_enabled:
            app.register_blueprint(build_blueprint(clock), url_prefix=settings.url_prefix)
        guard_instrumentation(
            app,
            settings.url_prefix if settings.dashboard_enabled else None,
            instrumented_by_monitor=instrumented_by_monitor,
        )
        exchange = None
        if settings.multiprocess_dir is not None:
            exchange = MultiprocessAggregates(store, settings.multiprocess_dir, failures=failures)
            exchange.start()
            # Its writer thread and files go with the app (or at exit), not with the process.
            weakref.finalize(app, exchange.close)
        app.extensions[EXTENSION_KEY] = MonitorState(
            settings, telemetry, failures, lifecycle, store, diagnostics, exchange
        )


def _consumers(
    signals: RecordSignals, aggregates: AggregateStore, objectives: ObjectiveCounter
) -> list[tuple[str, Consumer]]:
    consumers: list[tuple[str, Consumer]] = []
    if signals.enabled:
        consumers.append(("signals", signals))
    consumers.append(("aggregates", aggregates.record))
    consumers.append(("objectives", objectives.record))
    return consumers


def _instrument(app: Flask) -> bool:
    """Apply the Flask instrumentation unless someone did; True when the monitor applied it.

    ``excluded_urls`` is the user's ``OTEL_PYTHON_FLASK_EXCLUDED_URLS`` (else
    ``OTEL_PYTHON_EXCLUDED_URLS``) as the stock instrumentation reads it, only read now rather than
    when the instrumentation was imported. The monitor's own routes are not in it: the instrumentation
    matches ``excluded_urls`` against the full URL, so they are kept out of it on their path alone
    (:mod:`~otel_flask_monitor.instrumentation_guard`).
    """
    if is_instrumented(app):
        return False
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    excluded = os.environ.get(
        "OTEL_PYTHON_FLASK_EXCLUDED_URLS", os.environ.get("OTEL_PYTHON_EXCLUDED_URLS", "")
    )
    FlaskInstrumentor().instrument_app(app, excluded_urls=excluded)  # type: ignore[no-untyped-call]
    return True
