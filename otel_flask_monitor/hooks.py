"""The request lifecycle -> one per-request record.

Registered after the Flask instrumentation's own hooks, so the server span is current in all three
phases and its teardown (which ends the span) runs after ours. Every hook swallows its own failures:
the monitor must never change what the app answers.
"""

from __future__ import annotations

import os
import re
import time
import traceback
from typing import Any, Final
from urllib.parse import urlsplit

from flask import Flask, Request, Response, got_request_exception, request
from opentelemetry import trace
from opentelemetry.util.http import ExcludeList, get_excluded_urls

from otel_flask_monitor.config import MonitorSettings
from otel_flask_monitor.dispatch import FailureReporter, RecordDispatcher
from otel_flask_monitor.record import ExceptionInfo, RequestRecord
from otel_flask_monitor.redaction import Redactor, truncate, truncate_middle

ENVIRON_KEY: Final = "otel_flask_monitor.in_flight"

# Span attributes set by the instrumentation that carry the raw query string; overwritten redacted.
_QUERY_BEARING_SPAN_ATTRIBUTES: Final = ("url.query", "http.target", "http.url", "url.full")


class _InFlight:
    __slots__ = (
        "content_type",
        "exception",
        "query",
        "response_size",
        "start_cpu_ns",
        "start_ns",
        "status_code",
    )

    def __init__(self, query: str) -> None:
        self.start_ns = time.perf_counter_ns()
        self.start_cpu_ns = time.thread_time_ns()
        self.query = query
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
        self._own_prefix = settings.url_prefix

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
        got_request_exception.connect(self.on_exception, app, weak=False)

    def is_excluded(self, current: Request) -> bool:
        path = current.path
        if path == self._own_prefix or path.startswith(self._own_prefix + "/"):
            return True
        if self._excluded_paths is not None and self._excluded_paths.search(path):
            return True
        # The full URL is built only when OTEL_PYTHON_FLASK_EXCLUDED_URLS asks for it.
        return self._excluded_urls is not None and self._excluded_urls.url_disabled(current.url)

    def before_request(self) -> None:
        try:
            current = _current_request()
            if self.is_excluded(current):
                return
            raw_query = current.query_string
            query = (
                truncate(self._redactor.query(raw_query), self._settings.max_attribute_length)
                if raw_query
                else ""
            )
            current.environ[ENVIRON_KEY] = _InFlight(query)
            _sanitize_span(current, query, self._settings.max_attribute_length)
        except Exception:
            self._failures.report("before_request hook")

    def after_request(self, response: Response) -> Response:
        try:
            in_flight = request.environ.get(ENVIRON_KEY)
            if in_flight is None:
                return response
            in_flight.status_code = response.status_code
            in_flight.response_size = None if response.is_streamed else response.content_length
            in_flight.content_type = response.content_type
            header = self._settings.trace_id_header
            trace_id = current_trace_id() if header else None
            if header and trace_id:
                response.headers[header] = trace_id
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
            server_address=_server_address(current.host, limit),
            duration_ms=duration_ns / 1e6,
            cpu_ms=max(cpu_ns, 0) / 1e6,
            end_time_ns=time.time_ns(),
            trace_id=current_trace_id(),
            exception=_exception_info(raised, teardown_exc is not None, settings) if raised else None,
            captured_headers=captured,
        )


def _current_request() -> Request:
    # One lookup through the context-local proxy instead of one per attribute read.
    current: Request = request._get_current_object()  # type: ignore[attr-defined]
    return current


def _sanitize_span(current_request: Request, query: str, limit: int) -> None:
    """The instrumentation copies the raw query string, target, user agent and host onto the span:
    replace the query redacted, and cut every string at ``limit`` as the record's are."""
    span = trace.get_current_span()
    if not span.is_recording():
        return
    if current_request.url_rule is None:
        # Without a route template the semantic conventions name the span by the method alone; the
        # instrumentation's raw path would make one span name per URL (unbounded, and a scanner's
        # paths in the trace backend's index).
        span.update_name(truncate(current_request.method, 32))
    current = getattr(span, "attributes", None) or {}
    replaced: dict[str, str] = {}
    if query:
        for key in _QUERY_BEARING_SPAN_ATTRIBUTES:
            value = current.get(key)
            if key == "url.query":
                replaced[key] = query
            elif isinstance(value, str):
                replaced[key] = value.split("?", 1)[0] + "?" + query
    for key, value in current.items():
        if isinstance(value, str) and len(value) > limit and key not in replaced:
            replaced[key] = value
    for key, value in replaced.items():
        span.set_attribute(key, truncate(value, limit))


def _is_flask_instrumentation(function: object) -> bool:
    return str(getattr(function, "__module__", "")).startswith("opentelemetry.instrumentation.flask")


def _server_address(host: str, limit: int) -> str | None:
    try:
        hostname = urlsplit("//" + host).hostname
    except ValueError:
        return None
    return truncate(hostname, limit) if hostname else None


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
