"""One frozen settings object, resolved as: keyword argument > ``app.config`` > environment > default.

Every option has one name in three spellings: the keyword argument (``excluded_paths``), and the
``app.config`` key and environment variable, which are the same string
(``OTEL_FLASK_MONITOR_EXCLUDED_PATHS``). ``OPTIONS`` drives parsing and the configuration reference
in ``docs/configuration.md`` (a test keeps the two in step).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Final

from flask import Request

from otel_flask_monitor.log_policy import (
    DEFAULT_LOG_ATTRIBUTES,
    parse_log_attributes,
    parse_sample_ratio,
    parse_slow_request_ms,
)
from otel_flask_monitor.objective_declarations import parse_objectives
from otel_flask_monitor.objectives import NO_OBJECTIVES, ObjectivePolicy
from otel_flask_monitor.record import MAX_CAPTURED_HEADERS, MAX_HEADER_NAME_BYTES
from otel_flask_monitor.redaction import DEFAULT_REDACTED_HEADERS, DEFAULT_REDACTED_QUERY_PARAMS, utf8_length
from otel_flask_monitor.trace_links import check_trace_url_template

AccessCheck = Callable[[Request], bool]

ENV_PREFIX: Final = "OTEL_FLASK_MONITOR_"

__all__ = ["DEFAULT_REDACTED_HEADERS", "DEFAULT_REDACTED_QUERY_PARAMS"]  # defaults kept in redaction.py


class ConfigError(ValueError):
    """A setting has a value the monitor cannot use; the message names the setting."""


def _parse_bool(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off", ""}:
        return False
    raise ConfigError(f"{name}: expected a boolean (true/false), got {value!r}")


def _parse_int(name: str, value: object) -> int:
    try:
        number = int(str(value).strip()) if not isinstance(value, int) else value
    except ValueError:
        raise ConfigError(f"{name}: expected an integer, got {value!r}") from None
    if number <= 0:
        raise ConfigError(f"{name}: expected a positive integer, got {value!r}")
    return number


def _parse_float(name: str, value: object) -> float:
    try:
        number = float(str(value).strip()) if not isinstance(value, (int, float)) else float(value)
    except ValueError:
        raise ConfigError(f"{name}: expected a number, got {value!r}") from None
    if number <= 0:
        raise ConfigError(f"{name}: expected a positive number, got {value!r}")
    return number


def _parse_str_tuple(name: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if isinstance(value, Iterable):
        return tuple(str(part) for part in value)
    raise ConfigError(f"{name}: expected a comma-separated string or a list of strings, got {value!r}")


def _parse_header_names(name: str, value: object) -> tuple[str, ...]:
    names = _parse_str_tuple(name, value)
    if len(names) > MAX_CAPTURED_HEADERS:
        raise ConfigError(f"{name}: at most {MAX_CAPTURED_HEADERS} headers can be captured, got {len(names)}")
    for header in names:
        if not header or utf8_length(header) > MAX_HEADER_NAME_BYTES:
            raise ConfigError(
                f"{name}: {header!r} is not a header name of 1 to {MAX_HEADER_NAME_BYTES} bytes"
            )
    return names


def _parse_regex_tuple(name: str, value: object) -> tuple[str, ...]:
    patterns = _parse_str_tuple(name, value)
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as error:
            raise ConfigError(f"{name}: {pattern!r} is not a valid regular expression: {error}") from None
    return patterns


def _parse_host_names(name: str, value: object) -> tuple[str, ...]:
    return tuple(part.lower().rstrip(".") for part in _parse_str_tuple(name, value))


def _parse_optional_str(name: str, value: object) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _parse_prefix(name: str, value: object) -> str:
    text = str(value).strip().rstrip("/")
    if not text.startswith("/"):
        raise ConfigError(f"{name}: must start with '/', got {value!r}")
    return text


def _parse_access_check(name: str, value: object) -> AccessCheck | None:
    if value is None or callable(value):
        return value
    raise ConfigError(f"{name}: expected a callable taking the request and returning bool, got {value!r}")


def _parse_trace_url(name: str, value: object) -> str | None:
    text = _parse_optional_str(name, value)
    return None if text is None else check_trace_url_template(name, text, ConfigError)


def _declared(parse: Callable[[str, object], Any]) -> Callable[[str, object], Any]:
    """A parser of a module below this one, whose ValueError becomes a ConfigError (it names the setting)."""

    def parse_setting(name: str, value: object) -> Any:
        try:
            return parse(name, value)
        except ValueError as error:
            raise ConfigError(str(error)) from None

    return parse_setting


@dataclass(frozen=True, slots=True)
class MonitorSettings:
    """The resolved settings of one app's monitor. Build it with :func:`resolve_settings`.

    The one place each option's default is written; :data:`OPTIONS` says how each is parsed.
    """

    service_name: str | None = None
    excluded_paths: tuple[str, ...] = ()
    url_prefix: str = "/monitoring"
    dashboard_enabled: bool = True
    access_token: str | None = field(default=None, repr=False)
    access_check: AccessCheck | None = None
    loopback_hosts: tuple[str, ...] = ()
    session_secret: str | None = field(default=None, repr=False)
    login_session_seconds: int = 43200
    redacted_headers: tuple[str, ...] = DEFAULT_REDACTED_HEADERS
    redacted_query_params: tuple[str, ...] = DEFAULT_REDACTED_QUERY_PARAMS
    captured_headers: tuple[str, ...] = ()
    max_attribute_length: int = 1024
    max_stacktrace_length: int = 8192
    trace_id_header: str | None = "X-Trace-Id"
    json_errors: bool = True
    emit_logs: bool = True
    log_attributes: frozenset[str] = DEFAULT_LOG_ATTRIBUTES
    log_sample_ratio: float = 1.0
    slow_request_ms: float = 1000.0
    enrich_spans: bool = False
    setup_telemetry: bool = True
    instrument_flask: bool = True
    flush_timeout_seconds: float = 5.0
    window_seconds: int = 900
    slot_seconds: int = 10
    max_routes: int = 200
    recent_errors: int = 50
    trace_url_template: str | None = None
    multiprocess_dir: str | None = None
    objectives: ObjectivePolicy = NO_OBJECTIVES


_DEFAULTS: Final = {spec.name: spec.default for spec in fields(MonitorSettings)}


@dataclass(frozen=True, slots=True)
class Option:
    """How one field of :class:`MonitorSettings` is read from keyword, ``app.config`` and environment."""

    name: str
    parse: Callable[[str, object], Any]
    doc: str
    from_env: bool = True

    @property
    def key(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def default(self) -> Any:
        """The field's default in :class:`MonitorSettings`, where every default is declared (once)."""
        return _DEFAULTS[self.name]


