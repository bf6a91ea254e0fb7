"""Process-wide state: what the monitor keeps once per process, and the one hook that renews it after fork.

Providers, the psutil sampler, the objective counter's instrument and the cross-worker aggregates
exist once per process, however many apps are monitored; every app's monitor uses the parts of
:data:`PROCESS`. A forked child (a gunicorn worker under ``--preload``, or a worker of a master that
ran ``opentelemetry-instrument``) inherits them in the state the parent's threads left them in:
:meth:`MonitorProcess.after_fork_in_child` renews each part, in the order written there. It is the
monitor's only ``os.register_at_fork`` hook, registered when this module is first imported.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Final

from otel_flask_monitor import _otel_compat as compat

# The aggregates' own after-fork step (their stores and cross-worker exchanges, weakly held there).
from otel_flask_monitor.aggregates import after_fork_in_child as aggregates_after_fork_in_child
from otel_flask_monitor.objective_metrics import ObjectiveInstrument
from otel_flask_monitor.system_metrics import SystemMetrics
from otel_flask_monitor.telemetry import ProcessTelemetry

_logger = logging.getLogger("otel_flask_monitor")


@dataclass(frozen=True, slots=True)
class ForkOrigin:
    """This process was forked from ``parent_pid`` after OpenTelemetry was set up there."""

    parent_pid: int
    monitor_owned: bool
    """The inherited providers were the monitor's (it renewed them) rather than someone else's."""


class MonitorProcess:
    def __init__(self) -> None:
        self.telemetry = ProcessTelemetry()
        self.system_metrics = SystemMetrics()
        self.objective_metric = ObjectiveInstrument()
        self.forked_from: ForkOrigin | None = None
        """Set in a child forked after OpenTelemetry was set up (the ``preload_master`` diagnostic)."""

    def after_fork_in_child(self) -> None:
        """Renew every part in a forked child, in this order:

        1. remember whose providers the child inherited (before anything is renewed);
        2. telemetry: the owned providers' resource (this process's pid and instance id), the export
           health counts and lock;
        3. the monitor's exporters: each drops the parent's pooled HTTP connections;
        4. system metrics: the sampler's lock and thread (it samples the child from its first read);
        5. the objective metric: its counts start at zero (a new instance of the service);
        6. the aggregates: each store starts empty, each cross-worker exchange under a new identity.

        Each step only replaces what the parent left (locks, counts, connections, identities); the
        order matters in that 1 reads what 2 renews. A step that fails is logged and the next runs.
        """
        steps = (
            ("fork origin", self._note_fork_origin),
            ("telemetry", self.telemetry.after_fork_in_child),
            *(("exporter", exporter.after_fork_in_child) for exporter in self.telemetry.exporters),
            ("system metrics", self.system_metrics.after_fork_in_child),
            ("objective metric", self.objective_metric.after_fork_in_child),
            ("aggregates", aggregates_after_fork_in_child),
        )
        for name, step in steps:
            try:
                step()
            except Exception:
                _logger.warning("otel_flask_monitor: renewing the %s after fork failed", name, exc_info=True)

    def _note_fork_origin(self) -> None:
        if (
            compat.tracer_provider_configured()
            or compat.logger_provider_configured()
            or compat.meter_provider_configured()
        ):
            self.forked_from = ForkOrigin(os.getppid(), monitor_owned=bool(self.telemetry.owned))


PROCESS: Final = MonitorProcess()


def _after_fork_in_child() -> None:
    PROCESS.after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
