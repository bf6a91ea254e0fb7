"""What the Flask instrumentation sees of the app's requests.

**The monitor's own routes**, recognised at the WSGI level by their path alone: ``PATH_INFO`` (the
path below the app's mount point, ``SCRIPT_NAME``) is the ``url_prefix`` or lies under it, leading
slashes folded as Werkzeug's router folds them. Nothing else is read: not the query string, not the
Host header, not ``request.url``. A client therefore cannot make one of the app's requests look like
a monitor request (switching its tracing off), or the reverse. :class:`OwnRoutesGate`, in front of
``app.wsgi_app``:

- when the monitor applied the instrumentation itself, sends monitor requests straight to the
  uninstrumented app (no span, no HTTP metrics) and marks them so that the instrumentation's Flask
  hooks skip them; every other request reaches the instrumentation untouched, so the user's
  ``OTEL_PYTHON_FLASK_EXCLUDED_URLS`` keeps working exactly as in the stock instrumentation;
- removes every ``Access-Control-*`` header from the answers of monitor routes, whatever added it
  (an app-wide ``flask_cors.CORS(app)`` adds them in an app ``after_request`` and around Flask's
  error handlers, after anything the blueprint could do), so no other origin can read them.

**A Host header outside ``TRUSTED_HOSTS``**: Flask answers ``400`` (its routing raises
``SecurityError``) and every later read of ``request.host`` or ``request.url`` raises again. The
Flask instrumentation (opentelemetry-instrumentation-flask 0.66b1: ``_should_trace`` in
``_rewrapped_app``, and the ``excluded_urls`` checks of its ``before_request`` and
``teardown_request`` hooks) reads ``flask.request.url`` for every request, also when no URL is
excluded; in ``start_response`` that read is outside Flask's error handling, so the
``SecurityError`` escapes the WSGI app and the server answers 500 with a traceback. Right before
the instrumentation's ``before_request`` hook, such a request gets a ``url`` built from the
server's own address instead of the rejected Host. ``request.host`` and the URLs derived from it
keep raising; code that works without the monitor never read ``request.url`` successfully for such
a request, so it sees no difference, and the instrumentation traces the 400 instead of crashing.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final

from flask import Flask, Request, request
from werkzeug.exceptions import SecurityError
from werkzeug.sansio.utils import get_current_url, get_host

from otel_flask_monitor._otel_compat import (
    INSTRUMENTATION_BEFORE_REQUEST,
    INSTRUMENTATION_TEARDOWN_REQUEST,
    uninstrumented_wsgi_app,
)

if TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

UNTRACED_KEY: Final = "otel_flask_monitor.untraced"
"""Set in the WSGI environ of monitor requests that bypass the instrumentation."""

_CORS_HEADER_PREFIX: Final = "access-control-"


def wsgi_prefix(url_prefix: str) -> str:
    """``url_prefix`` as it appears in ``PATH_INFO`` (WSGI strings carry bytes as latin-1)."""
    return url_prefix.encode("utf-8").decode("latin-1")


def is_own_path(path_info: str, prefix: str) -> bool:
    """``path_info`` (from the environ) is ``prefix`` (from :func:`wsgi_prefix`) or below it."""
    if path_info.startswith("//"):
        path_info = "/" + path_info.lstrip("/")
    if not path_info.startswith(prefix):
        return False
    return len(path_info) == len(prefix) or path_info[len(prefix)] == "/"


def keep_url_readable(current: Request) -> None:
    """Give a request whose Host is outside ``trusted_hosts`` a ``url`` the instrumentation can read."""
    if not current.trusted_hosts or "url" in current.__dict__:
        return
    try:
        current.host  # noqa: B018  # raises SecurityError for a host outside trusted_hosts
    except SecurityError:
        host = get_host(current.scheme, None, current.server)
        current.url = get_current_url(
            current.scheme, host, current.root_path, current.path, current.query_string
        )


def _without_cors_headers(start_response: StartResponse) -> StartResponse:
    def start(
        status: str, headers: list[tuple[str, str]], exc_info: OptExcInfo | None = None
    ) -> Callable[[bytes], object]:
        kept = [(name, value) for name, value in headers if not name.lower().startswith(_CORS_HEADER_PREFIX)]
        return start_response(status, kept, exc_info)

    return start


class OwnRoutesGate:
    """WSGI middleware in front of an app's (possibly instrumented) ``wsgi_app``.

    Holds the app only weakly: the app holds the gate (as its ``wsgi_app``), and a strong reference
    back would keep every app that goes out of scope alive until the cycle collector runs.
    """

    __slots__ = ("_app", "_bypass", "_prefix", "_wrapped")

    def __init__(self, app: Flask, wrapped: WSGIApplication, url_prefix: str, bypass: bool) -> None:
        self._app = weakref.ref(app)
        # The app's own bound wsgi_app (not instrumented) would be a strong reference back to it.
        self._wrapped = None if getattr(wrapped, "__self__", None) is app else wrapped
        self._prefix = wsgi_prefix(url_prefix)
        self._bypass = bypass

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        own_route = is_own_path(environ.get("PATH_INFO") or "", self._prefix)
        if own_route:
            start_response = _without_cors_headers(start_response)
        if self._wrapped is not None and not (own_route and self._bypass):
            return self._wrapped(environ, start_response)
        app = self._app()
        if app is None:  # only reachable while the app is being torn down
            start_response("503 Service Unavailable", [("Content-Length", "0")])
            return []
        if self._wrapped is None:
            return type(app).wsgi_app(app, environ, start_response)
        uninstrumented = uninstrumented_wsgi_app(app)
        if uninstrumented is None:  # unreachable: the bypass is set up only when the app has one
            return self._wrapped(environ, start_response)
        environ[UNTRACED_KEY] = True
        return uninstrumented(environ, start_response)


def _guarded_before_request(hook: Callable[[], Any]) -> Callable[[], Any]:
    @functools.wraps(hook)  # keeps __module__: the monitor orders hooks by it
    def guarded() -> Any:
        current: Request = request._get_current_object()  # type: ignore[attr-defined]
        if UNTRACED_KEY in current.environ:
            return None
        if current.trusted_hosts:
            keep_url_readable(current)
        return hook()

    return guarded


def _guarded_teardown_request(hook: Callable[[BaseException | None], Any]) -> Callable[..., Any]:
    @functools.wraps(hook)
    def guarded(exc: BaseException | None) -> Any:
        if UNTRACED_KEY in request.environ:
            return None
        return hook(exc)

    return guarded


def _replace_hook(funcs: list[Any], app: Flask, attribute: str, wrap: Callable[[Any], Any]) -> bool:
    """Wrap the instrumentation hook kept in ``app.<attribute>`` where Flask lists it, and on the app
    (``FlaskInstrumentor.uninstrument_app`` removes it by that reference)."""
    hook = getattr(app, attribute, None)
    if hook is None or hook not in funcs:
        return False
    guarded = wrap(hook)
    funcs[funcs.index(hook)] = guarded
    setattr(app, attribute, guarded)
    return True


def guard_instrumentation(app: Flask, own_prefix: str | None, *, instrumented_by_monitor: bool) -> None:
    """Shield the app's Flask instrumentation (applied by the monitor or by the user before it).

    ``own_prefix``: where the monitor's routes are mounted (None: not mounted). With
    ``instrumented_by_monitor`` (``FlaskInstrumentor().instrument_app`` was just called by the
    monitor and nothing wrapped ``wsgi_app`` since) monitor requests bypass the instrumentation;
    otherwise they only lose their CORS headers.
    """
    guarded_before = _replace_hook(
        app.before_request_funcs.get(None, []), app, INSTRUMENTATION_BEFORE_REQUEST, _guarded_before_request
    )
    bypass = (
        instrumented_by_monitor
        and guarded_before
        and uninstrumented_wsgi_app(app) is not None
        and _replace_hook(
            app.teardown_request_funcs.get(None, []),
            app,
            INSTRUMENTATION_TEARDOWN_REQUEST,
            _guarded_teardown_request,
        )
    )
    if own_prefix is not None:
        app.wsgi_app = OwnRoutesGate(app, app.wsgi_app, own_prefix, bypass)  # type: ignore[method-assign]
