"""Why is there no data? The monitor's own answers, one stable code each.

:data:`CATALOGUE` is the registry: every code the monitor can report, with its severity, a one-line
explanation and the fix (docs/troubleshooting.md maps the same codes). Detection calls into it:

- the state of the process (environment, global providers, the Werkzeug reloader, a pre-fork master,
  the Collector never reached) is checked each time the list is read, which costs nothing per request;
- what only shows as requests flow is noted by the request hooks on the app's :class:`Diagnostics`
  (:meth:`~Diagnostics.note_excluded`, called only when the condition holds, never on an ordinary
  request);
- whether any request was recorded is read from the aggregates.

``/monitoring/health`` serves the list as ``diagnostics``; the dashboard shows it in a panel; the demo
prints it at start.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

from werkzeug.serving import is_running_from_reloader

from otel_flask_monitor._otel_compat import log_pipeline_gap
from otel_flask_monitor.config import MonitorSettings
from otel_flask_monitor.export_status import (
    FAILING,
    LOST,
    NEVER_REACHED,
    ExportHealth,
    SignalSnapshot,
    overall_connection,
)
from otel_flask_monitor.otel_env import SIGNALS, exporter_names, otlp_protocol, sdk_disabled
from otel_flask_monitor.process import PROCESS, ForkOrigin
from otel_flask_monitor.redaction import without_userinfo

Severity = Literal["info", "warning"]

_WHAT_IS_NOT_EXPORTED: Final = {"traces": "spans", "logs": "log records", "metrics": "metrics"}


@dataclass(frozen=True, slots=True)
class Finding:
    """One entry of the list. In :data:`CATALOGUE` the texts are templates naming the details a
    detection fills in (``{endpoint}``); :func:`finding` returns them filled."""

    code: str
    severity: Severity
    message: str
    fix: str

    def as_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


_ENTRIES: Final = (
    Finding(
        "sdk_disabled",
        "info",
        "OTEL_SDK_DISABLED=true switches the OpenTelemetry SDK off: no span, log record or metric is "
        "made or exported (the dashboard, health and stats work without it).",
        "Unset OTEL_SDK_DISABLED (or set it to false) and restart the app.",
    ),
    Finding(
        "exporter_disabled",
        "info",
        "{settings}: {what} are not exported, by that setting.",
        "Unset {variables} (the default is otlp) and restart the app, if you want them.",
    ),
    Finding(
        "no_log_exporter",
        "warning",
        "The per-request log records go nowhere: {gap}.",
        "Give the LoggerProvider a processor with an exporter (BatchLogRecordProcessor(OTLPLogExporter())), "
        "or let the monitor set up the providers (configure none before FlaskMonitor, keep "
        "setup_telemetry on); emit_logs=False if you do not want the records.",
    ),
    Finding(
        "collector_not_reached",
        "info",
        "No Collector has answered at {endpoint} since this process started: telemetry is dropped, the "
        "app is unaffected, and the dashboard, {prefix}/health and {prefix}/stats work without one.",
        "Start a Collector there (this project's `docker compose up` runs one with Loki, Tempo, Prometheus "
        "and Grafana), or set OTEL_EXPORTER_OTLP_ENDPOINT to the Collector you run.",
    ),
    Finding(
        "export_failing",
        "warning",
        "Telemetry export to {endpoint} is failing ({how}): items are dropped until it answers again; "
        "the app is unaffected.",
        "Check the Collector at that address (running? reachable from this host? its own log); export "
        "resumes by itself when it answers. The SDK's last message is in telemetry.last_error.",
    ),
    Finding(
        "reloader_parent",
        "info",
        "This process was started by the Werkzeug reloader (Flask debug mode). Its parent, pid "
        "{parent_pid}, only watches the source files and restarts this one: it serves no request, but it "
        "imported the app too, so whatever OpenTelemetry it set up exports there as another instance, "
        "and every reload replaces this process with a new one.",
        "Nothing to do in development: requests are monitored here. Set up telemetry where both "
        "processes run it (not behind a WERKZEUG_RUN_MAIN check); serve production without the reloader "
        "(gunicorn, or `flask run --no-reload`).",
    ),
    Finding(
        "preload_master",
        "info",
        "OpenTelemetry was set up in process {parent_pid}, the master this worker was forked from "
        "(gunicorn --preload, or opentelemetry-instrument on the master): {consequence}",
        "{fix}",
    ),
    Finding(
        "route_excluded",
        "info",
        "Requests excluded on purpose since start: {counts}.",
        "If you want to see them, narrow excluded_paths or OTEL_PYTHON_FLASK_EXCLUDED_URLS (regular "
        "expressions matched anywhere in the path or URL: anchor them with ^ and $).",
    ),
    Finding(
        "no_requests_seen",
        "info",
        "This process has recorded no request since it started (the monitor's own routes never count).",
        "Send a request to one of the app's routes. If you did and this stays, the request reached another "
        "process (see reloader_parent, preload_master) or another app, or it was excluded (route_excluded).",
    ),
)

CATALOGUE: Final = {entry.code: entry for entry in _ENTRIES}
"""Every code the monitor reports, in the order the list shows them (the most fundamental first)."""

_ORDER: Final = {code: index for index, code in enumerate(CATALOGUE)}

EXCLUDED_PATHS: Final = "excluded_paths"
EXCLUDED_URLS: Final = "OTEL_PYTHON_FLASK_EXCLUDED_URLS"
_EXCLUSION_EFFECT: Final = {
    EXCLUDED_PATHS: "no log record or dashboard figure; the span is still made",
    EXCLUDED_URLS: "no span, log record or dashboard figure",
}


def finding(code: str, *, severity: Severity | None = None, **details: str | int) -> Finding:
    """The registry's entry for ``code`` with ``details`` filled in."""
    template = CATALOGUE[code]
    return Finding(
        code=code,
        severity=severity or template.severity,
        message=template.message.format(**details),
        fix=template.fix.format(**details),
    )


