"""A monitored app is freed when its last reference goes, as an unmonitored one is.

Flask promises that an app makes no reference cycle (its ``test_app_freed_on_zero_refcount``: with
the cycle collector off, ``del app`` frees it). The monitor keeps that promise by holding nothing of
the app: its per-app state lives in ``app.extensions`` and points away from the app, its hooks are
bound methods of objects that do not know the app, its blinker connection is weak on both ends and
its error handler finds the app through ``current_app``.

One cycle is not the monitor's own: ``FlaskInstrumentor.instrument_app`` stores the bound method
``app.wsgi_app`` on the app twice (``app._original_wsgi_app`` and inside the wrapper it assigns to
``app.wsgi_app``), and a bound method holds its app
(opentelemetry-instrumentation-flask 0.66b1, ``instrument_app`` and ``_InstrumentedFlask.__init__``).
When the monitor instruments the app itself (``instrument_flask=True``), it first puts a
:class:`WeakWsgiApp` in that place, so what the instrumentation wraps and keeps is a weak reference.
An app instrumented by the user or by ``opentelemetry-instrument`` keeps the instrumentation's cycle:
the cycle collector frees it (docs/compatibility.md).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING

from flask import Flask

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment


class WeakWsgiApp:
    """Calls ``app.wsgi_app`` without keeping the app alive."""

    __slots__ = ("_method",)

    def __init__(self, app: Flask) -> None:
        self._method = weakref.WeakMethod(app.wsgi_app)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        method = self._method()
        if method is None:
            raise ReferenceError("the Flask app this WSGI callable belonged to was freed")
        return method(environ, start_response)


def bind_wsgi_app_weakly(app: Flask) -> None:
    """Make ``app.wsgi_app`` a :class:`WeakWsgiApp`, before an instrumentation wraps and stores it.

    An app whose ``wsgi_app`` is already replaced (middleware, an instrumentation) is left alone: what
    it holds was put there by someone else.
    """
    if "wsgi_app" not in vars(app):
        app.wsgi_app = WeakWsgiApp(app)  # type: ignore[method-assign]
