"""The request lifecycle -> one per-request record.

Registered after the Flask instrumentation's own hooks, so the server span is current in all three
phases and its teardown (which ends the span) runs after ours. Every hook swallows its own failures:
the monitor must never change what the app answers.
"""

from __future__ import annotations

import logging
import os
import re
import time
import traceback
from collections.abc import Mapping
from typing import Any, Final

from flask import Flask, Request, Response, got_request_exception, request
from opentelemetry import trace
from opentelemetry.trace import Span
from opentelemetry.util.http import ExcludeList, get_excluded_urls

from otel_flask_monitor.aggregates import KNOWN_METHODS
from otel_flask_monitor.config import MonitorSettings
from otel_flask_monitor.diagnostics import EXCLUDED_PATHS, EXCLUDED_URLS, excluded_by, report
from otel_flask_monitor.dispatch import FailureReporter, RecordDispatcher
from otel_flask_monitor.instrumentation_guard import is_own_path, wsgi_prefix
from otel_flask_monitor.record import ExceptionInfo, RequestRecord
from otel_flask_monitor.redaction import Redactor, redact_span_headers, truncate, truncate_middle

_logger = logging.getLogger("otel_flask_monitor")

ENVIRON_KEY: Final = "otel_flask_monitor.in_flight"

# Span attributes set by the instrumentation that carry the raw query string; overwritten redacted.
_QUERY_BEARING_SPAN_ATTRIBUTES: Final = ("url.query", "http.target", "http.url", "url.full")


class _InFlight:
    __slots__ = (
        "content_type",
        "exception",
        "query",
        "response_size",
        "span_seen",
        "start_cpu_ns",
        "start_ns",
        "status_code",
        "trace_id",
    )

    def __init__(self, query: str, span_seen: bool) -> None:
        self.start_ns = time.perf_counter_ns()
        self.start_cpu_ns = time.thread_time_ns()
        self.query = query
        self.span_seen = span_seen
        self.trace_id: str | None = None
        self.status_code: int | None = None
        self.response_size: int | None = None
        self.content_type: str | None = None
        self.exception: BaseException | None = None


def current_trace_id() -> str | None:
    context = trace.get_current_span().get_span_context()
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

    def register(self, app: Flask) -> None:
        """Place the hooks so every response is seen, whatever the app registered first.

        Flask stops at the first ``before_request`` function that answers (an auth check's 401):
        the Flask instrumentation's (which opens the span) goes first, ours right after it, ahead
        of the app's own, even when the app registered its hooks before being instrumented.
        ``after_request`` functions run in reverse: ours goes first in the list so it runs last
        and records the final status. ``teardown_request`` is appended so it runs before the
        instrumentation's, which ends the span.
        """
        before = app.before_request_funcs.setdefault(None, [])
        instrumentation = [f for f in before if _is_flask_instrumentation(f)]
        before[:] = [*instrumentation, self.before_request, *(f for f in before if f not in instrumentation)]
        app.after_request_funcs.setdefault(None, []).insert(0, self.after_request)
        app.teardown_request(self.teardown_request)
        got_request_exception.connect(self.on_exception, app)

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
            current = _current_request()
            raw_query = current.query_string
            limit = self._settings.max_attribute_length
            query = self._redactor.query(raw_query, limit) if raw_query else ""
            span = trace.get_current_span()
            span_seen = span.is_recording()
            if span_seen:
                # Excluded paths too: exclusion stops the record, never the redaction of the span.
                self._sanitize_span(span, current, query)
            if not self.is_excluded(current):
                current.environ[ENVIRON_KEY] = _InFlight(query, span_seen)
        except Exception:
            self._failures.report("before_request hook")

    def _sanitize_span(self, span: Span, current: Request, query: str) -> None:
        """The instrumentation copies the raw query string, target, user agent and host onto the span:
        replace the query redacted, and cut every string at the limit the record's obey."""
        if current.url_rule is None:
            # Without a route template the semantic conventions name the span by the method alone
            # (unknown methods: "HTTP"); the instrumentation's raw path would make one span name per
            # URL, a scanner's paths in the trace backend's index.
            span.update_name(current.method if current.method in KNOWN_METHODS else "HTTP")
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

    def _span_opened_late(self, in_flight: _InFlight, current: Request) -> None:
        """The instrumentation's hooks run after ours: the app was instrumented after the monitor."""
        span = trace.get_current_span()
        if not span.is_recording():
            return
        self._sanitize_span(span, current, in_flight.query)
        redact_span_headers(span, self._redactor)
        if not self._warned_hook_order:
            self._warned_hook_order = True
            report("instrumented_after_monitor")
            _logger.warning(
                "otel_flask_monitor: the Flask instrumentation was applied to this app after "
                "FlaskMonitor(app), so its span ends before the monitor's teardown and per-request "
                "log records carry no trace id; instrument the app first, or let the monitor do it "
                "(instrument_flask=True)"
            )

    def after_request(self, response: Response) -> Response:
        try:
            in_flight = request.environ.get(ENVIRON_KEY)
            if in_flight is None:
                return response
            in_flight.status_code = response.status_code
            in_flight.response_size = None if response.is_streamed else response.content_length
            in_flight.content_type = response.content_type
            if not in_flight.span_seen:
                self._span_opened_late(in_flight, _current_request())
            in_flight.trace_id = current_trace_id()
            header = self._settings.trace_id_header
            if header and in_flight.trace_id:
                response.headers[header] = in_flight.trace_id
        except Exception:
            self._failures.report("after_request hook")
        return response

    def on_exception(self, sender: Flask, exception: BaseException, **_: Any) -> None:
        try:
            in_flight = request.environ.get(ENVIRON_KEY)
            if in_flight is not None:
                in_flight.exception = exception
        except Exception:
            self._failures.report("exception hook")

    def teardown_request(self, exc: BaseException | None) -> None:
        try:
            # Before the instrumentation's teardown ends the span, after it captured response headers.
            redact_span_headers(trace.get_current_span(), self._redactor)
            in_flight = request.environ.pop(ENVIRON_KEY, None)
            if in_flight is None:
                return
            record = self._build_record(in_flight, exc)
            self._dispatcher.dispatch(record)
        except Exception:
            self._failures.report("teardown_request hook")

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
        return RequestRecord(
            method=truncate(current.method, 32),
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
            trace_id=in_flight.trace_id or current_trace_id(),
            exception=_exception_info(raised, teardown_exc is not None, settings) if raised else None,
            captured_headers=captured,
        )


def _current_request() -> Request:
    # One lookup through the context-local proxy instead of one per attribute read.
    current: Request = request._get_current_object()  # type: ignore[attr-defined]
    return current


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
