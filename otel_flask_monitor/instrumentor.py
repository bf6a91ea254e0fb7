"""Zero-code entry point: ``opentelemetry-instrument`` attaches FlaskMonitor to every Flask app.

Registered as the ``flask_monitor`` entry point of the ``opentelemetry_instrumentor`` group, so
``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=flask_monitor`` switches it off.

The monitor is attached lazily, on an app's first request, by patching ``__call__`` of Flask's own
class (``flask.app.Flask``): every app is an instance of it, whether it was made through
``flask.Flask``, through the Flask instrumentation's subclass that replaces ``flask.Flask``, or
through a name bound by ``from flask import Flask`` before that replacement. Waiting for the first
request means the app's own set-up is finished: an app that called ``FlaskMonitor(app)`` itself is
left alone, and the Flask instrumentation's hooks (registered when the app was made, or by
``init_app`` for apps it missed) run before the monitor's, so the monitor sees the server span. It
is still early enough for Flask: hooks and blueprints may be registered until the app has handled
its first request, and ``__call__`` runs before ``wsgi_app`` marks that.
"""

from __future__ import annotations

import functools
import logging
import threading
import weakref
from collections.abc import Callable, Collection, Iterable
from typing import TYPE_CHECKING, Any, Final

from flask.app import Flask

# The module carries a file-level "type: ignore", so mypy sees none of its names.
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

# Imported for its after-fork hook: under `opentelemetry-instrument gunicorn` the providers are made in
# the master, and only a hook registered there before the fork can tell a worker so (preload_master).
from otel_flask_monitor import process  # noqa: F401
from otel_flask_monitor.extension import FlaskMonitor
from otel_flask_monitor.state import is_monitored

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

_logger = logging.getLogger("otel_flask_monitor")

WsgiCall = Callable[[Flask, "WSGIEnvironment", "StartResponse"], Iterable[bytes]]

INSTRUMENTED_FLASK_VERSIONS: Final = ("flask >= 3.0",)


class _Attacher:
    """Attaches the monitor to each app once; a failed attempt is reported once, never retried."""

    def __init__(self) -> None:
        self.enabled = True
        self._lock = threading.Lock()
        self._given_up: weakref.WeakSet[Flask] = weakref.WeakSet()

    def ensure_attached(self, app: Flask) -> None:
        # Fast path for every request after the first: one dict lookup.
        if is_monitored(app) or app in self._given_up:
            return
        with self._lock:
            if is_monitored(app) or app in self._given_up:
                return
            self._attach(app)

    def _attach(self, app: Flask) -> None:
        # Hooks registered on an app that has served a request would raise in Flask; this happens
        # only when the instrumentor was switched on programmatically after the server started.
        if getattr(app, "_got_first_request", False):
            self._given_up.add(app)
            _logger.warning(
                "otel_flask_monitor: not attached to app %r: it had already handled requests when "
                "the instrumentor was switched on; call FlaskMonitor(app) during set-up instead",
                app.name,
            )
            return
        try:
            FlaskMonitor().init_app(app)
        except Exception:
            # The app must keep serving without the monitor; say why once, with the traceback.
            self._given_up.add(app)
            _logger.warning(
                "otel_flask_monitor: could not attach to app %r; it serves unmonitored",
                app.name,
                exc_info=True,
            )


class FlaskMonitorInstrumentor(BaseInstrumentor):  # type: ignore[misc]  # the base class is untyped
    """``FlaskMonitorInstrumentor().instrument()`` monitors every Flask app from its first request.

    ``opentelemetry-instrument`` calls ``instrument()`` itself; configuration then comes from the
    ``OTEL_FLASK_MONITOR_*`` environment variables (and ``app.config``), see docs/zero-code.md.
    """

    _original_call: WsgiCall | None = None
    _patched_call: WsgiCall | None = None
    _attacher: _Attacher | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        return INSTRUMENTED_FLASK_VERSIONS

    def _instrument(self, **kwargs: Any) -> None:
        original: WsgiCall = Flask.__call__
        attacher = _Attacher()

        @functools.wraps(original)
        def monitored_call(
            app: Flask, environ: WSGIEnvironment, start_response: StartResponse
        ) -> Iterable[bytes]:
            if attacher.enabled:
                try:
                    attacher.ensure_attached(app)
                except Exception:
                    # ensure_attached reports its own failures; this only guards the guard.
                    _logger.debug("otel_flask_monitor: attach check failed", exc_info=True)
            return original(app, environ, start_response)

        self._original_call = original
        self._patched_call = monitored_call
        self._attacher = attacher
        Flask.__call__ = monitored_call  # type: ignore[method-assign,assignment]

    def _uninstrument(self, **kwargs: Any) -> None:
        # Apps already monitored stay monitored (their hooks are registered); new apps are not.
        if self._attacher is not None:
            self._attacher.enabled = False
        # Someone who patched __call__ after us wraps our wrapper: leave theirs in place, ours
        # now only passes through.
        if self._original_call is not None and Flask.__call__ is self._patched_call:
            Flask.__call__ = self._original_call  # type: ignore[method-assign,assignment]
        self._original_call = None
        self._patched_call = None
        self._attacher = None
