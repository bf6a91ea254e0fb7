"""Outage bookkeeping: one warning per outage, one recovery line, no flapping in between."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterator

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags

from otel_flask_monitor._otel_compat import SDK_EXPORT_LOGGERS
from otel_flask_monitor.export_status import (
    RECOVERY_CONFIRMATIONS,
    ExportHealth,
    capture_sdk_export_logs,
    tracked_export,
)
from otel_flask_monitor.exporters import TrackedExporter


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "otel_flask_monitor.export"]


@pytest.fixture
def health() -> ExportHealth:
    now = iter(range(1000, 100000))
    health = ExportHealth(clock=lambda: float(next(now)))
    health.register("logs", "http://collector:4318/v1/logs")
    health.register("traces", "http://collector:4318/v1/traces")
    return health


def test_a_flapping_collector_is_one_outage(health: ExportHealth, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="otel_flask_monitor.export"):
        health.note_error("Transient error: connection refused", "logs")
        health.record_failure("logs", 10)
        for _ in range(5):  # some batches get through, some do not
            health.record_success("logs", 1)
            health.record_failure("traces", 2)
            health.record_success("traces", 1)
            health.record_failure("logs", 3)

    assert health.in_outage
    assert health.failing
    messages = lines(caplog)
    assert len(messages) == 1
    assert "connection refused" in messages[0]
    assert "http://collector:4318/v1/logs" in messages[0]


def test_recovery_is_announced_once_after_steady_successes(
    health: ExportHealth, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="otel_flask_monitor.export"):
        health.record_failure("logs", 10)
        health.record_dropped("logs", 5)
        health.record_success("traces", 1)  # traces were fine all along
        for _ in range(RECOVERY_CONFIRMATIONS + 3):
            health.record_success("logs", 1)

    messages = lines(caplog)
    assert len(messages) == 2
    assert messages[1].startswith("telemetry export recovered")
    assert "15 item(s) were lost" in messages[1]
    assert not health.in_outage
    snapshot = {s.signal: s for s in health.snapshot()}
    assert snapshot["logs"].failed == 10
    assert snapshot["logs"].dropped == 5
    assert snapshot["logs"].exported == RECOVERY_CONFIRMATIONS + 3


def test_exit_drops_only_while_failing(health: ExportHealth) -> None:
    health.record_failure("logs", 1)
    health.record_success("logs", 1)  # answered again, recovery not yet confirmed
    health.begin_exit(timeout_seconds=1000)

    assert health.in_outage
    assert not health.failing
    assert not health.should_skip_export()  # the Collector answers: flush what is queued
    health.record_failure("traces", 1)
    assert health.should_skip_export()


def test_an_export_begun_before_the_recovery_that_fails_after_it_is_no_new_outage(
    health: ExportHealth, caplog: pytest.LogCaptureFixture
) -> None:
    """A slow Collector: the logs exporter's request is still waiting for its timeout when the
    traces exporter's next exports succeed and the recovery is announced; that request then fails.
    It belongs to the outage just closed (its records count as failed), not to a new one."""
    in_flight, release = threading.Event(), threading.Event()

    def slow_logs_export() -> str:
        in_flight.set()
        release.wait(10)
        return "failed"

    def export(signal: str, count: int, run: Callable[[], str]) -> str:
        return tracked_export(health, signal=signal, count=count, export=run, success="ok", failure="failed")

    with caplog.at_level(logging.WARNING, logger="otel_flask_monitor.export"):
        logs = threading.Thread(target=export, args=("logs", 5, slow_logs_export))
        logs.start()
        assert in_flight.wait(10)
        export("traces", 2, lambda: "failed")  # the outage begins
        for _ in range(RECOVERY_CONFIRMATIONS):  # the Collector answers again
            export("traces", 1, lambda: "ok")
        release.set()
        logs.join(10)
        for _ in range(RECOVERY_CONFIRMATIONS):
            export("logs", 1, lambda: "ok")

    messages = lines(caplog)
    assert len(messages) == 2, messages
    assert messages[0].startswith("telemetry export to")
    assert messages[1].startswith("telemetry export recovered")
    assert not health.in_outage
    snapshot = {s.signal: s for s in health.snapshot()}
    assert snapshot["logs"].failed == 5
    assert snapshot["traces"].failed == 2


def test_an_exporter_that_raises_counts_as_a_failed_export(health: ExportHealth) -> None:
    def broken_exporter() -> str:
        raise ConnectionResetError("the Collector hung up")

    result = tracked_export(
        health, signal="logs", count=3, export=broken_exporter, success="ok", failure="failed"
    )

    assert result == "failed"
    assert health.failing
    assert {s.signal: s.failed for s in health.snapshot()} == {"logs": 3, "traces": 0}
    assert health.as_dict()["last_error"] == "ConnectionResetError: the Collector hung up"


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _span() -> ReadableSpan:
    context = SpanContext(0x1, 0x2, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    return ReadableSpan(name="GET /x", context=context, kind=SpanKind.SERVER, start_time=1, end_time=2)


def _sdk_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("opentelemetry.exporter")]


@pytest.fixture
def captured(health: ExportHealth) -> Iterator[ExportHealth]:
    """The capture on the SDK's export loggers, as the monitor installs it when it owns exporters."""
    log_filter = capture_sdk_export_logs(health)
    yield health
    for name in SDK_EXPORT_LOGGERS:
        logging.getLogger(name).removeFilter(log_filter)


def test_an_exporter_the_user_set_up_still_logs_its_failures(
    captured: ExportHealth, caplog: pytest.LogCaptureFixture
) -> None:
    theirs = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{_closed_port()}/v1/traces", timeout=0.5)
    with caplog.at_level(logging.WARNING):
        assert theirs.export([_span()]) == SpanExportResult.FAILURE
    theirs.shutdown()
    assert any("Failed to export spans batch" in line for line in _sdk_lines(caplog)), caplog.records
    assert captured.as_dict()["last_error"] is None  # not the monitor's export: not its outage


def test_the_monitors_own_exporter_fails_quietly_into_export_health(
    captured: ExportHealth, caplog: pytest.LogCaptureFixture
) -> None:
    inner = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{_closed_port()}/v1/traces", timeout=0.5)
    ours = TrackedExporter(inner, captured, "traces")
    with caplog.at_level(logging.WARNING):
        assert ours.export([_span()]) == SpanExportResult.FAILURE
    ours.shutdown()
    assert _sdk_lines(caplog) == []
    assert "Failed to export spans batch" in str(captured.as_dict()["last_error"])
    (outage,) = lines(caplog)  # the monitor's one line for the outage instead
    assert "telemetry export to http://collector:4318/v1/traces failed" in outage
