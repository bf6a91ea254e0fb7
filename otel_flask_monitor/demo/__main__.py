"""Serves the shop demo (threaded werkzeug) and says where its telemetry goes.

    python -m otel_flask_monitor.demo [--host H] [--port P] [--traffic [SECONDS]]

Telemetry goes wherever the standard ``OTEL_*`` variables say (by default OTLP/HTTP to localhost:4318).
The demo says once, at start, where that is and whether anything answers there; with no Collector the
app, the dashboard, health and stats work the same and the telemetry is dropped. The explanation is the
monitor's own diagnostics list (``/monitoring/health``), so the terminal and the page say the same thing.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from flask import Flask

from otel_flask_monitor import get_state
from otel_flask_monitor.demo import traffic
from otel_flask_monitor.demo.app import create_app
from otel_flask_monitor.demo.traffic import REQUESTS_PER_SECOND
from otel_flask_monitor.diagnostics import Finding
from otel_flask_monitor.otel_env import SIGNALS, exporter_names, otlp_endpoint, otlp_protocol, sdk_disabled

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 5001
REACHABILITY_TIMEOUT_SECONDS: Final = 0.3
WRAP_COLUMNS: Final = 100
# Hosts whose server --traffic can reach at 127.0.0.1 (a wildcard bind includes it).
TRAFFIC_CAPABLE_HOSTS: Final = frozenset({"127.0.0.1", "localhost", "0.0.0.0", ""})  # noqa: S104

LOCUSTFILE: Final = Path(__file__).resolve().parents[2] / "loadtest" / "locustfile.py"
# (options, user class) of the README's three load scenarios.
LOCUST_SCENARIOS: Final = (
    ("-u 10 -r 2 -t 60s", ""),
    ("-u 20 -r 5 -t 30s", " HighLoadTester"),
    ("-u 5 -r 1 -t 30s", " InvalidRequestTester"),
)

_DEFAULT_PORT_BY_SCHEME: Final = {"http": 80, "https": 443}


def endpoint_address(url: str, protocol: str) -> tuple[str, int] | None:
    """host and port an OTLP endpoint URL points at (gRPC endpoints may come without a scheme)."""
    try:
        parts = urlsplit(url if "://" in url else "//" + url)
        port = parts.port
    except ValueError:  # an unclosed IPv6 bracket, a port that is no number
        return None
    if not parts.hostname:
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


@dataclass(frozen=True, slots=True)
class SignalProbe:
    """Where one signal goes, and what the start-up check found there."""

    signal: str
    line: str
    unreachable: str | None = None
    """Why nothing will take this signal, when the check found nothing listening."""


def probe_telemetry(reachable: Callable[[tuple[str, int]], bool] = is_reachable) -> list[SignalProbe]:
    """One entry per signal: where it is exported and whether the endpoint accepts connections.

    Reads the same ``OTEL_*`` variables, through the same helpers, as the monitor's provider set-up.
    """
    if sdk_disabled():
        return []
    answers: dict[tuple[str, int], bool] = {}  # one connection attempt per endpoint, not per signal
    probes = []
    for signal_name in SIGNALS:
        exporters = exporter_names(signal_name)
        if "otlp" not in exporters:
            setting = f"OTEL_{signal_name.upper()}_EXPORTER={','.join(exporters)}"
            probes.append(SignalProbe(signal_name, f"{signal_name:<8} not exported over OTLP ({setting})"))
            continue
        try:
            protocol = otlp_protocol(signal_name)
            url = otlp_endpoint(signal_name)
        except ValueError as error:
            probes.append(SignalProbe(signal_name, f"{signal_name:<8} misconfigured: {error}"))
            continue
        # otlp_endpoint leaves out user info: credentials in the endpoint never reach the terminal.
        line = f"{signal_name:<8} -> {url} (OTLP {protocol}): "
        address = endpoint_address(url, protocol)
        if address is None:
            probes.append(SignalProbe(signal_name, line + "not a usable endpoint URL"))
            continue
        if address not in answers:
            answers[address] = reachable(address)
        if answers[address]:
            probes.append(SignalProbe(signal_name, line + "reachable"))
        else:
            unreachable = f"nothing accepts connections at {address[0]}:{address[1]}"
            probes.append(SignalProbe(signal_name, line + "nothing listening", unreachable))
    return probes


def locustfile_path() -> str | None:
    """The scenarios' file as the user can type it (relative to the working directory when inside it);
    None when the package runs from an install without the repository around it."""
    if not LOCUSTFILE.exists():
        return None
    try:
        return str(LOCUSTFILE.relative_to(Path.cwd()))
    except ValueError:
        return str(LOCUSTFILE)


def start_message(
    *,
    base_url: str,
    prefix: str,
    probes: Sequence[SignalProbe],
    findings: Sequence[Finding],
    traffic_seconds: float | None,
    locustfile: str | None,
) -> str:
    """What the demo prints once at start: where things are, what is missing and why, how to drive it."""
    lines = [
        "otel-flask-monitor shop demo",
        f"  shop API    {base_url}/api/products",
        f"  dashboard   {base_url}{prefix}/dashboard   (JSON: {prefix}/health, {prefix}/stats)",
        "",
        "telemetry (from the standard OTEL_* variables)",
    ]
    if probes:
        lines += [f"  {probe.line}" for probe in probes]
    else:
        lines.append("  disabled (OTEL_SDK_DISABLED=true)")
    lines += ["", f'diagnostics (the same list as "diagnostics" in {prefix}/health)']
    if not findings:
        lines.append("  none")
    for item in findings:
        lines.append(f"  {item.code} ({item.severity})")
        lines += textwrap.wrap(item.message, WRAP_COLUMNS, initial_indent="    ", subsequent_indent="    ")
        lines += textwrap.wrap(
            f"Fix: {item.fix}", WRAP_COLUMNS, initial_indent="    ", subsequent_indent="         "
        )
    lines += ["", "traffic"]
    if traffic_seconds is None:
        lines.append(
            "  built in: restart with --traffic for a light request mix from 127.0.0.1 "
            f"({traffic.DEFAULT_SECONDS / 60:g} min)"
        )
    else:
        lines.append(
            f"  built in: on, about {REQUESTS_PER_SECOND:g} requests/s from 127.0.0.1 for "
            f"{traffic_seconds / 60:g} min (left out of the access log)"
        )
    where = "" if locustfile else ", from a clone of the repository"
    lines.append(f"  Locust (pip install locust{where}), one scenario per command:")
    commands = locust_commands(base_url, locustfile or "loadtest/locustfile.py")
    lines += [f"    {command}" for command in commands]
    return "\n".join(lines)


def locust_commands(base_url: str, locustfile: str) -> list[str]:
    """The three load scenarios of loadtest/locustfile.py, pointed at this demo (as in the README)."""
    return [
        f"locust -f {locustfile} --headless {options} --host {base_url}{user_class}"
        for options, user_class in LOCUST_SCENARIOS
    ]


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
    parser.add_argument(
        "--traffic",
        type=float,
        nargs="?",
        const=traffic.DEFAULT_SECONDS,
        default=None,
        metavar="SECONDS",
        help=f"send the demo a light request mix from 127.0.0.1 (about {REQUESTS_PER_SECOND:g} requests/s) "
        f"for SECONDS (default {traffic.DEFAULT_SECONDS:g}), so the dashboard has something to show",
    )
    arguments = parser.parse_args(argv)
    if arguments.port is None:
        raw_port = environ.get("PORT", "").strip()
        try:
            arguments.port = int(raw_port) if raw_port else DEFAULT_PORT
        except ValueError:
            parser.error(f"PORT must be a port number, got {raw_port!r}")
    if arguments.traffic is not None:
        if not arguments.traffic > 0:
            parser.error(f"--traffic takes a positive number of seconds, got {arguments.traffic:g}")
        if arguments.host not in TRAFFIC_CAPABLE_HOSTS:
            parser.error(
                f"--traffic talks to 127.0.0.1 only; bind --host 127.0.0.1 or 0.0.0.0, not {arguments.host}"
            )
    return arguments


def note_unreachable(app: Flask, probes: Sequence[SignalProbe]) -> None:
    """Tell the monitor what the start-up check found, so its export state (and the dashboard) says
    "not connected" from the first second; the start message has told the user, so no warning line."""
    health = get_state(app).telemetry.health
    if not health.configured:
        return  # the exporters are not the monitor's: it reports nothing about them
    for probe in probes:
        if probe.unreachable is not None:
            health.note_unreachable(probe.signal, f"{probe.unreachable} (checked at start)")


def main(argv: Sequence[str] | None = None) -> None:
    arguments = parse_arguments(argv, os.environ)
    app = create_app()
    state = get_state(app)
    probes = probe_telemetry()
    note_unreachable(app, probes)
    message = start_message(
        base_url=f"http://{browsable_host(arguments.host)}:{arguments.port}",
        prefix=state.settings.url_prefix,
        probes=probes,
        findings=state.diagnostics.findings(at_start=True),
        traffic_seconds=arguments.traffic,
        locustfile=locustfile_path(),
    )
    print(message, flush=True)
    # SIGTERM (docker stop, systemd) would end the process without running exit handlers, losing
    # the telemetry still queued; turning it into a normal exit lets the monitor flush it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if arguments.traffic is not None:
        traffic.start(arguments.port, arguments.traffic)
    # The reloader would run this module twice (two banners, two sets of exporters) and the debugger
    # executes code for whoever reaches the port: neither belongs in a demo that may bind 0.0.0.0.
    app.run(
        host=arguments.host,
        port=arguments.port,
        threaded=True,
        debug=False,
        use_reloader=False,
        request_handler=traffic.RequestHandler,
    )


if __name__ == "__main__":
    main()