OPTIONS: Final[tuple[Option, ...]] = (
    Option(
        "service_name",
        _parse_optional_str,
        "`service.name` of the resource when the monitor sets up telemetry. Unset: `OTEL_SERVICE_NAME` "
        "or `OTEL_RESOURCE_ATTRIBUTES`, else the Flask app's name.",
    ),
    Option(
        "excluded_paths",
        _parse_regex_tuple,
        "Regular expressions (re.search on the path); matching requests produce no record, log or "
        "aggregate. `OTEL_PYTHON_FLASK_EXCLUDED_URLS` and the monitor's own routes are always excluded.",
    ),
    Option("url_prefix", _parse_prefix, "Where the dashboard and JSON routes are mounted."),
    Option("dashboard_enabled", _parse_bool, "Mount the dashboard, health and stats routes."),
    Option(
        "access_token",
        _parse_optional_str,
        "Bearer token that opens the monitoring routes to non-loopback clients.",
    ),
    Option(
        "access_check",
        _parse_access_check,
        "Callable `(request) -> bool` deciding access to the monitoring routes (keyword or app.config).",
        from_env=False,
    ),
    Option(
        "loopback_hosts",
        _parse_host_names,
        "Host names, besides `localhost` (and its subdomains), `127.0.0.1` and `[::1]`, under which "
        "loopback clients may open the monitoring routes without a token (any port). Requests naming "
        "another host are refused so that a web page cannot reach the routes through DNS rebinding.",
    ),
    Option(
        "session_secret",
        _parse_optional_str,
        "Secret the browser-login cookie's key is derived from, with `access_token`. Unset: the app's "
        "`SECRET_KEY`. Changing either signs every browser out; workers and replicas need the same.",
    ),
    Option(
        "login_session_seconds",
        _parse_int,
        "How long a browser login at `<url_prefix>/login` (with `access_token` set) stays valid.",
    ),
    Option(
        "redacted_headers",
        _parse_str_tuple,
        "Header names (case-insensitive) whose values are replaced by `[REDACTED]` wherever captured.",
    ),
    Option(
        "redacted_query_params",
        _parse_regex_tuple,
        "Regular expressions (case-insensitive re.search) on query parameter names whose values are "
        "replaced by `[REDACTED]` in `url.query` (record, log, span).",
    ),
    Option(
        "captured_headers",
        _parse_header_names,
        "Request header names to record as `http.request.header.<name>` (opt-in; redaction applies); "
        "at most 32, each name at most 64 bytes.",
    ),
    Option(
        "max_attribute_length",
        _parse_int,
        "Longest string attribute value sent, in UTF-8 bytes; longer values are cut (never inside a "
        "character) and end in `...`.",
    ),
    Option(
        "max_stacktrace_length",
        _parse_int,
        "Longest `exception.stacktrace` sent, in UTF-8 bytes: head and tail are kept around a marker. "
        "Whatever these limits, a log record's attributes stay within 32 KiB, half of Loki's 64 KB "
        "structured-metadata limit per line (the longest values are cut further when needed).",
    ),
    Option(
        "trace_id_header",
        _parse_optional_str,
        "Response header carrying the trace id; empty disables it.",
    ),
    Option(
        "json_errors",
        _parse_bool,
        "Answer unhandled exceptions with a JSON 500 carrying the trace id, unless an error handler of "
        "the app or the request's blueprint (500, `InternalServerError`, `HTTPException`, `Exception`, "
        "registered before or after the monitor) would answer it: then that handler does.",
    ),
    Option("emit_logs", _parse_bool, "Emit one OTel log record per request."),
    Option(
        "log_attributes",
        _declared(parse_log_attributes),
        "The log record's attributes: `default` (what the documented queries and dashboards read), "
        "`full`, or a list of names, which may include `default` ([log-schema.md](log-schema.md)).",
    ),
    Option(
        "log_sample_ratio",
        _declared(parse_sample_ratio),
        "Share of requests logged, in (0, 1], chosen by trace id as `TraceIdRatioBased` does; 5xx, "
        "exceptions and slow requests always are; each record's `sample_rate` weighs it "
        "([queries.md](queries.md#sampled-logs)).",
    ),
    Option(
        "slow_request_ms",
        _declared(parse_slow_request_ms),
        "Requests taking at least this many milliseconds are logged whatever `log_sample_ratio`.",
    ),
    Option(
        "enrich_spans",
        _parse_bool,
        "Also add to the server span what the instrumentation does not record (body sizes, content "
        "type, `duration_ms`, `cpu_ms`, `error.type` where it sets none, captured headers, "
        "`response_streamed`), never replacing what it set. Off: those figures are in the log record "
        "only, which carries the span's ids ([log-schema.md](log-schema.md#the-server-span)).",
    ),
    Option(
        "setup_telemetry",
        _parse_bool,
        "Configure tracer/logger/meter providers from `OTEL_*` variables when none is configured yet.",
    ),
    Option(
        "instrument_flask",
        _parse_bool,
        "Call `FlaskInstrumentor().instrument_app(app)` when the app is not instrumented yet.",
    ),
    Option(
        "flush_timeout_seconds",
        _parse_float,
        "At interpreter exit, how long queued telemetry may take to flush before it is dropped.",
    ),
    Option("window_seconds", _parse_int, "Length of the rolling window of the in-memory aggregates."),
    Option("slot_seconds", _parse_int, "Width of one slot of the rolling window."),
    Option("max_routes", _parse_int, "Most (method, route) pairs tracked; the rest share `<other>`."),
    Option("recent_errors", _parse_int, "How many recent errors the dashboard keeps."),
    Option("trace_url_template", _parse_trace_url, "Link each trace id to this http(s) URL `{trace_id}`."),
    Option(
        "multiprocess_dir",
        _parse_optional_str,
        "Directory the workers of a pre-fork server (gunicorn) share so that `/monitoring/stats` and the "
        "dashboard show the totals of all workers; `auto`: a private one per server under the temp "
        "directory. Unset: each process shows its own (docs/dashboard.md).",
    ),
    Option(
        "objectives",
        _declared(parse_objectives),
        "Objectives (SLOs) per route: a mapping of route pattern (or `default`) to a latency and/or "
        "availability objective; the environment variable and app.config take its JSON "
        "(docs/objectives.md).",
    ),
)