# ---- process state ------------------------------------------------------------------------------


def _uses_grpc() -> bool:
    try:
        return any(otlp_protocol(signal) == "grpc" for signal in SIGNALS)
    except ValueError:
        return False


def _fork_finding(origin: ForkOrigin) -> Finding:
    if _uses_grpc():
        return finding(
            "preload_master",
            severity="warning",
            parent_pid=origin.parent_pid,
            consequence="OTLP over gRPC does not survive fork, so this worker's exports may hang or fail.",
            fix="Set up OpenTelemetry in gunicorn's post_fork hook (opentelemetry-python "
            "docs/examples/fork-process-model) or drop --preload; or export over HTTP "
            "(OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf).",
        )
    renewed = "the monitor renewed what it owns" if origin.monitor_owned else "the SDK restarts its threads"
    return finding(
        "preload_master",
        parent_pid=origin.parent_pid,
        consequence=f"{renewed} after fork and export works here, but the master, which serves no "
        "request, keeps a copy of the providers (and exports its own process metrics when the monitor "
        "set them up).",
        fix="Nothing needed. To keep the master out of the backend, drop --preload or set up "
        "OpenTelemetry in gunicorn's post_fork hook.",
    )


def endpoint_origin(endpoint: str) -> str:
    """``scheme://host:port`` of an endpoint URL, without path or user info (``user:password@`` never
    leaves the process); a gRPC endpoint without a scheme keeps its ``host:port``."""
    scheme, separator, rest = without_userinfo(endpoint).partition("://")
    address = (rest if separator else scheme).split("/", 1)[0]
    return f"{scheme}://{address}" if separator else address


def _endpoints(signals: list[SignalSnapshot], connections: tuple[str, ...]) -> str:
    """Where the signals in ``connections`` were sent: their common origin when they share one."""
    origins: list[str] = []
    for signal in signals:
        if signal.connection not in connections:
            continue
        origin = endpoint_origin(signal.endpoint)
        if origin not in origins:
            origins.append(origin)
    return ", ".join(origins)


def process_findings(settings: MonitorSettings, export: ExportHealth) -> list[Finding]:
    """What the process's state explains: checked at every read, cheap (environment and a few
    isinstance checks), so a fix made at run time (a processor added) shows at the next read."""
    found: list[Finding] = []
    if sdk_disabled():
        found.append(finding("sdk_disabled"))
    else:
        disabled = [signal for signal in SIGNALS if exporter_names(signal) == ["none"]]
        if disabled:
            variables = [f"OTEL_{signal.upper()}_EXPORTER" for signal in disabled]
            found.append(
                finding(
                    "exporter_disabled",
                    settings=", ".join(f"{variable}=none" for variable in variables),
                    what=" and ".join(_WHAT_IS_NOT_EXPORTED[signal] for signal in disabled),
                    variables=", ".join(variables),
                )
            )
        if settings.emit_logs and "logs" not in disabled:
            gap = log_pipeline_gap()
            if gap is not None:
                found.append(finding("no_log_exporter", gap=gap))
    signals = export.snapshot()
    connection = overall_connection(signals)
    if connection == NEVER_REACHED:
        endpoint = _endpoints(signals, (NEVER_REACHED,))
        found.append(finding("collector_not_reached", endpoint=endpoint, prefix=settings.url_prefix))
    elif connection == FAILING:
        failing = [s for s in signals if s.connection in (LOST, NEVER_REACHED)]
        how = (
            "it answered before and stopped"
            if any(s.connection == LOST for s in failing)
            else f"{', '.join(s.signal for s in failing)} never got through while other signals do"
        )
        found.append(finding("export_failing", endpoint=_endpoints(signals, (LOST, NEVER_REACHED)), how=how))
    if is_running_from_reloader():
        found.append(finding("reloader_parent", parent_pid=os.getppid()))
    if PROCESS.forked_from is not None:
        found.append(_fork_finding(PROCESS.forked_from))
    return found


# ---- one app's findings -------------------------------------------------------------------------


class Diagnostics:
    """One app's list: the process checks, what the hooks noted, and whether requests were seen."""

    def __init__(
        self, settings: MonitorSettings, export: ExportHealth, requests_seen: Callable[[], bool]
    ) -> None:
        self._settings = settings
        self._export = export
        self._requests_seen = requests_seen
        self._lock = threading.Lock()
        self._noted: dict[str, Finding] = {}
        self._excluded: dict[str, int] = {}

    def note(self, code: str) -> None:
        """Keep ``code`` in the list from now on (an event seen as requests flow)."""
        noted = finding(code)
        with self._lock:
            self._noted[code] = noted

    def note_excluded(self, source: str) -> None:
        with self._lock:
            self._excluded[source] = self._excluded.get(source, 0) + 1

    def findings(self, *, at_start: bool = False) -> list[Finding]:
        """The current list, most fundamental first. ``at_start``: leave out what only traffic can
        change (``no_requests_seen``), for a message printed before the server takes requests."""
        found = process_findings(self._settings, self._export)
        with self._lock:
            found.extend(self._noted.values())
            excluded = dict(self._excluded)
        if excluded:
            counts = "; ".join(
                f"{count} matched {source} ({_EXCLUSION_EFFECT[source]})"
                for source, count in excluded.items()
            )
            found.append(finding("route_excluded", counts=counts))
        if not at_start and not self._requests_seen():
            found.append(finding("no_requests_seen"))
        return sorted(found, key=lambda item: _ORDER[item.code])

    def as_list(self) -> list[dict[str, str]]:
        return [item.as_dict() for item in self.findings()]
