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
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

from flask import Flask, Request, Response, current_app, got_request_exception, request
from flask.ctx import RequestContext
from flask.globals import request_ctx
from opentelemetry import trace
from opentelemetry.trace import Span
from werkzeug.wsgi import ClosingIterator

from otel_flask_monitor.config import MonitorSettings
from otel_flask_monitor.dispatch import Consumer, FailureReporter, RecordDispatcher
from otel_flask_monitor.exclusion import RequestExclusion
from otel_flask_monitor.hook_order import place_behind_instrumentation
from otel_flask_monitor.hosts import split_host_port
from otel_flask_monitor.record import ExceptionInfo, RequestRecord, method_fields
from otel_flask_monitor.redaction import Redactor, truncate
from otel_flask_monitor.spans import SpanWriter, current_trace_id, server_span_of, trace_id_of
from otel_flask_monitor.streaming import BodyOutcome, MeasuredBody

if TYPE_CHECKING:
    from otel_flask_monitor.diagnostics import Diagnostics

_logger = logging.getLogger("otel_flask_monitor")

ENVIRON_KEY: Final = "otel_flask_monitor.in_flight"
# The redacted query of an excluded request whose span opened after our hook (see before_request).
_LATE_SPAN_QUERY_KEY: Final = "otel_flask_monitor.late_span_query"

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


def _trace_id_of(span: Span | None) -> str | None:
    return current_trace_id() if span is None else trace_id_of(span)


class RequestLifecycle:
    """Flask hooks of one app: measure, build the record, dispatch it."""

    def __init__(
        self,
        settings: MonitorSettings,
        *,
        redactor: Redactor,
        spans: SpanWriter,
        dispatcher: RecordDispatcher,
        failures: FailureReporter,
        diagnostics: Diagnostics,
        span_ending: Consumer | None = None,
    ) -> None:
        """``span_ending``: what to write to the span of a streamed response, whose span ends before
        its record is complete (the record then reaches ``dispatcher`` when the body ends)."""
        self._settings = settings
        self._redactor = redactor
        self._spans = spans
        self._dispatcher = dispatcher
        self._failures = failures
        self._diagnostics = diagnostics
        self._span_ending = span_ending
        self._exclusion = RequestExclusion(settings, diagnostics)
        self._warned_hook_order = False
        self._hook_order_checked = False

    def register(self, app: Flask) -> None:
        """Place the hooks so every response is seen, whatever the app registered first
        (:mod:`~otel_flask_monitor.hook_order`). ``after_request`` functions run in reverse: ours goes
        first in the list so it runs last and records the final status."""
        app.before_request_funcs.setdefault(None, []).append(self.before_request)
        app.after_request_funcs.setdefault(None, []).insert(0, self.after_request)
        app.teardown_request(self.teardown_request)
        got_request_exception.connect(self.on_exception, app)
        place_behind_instrumentation(app, self.before_request, self.teardown_request)

    def _check_hook_order(self) -> bool:
        """Once, on the first request: an app instrumented after ``FlaskMonitor(app)`` has the
        instrumentation's hooks where ours belong (hooks cannot be added after that request).
        True when they were moved: in this request the instrumentation's ``before_request`` still
        runs after ours."""
        self._hook_order_checked = True
        app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
        if not place_behind_instrumentation(app, self.before_request, self.teardown_request):
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
            if not self._exclusion.is_excluded(current):
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
        self._spans.sanitize(
            span, current.environ, current.method, routed=current.url_rule is not None, query=query
        )

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
            self._spans.redact_headers(server_span_of(environ) or trace.INVALID_SPAN)
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
        if self._span_ending is not None:
            self._span_ending(record)  # what is known while the span is open; it cannot wait for the body
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
            exception = self._exception_info(outcome.error, escaped=False)
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
        method, method_original = method_fields(current.method)
        return RequestRecord(
            method=method,
            route=truncate(current.url_rule.rule, limit) if current.url_rule is not None else None,
            path=truncate(current.path, limit),
            query=in_flight.query,
            scheme=truncate(current.scheme, limit),  # X-Forwarded-Proto under ProxyFix
            status_code=status,
            request_size=current.content_length,
            response_size=in_flight.response_size,
            content_type=truncate(in_flight.content_type, limit) if in_flight.content_type else None,
            client_address=truncate(current.remote_addr, limit) if current.remote_addr else None,
            user_agent=truncate(user_agent, limit) if user_agent else None,
            server_address=_server_address(current.environ, limit),
            duration_ms=duration_ns / 1e6,
            cpu_ms=max(cpu_ns, 0) / 1e6,
            end_time_ns=time.time_ns(),
            trace_id=in_flight.trace_id or _trace_id_of(in_flight.span),
            exception=self._exception_info(raised, escaped=teardown_exc is not None) if raised else None,
            captured_headers=captured,
            method_original=method_original,
            streamed=in_flight.stream is not None,
            server_span=in_flight.span,
        )

    def _exception_info(self, error: BaseException, *, escaped: bool) -> ExceptionInfo:
        return ExceptionInfo.of(
            error,
            escaped=escaped,
            max_length=self._settings.max_attribute_length,
            max_stacktrace_length=self._settings.max_stacktrace_length,
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


def _server_address(environ: Mapping[str, Any], limit: int) -> str | None:
    """Host name of the Host header without its port. Read from the environ: Flask's ``request.host``
    raises for hosts outside TRUSTED_HOSTS, and the record must not be lost to a scanner's header."""
    host, _ = split_host_port(str(environ.get("HTTP_HOST") or environ.get("SERVER_NAME") or ""))
    return truncate(host.lower(), limit) if host else None