_OPTIONS_BY_NAME: Final = {option.name: option for option in OPTIONS}


def _check_in_step() -> None:
    declared = {f.name for f in fields(MonitorSettings)}
    if declared != set(_OPTIONS_BY_NAME):
        raise AssertionError(f"OPTIONS and MonitorSettings differ: {declared ^ set(_OPTIONS_BY_NAME)}")


_check_in_step()


def resolve_settings(
    overrides: Mapping[str, Any],
    app_config: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> MonitorSettings:
    """Resolve every option with the documented precedence; unknown keyword arguments are an error."""
    unknown = set(overrides) - set(_OPTIONS_BY_NAME)
    if unknown:
        raise ConfigError(f"unknown FlaskMonitor option(s): {', '.join(sorted(unknown))}")
    app_config = app_config or {}
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for option in OPTIONS:
        if option.name in overrides:
            raw, source = overrides[option.name], option.name
        elif option.key in app_config:
            raw, source = app_config[option.key], f"app.config[{option.key!r}]"
        elif option.from_env and option.key in environ:
            raw, source = environ[option.key], option.key
        else:
            continue  # the field's default
        values[option.name] = option.parse(source, raw)
    settings = MonitorSettings(**values)
    if settings.slot_seconds > settings.window_seconds:
        raise ConfigError(
            f"slot_seconds ({settings.slot_seconds}) must not exceed "
            f"window_seconds ({settings.window_seconds})"
        )
    return settings
