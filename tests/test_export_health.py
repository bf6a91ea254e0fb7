"""Outage bookkeeping: one warning per outage, one recovery line, no flapping in between."""

from __future__ import annotations

import logging

import pytest

from otel_flask_monitor.export_status import RECOVERY_CONFIRMATIONS, ExportHealth


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
