"""``python -m otel_flask_monitor.demo [--host H] [--port P]``: serve the shop demo (threaded werkzeug).

Telemetry goes wherever the standard ``OTEL_*`` variables say (by default OTLP/HTTP to localhost:4318).
The demo prints once, at start, where that is and whether anything answers there: with no Collector
running the app works the same and simply drops its telemetry.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Final
from urllib.parse import urlsplit

from otel_flask_monitor import get_state
from otel_flask_monitor.demo.app import create_app
from otel_flask_monitor.telemetry import exporter_names, otlp_endpoint, otlp_protocol, sdk_disabled

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 5001
SIGNALS: Final = ("traces", "logs", "metrics")
REACHABILITY_TIMEOUT_SECONDS: Final = 0.3

_DEFAULT_PORT_BY_SCHEME: Final = {"http": 80, "https": 443}


def endpoint_address(url: str, protocol: str) -> tuple[str, int] | None:
    """host and port an OTLP endpoint URL points at (gRPC endpoints may come without a scheme)."""
    parts = urlsplit(url if "://" in url else "//" + url)
    if not parts.hostname:
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    if port is None:
        port = 4317 if protocol == "grpc" else _DEFAULT_PORT_BY_SCHEME.get(parts.scheme, 80)
    return parts.hostname, port


def is_reachable(address: tuple[str, int], timeout_seconds: float = REACHABILITY_TIMEOUT_SECONDS) -> bool:
    try:
        with socket.create_connection(address, timeout=timeout_seconds):
            return True
    except OSError:
        return False


def describe_telemetry(reachable: Callable[[tuple[str, int]], bool] = is_reachable) -> list[str]:
    """One line per signal: where it is exported and whether the endpoint accepts connections.

    Reads the same ``OTEL_*`` variables, through the same helpers, as the monitor's provider set-up.
    """
    if sdk_disabled():
        return ["telemetry: disabled (OTEL_SDK_DISABLED=true)"]
    answers: dict[tuple[str, int], bool] = {}  # one connection attempt per endpoint, not per signal
    lines = []
    for signal_name in SIGNALS:
        exporters = exporter_names(signal_name)
        if "otlp" not in exporters:
            setting = f"OTEL_{signal_name.upper()}_EXPORTER={','.join(exporters)}"
            lines.append(f"{signal_name:<8} not exported over OTLP ({setting})")
            continue
        try:
            protocol = otlp_protocol(signal_name)
            url = otlp_endpoint(signal_name)
        except ValueError as error:
            lines.append(f"{signal_name:<8} misconfigured: {error}")
            continue
        address = endpoint_address(url, protocol)
        if address is None:
            lines.append(f"{signal_name:<8} -> {url} (OTLP {protocol}): not a usable endpoint URL")
            continue
        if address not in answers:
            answers[address] = reachable(address)
        status = (
            "reachable"
            if answers[address]
            else f"NOT reachable (nothing accepts connections at {address[0]}:{address[1]}); "
            "the app works normally and drops this telemetry"
        )
        lines.append(f"{signal_name:<8} -> {url} (OTLP {protocol}): {status}")
    return lines


def browsable_host(host: str) -> str:
    if host in {"", "0.0.0.0", "::"}:  # noqa: S104 - maps a wildcard bind to a URL a browser can open
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def parse_arguments(argv: Sequence[str] | None, environ: Mapping[str, str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m otel_flask_monitor.demo",
        description="Serve the otel-flask-monitor shop demo (threaded werkzeug server, no reloader).",
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"interface to bind (default {DEFAULT_HOST})")
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help=f"port to listen on (default: $PORT, else {DEFAULT_PORT})",
    )
    arguments = parser.parse_args(argv)
    if arguments.port is None:
        raw_port = environ.get("PORT", "").strip()
        try:
            arguments.port = int(raw_port) if raw_port else DEFAULT_PORT
        except ValueError:
            parser.error(f"PORT must be a port number, got {raw_port!r}")
    return arguments


def main(argv: Sequence[str] | None = None) -> None:
    arguments = parse_arguments(argv, os.environ)
    app = create_app()
    base_url = f"http://{browsable_host(arguments.host)}:{arguments.port}"
    prefix = get_state(app).settings.url_prefix
    banner = [
        f"shop demo:  {base_url}/api/products",
        f"dashboard:  {base_url}{prefix}/dashboard",
        *(f"telemetry:  {line}" for line in describe_telemetry()),
    ]
    print("\n".join(banner), flush=True)
    # SIGTERM (docker stop, systemd) would end the process without running exit handlers, losing
    # the telemetry still queued; turning it into a normal exit lets the monitor flush it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # The reloader would run this module twice (two banners, two sets of exporters) and the debugger
    # executes code for whoever reaches the port: neither belongs in a demo that may bind 0.0.0.0.
    app.run(host=arguments.host, port=arguments.port, threaded=True, debug=False, use_reloader=False)


if __name__ == "__main__":
    main()
