"""The standard ``OTEL_*`` variables the monitor reads the way the SDK does: SDK switch, exporters, OTLP.

Only reading: the exporters read the remaining variables (headers, certificates, timeouts) themselves.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Final

from otel_flask_monitor.config import ConfigError
from otel_flask_monitor.redaction import without_userinfo

SIGNALS: Final = ("traces", "logs", "metrics")
_DEFAULT_PORTS: Final = {"grpc": 4317, "http/protobuf": 4318}
_HTTP_PATHS: Final = {"traces": "/v1/traces", "logs": "/v1/logs", "metrics": "/v1/metrics"}


def sdk_disabled(environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def _env(*names: str, default: str = "") -> str:
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return default


def otlp_protocol(signal: str) -> str:
    protocol = _env(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
    protocol = protocol or "http/protobuf"
    if protocol not in _DEFAULT_PORTS:
        raise ConfigError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported: use 'grpc' or 'http/protobuf'"
        )
    return protocol


def otlp_endpoint(signal: str) -> str:
    """The URL the signal's OTLP exporter sends to, resolved the way the exporters resolve it, for
    display: without the ``user:password@`` an endpoint may carry (health JSON, outage warning, demo).
    The exporters read the variables themselves, credentials included."""
    protocol = otlp_protocol(signal)
    specific = _env(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT")
    if specific:
        return without_userinfo(specific)
    base = _env("OTEL_EXPORTER_OTLP_ENDPOINT", default=f"http://localhost:{_DEFAULT_PORTS[protocol]}")
    if protocol == "grpc":
        return without_userinfo(base)
    return without_userinfo(base.rstrip("/") + _HTTP_PATHS[signal])


def exporter_names(signal: str) -> list[str]:
    raw = _env(f"OTEL_{signal.upper()}_EXPORTER", default="otlp")
    return [name.strip().lower() for name in raw.split(",") if name.strip()]
