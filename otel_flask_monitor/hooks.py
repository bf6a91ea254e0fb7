"""The request lifecycle -> one per-request record, built once, at the request's real end.

That end is the teardown of the request context that ran ``before_request``: contexts copied from it
(``copy_current_request_context``, ``stream_with_context``, on other threads too) share its WSGI
environ but are not it, and their teardowns are ignored. A streamed body ends later, when the server
has taken its last byte, it raised, or the server closed it (:mod:`otel_flask_monitor.streaming`).

The record goes to the span the Flask instrumentation opened for this request, or to none. The hooks
sit after the instrumentation's (moved there on the first request when the app was instrumented
after the monitor), so that span is open in all three phases and its teardown, which ends it, runs
after ours. Every hook swallows its own failures: the monitor must never change what the app answers.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any, Final

from flask import Flask, Request, Response, current_app, got_request_exception, request
from flask.ctx import RequestContext
from flask.globals import request_ctx
from opentelemetry import trace
from opentelemetry.trace import Span
from opentelemetry.util.http import ExcludeList, get_excluded_urls, sanitize_method
from werkzeug.wsgi import ClosingIterator

from otel_flask_monitor.config import MonitorSettings
from otel_flask_monitor.diagnostics import EXCLUDED_PATHS, EXCLUDED_URLS, excluded_by
from otel_flask_monitor.dispatch import FailureReporter, RecordDispatcher
from otel_flask_monitor.instrumentation_guard import is_own_path, wsgi_prefix
from otel_flask_monitor.record import KNOWN_METHODS, ExceptionInfo, RequestRecord
from otel_flask_monitor.redaction import Redactor, redact_span_headers, truncate, truncate_middle
from otel_flask_monitor.spans import enrich_span, server_span_of
from otel_flask_monitor.streaming import BodyOutcome, MeasuredBody

_logger = logging.getLogger("otel_flask_monitor")

ENVIRON_KEY: Final = "otel_flask_monitor.in_flight"
# The redacted query of an excluded request whose span opened after our hook (see before_request).
_LATE_SPAN_QUERY_KEY: Final = "otel_flask_monitor.late_span_query"

# Span attributes set by the instrumentation that carry the raw query string; overwritten redacted.
_QUERY_BEARING_SPAN_ATTRIBUTES: Final = ("url.query", "http.target", "http.url", "url.full")


# Statuses Werkzeug sends no body with (nor with 1xx, nor to HEAD), whatever the response holds.
_BODILESS_STATUSES: Final = frozenset({204, 304})


class _InFlight:
    """What the hooks learn of one request before its record is built."""

    __slots__ = (
        "content_type",
        "exception",
        "owner",
        "query",
        "response_size",
        "span",
        "start_cpu_ns",
        "start_ns",
        "status_code",
        "stream",
        "trace_id",
    )

    def __init__(self, query: str, span: Span | None, owner: RequestContext) -> None:
        self.start_ns = time.perf_counter_ns()
        self.start_cpu_ns = time.thread_time_ns()
        self.query = query
        self.span = span
        # The request context that ran before_request (held, not weakly referenced: the reference
        # goes with this object when its teardown pops it from the environ).
        self.owner = owner
        self.trace_id: str | None = None
        self.status_code: int | None = None
        self.response_size: int | None = None
        self.content_type: str | None = None
        self.exception: BaseException | None = None
        self.stream: _Stream | None = None


class _Stream:
    """A streamed response: the body being sent, and the two halves of the record, which meet when
    both the request context and the body have ended (in either order, on either thread)."""

    __slots__ = ("lock", "outcome", "record")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.record: RequestRecord | None = None
        self.outcome: BodyOutcome | None = None


def current_trace_id() -> str | None:
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def _trace_id_of(span: Span | None) -> str | None:
    if span is None:
        return current_trace_id()
    context = span.get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def exception_type_name(error: BaseException) -> str:
    cls = type(error)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


class RequestLifecycle:
    """Flask hooks of one app: measure, build the record, dispatch it."""

    def __init__(
        self,
        settings: MonitorSettings,
        redactor: Redactor,
        dispatcher: RecordDispatcher,
        failures: FailureReporter,
    ) -> None:
        self._settings = settings
        self._redactor = redactor
        self._dispatcher = dispatcher
        self._failures = failures
        self._excluded_paths = (
            re.compile("|".join(f"(?:{p})" for p in settings.excluded_paths))
            if settings.excluded_paths
            else None
        )
        self._excluded_urls: ExcludeList | None = (
            get_excluded_urls("FLASK")
            if os.environ.get("OTEL_PYTHON_FLASK_EXCLUDED_URLS")
            or os.environ.get("OTEL_PYTHON_EXCLUDED_URLS")
            else None
        )
        # The prefix is the monitor's only while its routes are mounted there.
        self._own_prefix = wsgi_prefix(settings.url_prefix) if settings.dashboard_enabled else None
        # Headers the instrumentation copies onto the span at the user's request can be long too.
        self._span_may_carry_headers = bool(
            os.environ.get("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST")
        )
        self._warned_hook_order = False
        self._hook_order_checked = False

    def register(self, app: Flask) -> None:
        """Place the hooks so every response is seen, whatever the app registered first.

        Flask stops at the first ``before_request`` function that answers (an auth check's 401):
        the Flask instrumentation's (which opens the span) goes first, ours right after it, ahead
        of the app's own, even when the app registered its hooks before being instrumented.
        ``after_request`` functions run in reverse: ours goes first in the list so it runs last
        and records the final status. ``teardown_request`` functions run in reverse too: ours goes
        after the instrumentation's, so it runs before the one that ends the span.
        """
        app.before_request_funcs.setdefault(None, []).append(self.before_request)
        app.after_request_funcs.setdefault(None, []).insert(0, self.after_request)
        app.teardown_request(self.teardown_request)
        got_request_exception.connect(self.on_exception, app)
        self._place_hooks(app)

    def _place_hooks(self, app: Flask) -> bool:
        """Put our ``before_request`` right after the instrumentation's and our ``teardown_request``
        after its; True when something moved. Each list is replaced, not changed in place, so a
        request iterating the old one on another thread is not disturbed."""
        moved = False
        before = app.before_request_funcs.get(None, [])
        instrumentation = [f for f in before if _is_flask_instrumentation(f)]
        placed = [
            *instrumentation,
            self.before_request,
            *(f for f in before if f not in instrumentation and f != self.before_request),
        ]
        if placed != before:
            app.before_request_funcs[None] = placed
            moved = True
        teardown = app.teardown_request_funcs.get(None, [])
        theirs = [i for i, f in enumerate(teardown) if _is_flask_instrumentation(f)]
        mine = teardown.index(self.teardown_request) if self.teardown_request in teardown else None
        if theirs and mine is not None and mine < theirs[-1]:
            others = [f for f in teardown if f != self.teardown_request]
            at = others.index(teardown[theirs[-1]]) + 1
            app.teardown_request_funcs[None] = [*others[:at], self.teardown_request, *others[at:]]
            moved = True
        return moved

    def _check_hook_order(self) -> bool:
        """Once, on the first request: an app instrumented after ``FlaskMonitor(app)`` has the
        instrumentation's hooks where ours belong (hooks cannot be added after that request).
        True when they were moved: in this request the instrumentation's ``before_request`` still
        runs after ours."""
        self._hook_order_checked = True
        app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
        if not self._place_hooks(app):
            return False
        self._span_opened_late(app)
        return True

    def _span_opened_late(self, app: Flask) -> None:
        """The instrumentation's hooks ran after ours: the app was instrumented after the monitor."""
        if not self._warned_hook_order:
            self._warned_hook_order = True
            _logger.info(
                "otel_flask_monitor: app %r was instrumented after FlaskMonitor(app); the monitor "
                "moved its request hooks behind the Flask instrumentation's",
                app.name,
            )

    def is_excluded(self, current: Request) -> bool:
        prefix = self._own_prefix
        if prefix is not None and is_own_path(current.environ.get("PATH_INFO") or "", prefix):
            return True
        if self._excluded_paths is not None and self._excluded_paths.search(current.path):
            return excluded_by(EXCLUDED_PATHS)
        if self._excluded_urls is None:
            return False  # the full URL is built only when OTEL_PYTHON_FLASK_EXCLUDED_URLS asks for it
        try:
            return self._excluded_urls.url_disabled(current.url) and excluded_by(EXCLUDED_URLS)
        except Exception:
            return False  # an untrusted Host (TRUSTED_HOSTS) makes the URL unreadable

    def before_request(self) -> None:
        try:
            opens_late = not self._hook_order_checked and self._check_hook_order()
            context = _request_context()
            current = context.request
            raw_query = current.query_string
            limit = self._settings.max_attribute_length
            query = self._redactor.query(raw_query, limit) if raw_query else ""
            # None when the instrumentation's hook has not run yet: picked up after the view.
            span = server_span_of(current.environ)
            if span is not None and span.is_recording():
                # Excluded paths too: exclusion stops the record, never the redaction of the span.
                self._sanitize_span(span, current, query)
            if not self.is_excluded(current):
                current.environ[ENVIRON_KEY] = _InFlight(query, span, context)
            elif opens_late:
                current.environ[_LATE_SPAN_QUERY_KEY] = query
        except Exception:
            self._failures.report("before_request hook")

    def _pick_up_late_span(self, in_flight: _InFlight, current: Request) -> None:
        """The instrumentation's before_request ran after ours (first request of an app instrumented
        after the monitor), or it opened no span."""
        in_flight.span = server_span_of(current.environ)
        if in_flight.span is not None and in_flight.span.is_recording():
            self._sanitize_span(in_flight.span, current, in_flight.query)

    def _sanitize_span(self, span: Span, current: Request, query: str) -> None:
        """The instrumentation copies the raw query string, target, user agent and host onto the span:
        replace the query redacted, and cut every string at the limit the record's obey."""
        if current.url_rule is None:
            # Without a route template the semantic conventions name the span by the method alone
            # (unknown methods: "HTTP", unless OTEL_PYTHON_INSTRUMENTATION_HTTP_CAPTURE_ALL_METHODS
            # asks for them as sent, as the instrumentation names them); the instrumentation's raw
            # path would make one span name per URL, a scanner's paths in the trace backend's index.
            method = current.method
            if method not in KNOWN_METHODS:
                method = sanitize_method(method)
                method = "HTTP" if method == "_OTHER" else truncate(method, 32)
            span.update_name(method)
        limit = self._settings.max_attribute_length
        environ = current.environ
        # The instrumentation copies the raw request target (RAW_URI/REQUEST_URI) or re-quotes the
        # path (up to 3 characters per one): "/%00%00..." is three times as long as PATH_INFO.
        request_is_long = (
            3 * len(environ.get("PATH_INFO", "")) + len(environ.get("QUERY_STRING", "")) > limit
            or len(environ.get("RAW_URI") or environ.get("REQUEST_URI") or "") > limit
            or len(environ.get("HTTP_USER_AGENT", "")) > limit
            or len(environ.get("HTTP_HOST", "")) > limit
        )
        if not (query or request_is_long or self._span_may_carry_headers):
            return  # nothing the instrumentation copied needs replacing: skip reading the span back
        attributes = getattr(span, "attributes", None) or {}
        replaced: dict[str, str] = {}
        if query:
            for key in _QUERY_BEARING_SPAN_ATTRIBUTES:
                value = attributes.get(key)
                if key == "url.query":
                    replaced[key] = query
                elif isinstance(value, str):
                    replaced[key] = value.split("?", 1)[0] + "?" + query
        for key, value in attributes.items():
            if isinstance(value, str) and len(value) > limit and key not in replaced:
                replaced[key] = value
        for key, value in replaced.items():
            span.set_attribute(key, truncate(value, limit))

    def after_request(self, response: Response) -> Response:
        try:
            current = _current_request()
            in_flight = current.environ.get(ENVIRON_KEY)
            if in_flight is None:
                late_query = current.environ.pop(_LATE_SPAN_QUERY_KEY, None)
                span = server_span_of(current.environ) if late_query is not None else None
                if span is not None and span.is_recording():
                    self._sanitize_span(span, current, late_query)  # an excluded path's first request
                return response
            if in_flight.span is None:
                self._pick_up_late_span(in_flight, current)
            in_flight.status_code = response.status_code
            in_flight.content_type = response.content_type
            if _sends_over_time(response):
                in_flight.response_size = None
                self._measure_body(in_flight, response, current.method)
            else:
                in_flight.response_size = response.content_length
                in_flight.stream = None  # an error handler replaced a streamed response
            in_flight.trace_id = _trace_id_of(in_flight.span)
            header = self._settings.trace_id_header
            if header and in_flight.trace_id:
                response.headers[header] = in_flight.trace_id
        except Exception:
            self._failures.report("after_request hook")
        return response

    def _measure_body(self, in_flight: _InFlight, response: Response, method: str) -> None:
        """Hand the server a body that reports its end, so the record runs to the last byte."""
        status = response.status_code
        bodiless = method == "HEAD" or status in _BODILESS_STATUSES or 100 <= status < 200
        stream = _Stream()
        in_flight.stream = stream
        # Werkzeug iterates response.response for the server and closes it when the server closes
        # the response (with direct passthrough, send_file's, the server gets and closes it itself).
        response.response = MeasuredBody(
            response.response, self._on_body_end(in_flight, stream), bodiless=bodiless
        )

    def on_exception(self, sender: Flask, exception: BaseException, **_: Any) -> None:
        try:
            in_flight = request.environ.get(ENVIRON_KEY)
            if in_flight is not None:
                in_flight.exception = exception
        except Exception:
            self._failures.report("exception hook")

    def teardown_request(self, exc: BaseException | None) -> None:
        try:
            context = _request_context()
            environ = context.request.environ
            # Before the instrumentation's teardown ends the span, after it captured response headers;
            # excluded requests too.
            redact_span_headers(server_span_of(environ) or trace.INVALID_SPAN, self._redactor)
            in_flight = environ.get(ENVIRON_KEY)
            if in_flight is None or in_flight.owner is not context:
                # A copy of the request's context ends (or stream_with_context ends its own push of
                # it, after the real end): the request is still running.
                return
            del environ[ENVIRON_KEY]
            if in_flight.span is None:  # not seen yet: after_request did not run (the view raised)
                self._pick_up_late_span(in_flight, context.request)
            record = self._build_record(in_flight, exc)
            if in_flight.stream is None:
                self._dispatcher.dispatch(record)
            else:
                self._request_ended_before_body(in_flight, in_flight.stream, record)
        except Exception:
            self._failures.report("teardown_request hook")

    def _request_ended_before_body(
        self, in_flight: _InFlight, stream: _Stream, record: RequestRecord
    ) -> None:
        """The view returned a streamed body: the span ends now (the instrumentation's teardown
        follows ours), the record when the body does."""
        if self._settings.enrich_spans:
            enrich_span(record)  # what is known while the span is open; it cannot wait for the body
        with stream.lock:
            stream.record = record
            outcome = stream.outcome
        if outcome is not None:  # the body ended first (preserved contexts of the test client)
            self._dispatch_streamed(in_flight, record, outcome)

    def _on_body_end(self, in_flight: _InFlight, stream: _Stream) -> Callable[[BodyOutcome], None]:
        def body_ended(outcome: BodyOutcome) -> None:
            try:
                if in_flight.stream is not stream:
                    return  # an error handler's answer replaced this response before it was sent
                with stream.lock:
                    stream.outcome = outcome
                    record = stream.record
                if record is not None:
                    self._dispatch_streamed(in_flight, record, outcome)
            except Exception:
                self._failures.report("streamed body end")

        return body_ended

    def _dispatch_streamed(self, in_flight: _InFlight, record: RequestRecord, outcome: BodyOutcome) -> None:
        exception = record.exception
        if outcome.error is not None and exception is None:
            exception = _exception_info(outcome.error, False, self._settings)
        self._dispatcher.dispatch(
            dataclasses.replace(
                record,
                response_size=outcome.bytes_sent,
                duration_ms=(outcome.end_ns - in_flight.start_ns) / 1e6,
                cpu_ms=record.cpu_ms + max(outcome.cpu_ns, 0) / 1e6,
                end_time_ns=outcome.end_time_ns,
                exception=exception,
                cut_short=outcome.cut_short,
            )
        )

    def _build_record(self, in_flight: _InFlight, teardown_exc: BaseException | None) -> RequestRecord:
        duration_ns = time.perf_counter_ns() - in_flight.start_ns
        cpu_ns = time.thread_time_ns() - in_flight.start_cpu_ns
        settings = self._settings
        limit = settings.max_attribute_length
        raised = teardown_exc or in_flight.exception
        status = in_flight.status_code if in_flight.status_code is not None else 500 if raised else 200
        current = _current_request()
        headers = current.headers
        user_agent = headers.get("User-Agent")
        captured = tuple(
            (name.lower(), truncate(self._redactor.header_value(name, value), limit))
            for name in settings.captured_headers
            if (value := headers.get(name)) is not None
        )
        method, method_original = _method_of(current.method)
        return RequestRecord(
            method=method,
            route=truncate(current.url_rule.rule, limit) if current.url_rule is not None else None,
            path=truncate(current.path, limit),
            query=in_flight.query,
            scheme=current.scheme,
            status_code=status,
            request_size=current.content_length,
            response_size=in_flight.response_size,
            content_type=truncate(in_flight.content_type, limit) if in_flight.content_type else None,
            client_address=current.remote_addr,
            user_agent=truncate(user_agent, limit) if user_agent else None,
            server_address=_server_address(current.environ, limit),
            duration_ms=duration_ns / 1e6,
            cpu_ms=max(cpu_ns, 0) / 1e6,
            end_time_ns=time.time_ns(),
            trace_id=in_flight.trace_id or _trace_id_of(in_flight.span),
            exception=_exception_info(raised, teardown_exc is not None, settings) if raised else None,
            captured_headers=captured,
            method_original=method_original,
            streamed=in_flight.stream is not None,
            server_span=in_flight.span,
        )


def _current_request() -> Request:
    # One lookup through the context-local proxy instead of one per attribute read.
    current: Request = request._get_current_object()  # type: ignore[attr-defined]
    return current


def _sends_over_time(response: Response) -> bool:
    """A body the server sends as the app produces it: a generator, a file (send_file), any
    iterable without a length. Werkzeug calls error pages made from an HTTPException streamed too
    (``force_type`` keeps the iterator of the exception run as a WSGI app), but their length is
    known and they are sent at once: they are recorded like any fixed-size body."""
    if not response.is_streamed:
        return False
    return not (isinstance(response.response, ClosingIterator) and response.content_length is not None)


def _request_context() -> RequestContext:
    """The request context being handled on this thread. Contexts copied from it share its request
    and environ but are other objects (``flask.globals.request_ctx``, Flask 3.0-3.1)."""
    context: RequestContext = request_ctx._get_current_object()  # type: ignore[attr-defined]
    return context


def _method_of(sent: str) -> tuple[str, str | None]:
    """(``http.request.method``, ``http.request.method_original``) as the semantic conventions and the
    instrumentation spell them: ``_OTHER`` and the method as sent for a non-standard one, unless
    ``OTEL_PYTHON_INSTRUMENTATION_HTTP_CAPTURE_ALL_METHODS`` asks for every method as sent."""
    if sent in KNOWN_METHODS:
        return sent, None
    method = sanitize_method(sent)
    return (method, truncate(sent, 32)) if method != sent else (truncate(sent, 32), None)


def _is_flask_instrumentation(function: object) -> bool:
    return str(getattr(function, "__module__", "")).startswith("opentelemetry.instrumentation.flask")


def _server_address(environ: Mapping[str, Any], limit: int) -> str | None:
    """Host name of the Host header without its port. Read from the environ: Flask's ``request.host``
    raises for hosts outside TRUSTED_HOSTS, and the record must not be lost to a scanner's header."""
    host = str(environ.get("HTTP_HOST") or environ.get("SERVER_NAME") or "")
    if host.startswith("["):  # [v6]:port
        name = host[1 : host.find("]")] if "]" in host else host[1:]
    elif host.count(":") == 1:
        name = host.split(":", 1)[0]
    else:
        name = host
    return truncate(name.lower(), limit) if name else None


def _exception_info(error: BaseException, escaped: bool, settings: MonitorSettings) -> ExceptionInfo:
    stack = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    try:
        message = str(error)
    except Exception:
        message = "<unprintable exception>"
    return ExceptionInfo(
        type=exception_type_name(error),
        message=truncate(message, settings.max_attribute_length),
        stacktrace=truncate_middle(stack, settings.max_stacktrace_length),
        escaped=escaped,
    )
