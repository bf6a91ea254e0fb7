"""dispatch: every consumer gets every record in order; one that raises is counted, logged once, and
never stops the others nor reaches the caller."""

from __future__ import annotations

import logging

import pytest

from otel_flask_monitor.dispatch import FailureReporter, RecordDispatcher
from otel_flask_monitor.record import RequestRecord
from tests.support.records import make_record


def test_consumers_run_in_order_and_a_failing_one_stops_none_of_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[str] = []

    def broken(record: RequestRecord) -> None:
        seen.append("broken")
        raise ValueError("consumer bug")

    failures = FailureReporter()
    dispatcher = RecordDispatcher(
        [
            ("first", lambda r: seen.append("first")),
            ("broken", broken),
            ("last", lambda r: seen.append("last")),
        ],
        failures,
    )
    with caplog.at_level(logging.WARNING, logger="otel_flask_monitor"):
        for _ in range(3):
            dispatcher.dispatch(make_record())  # never raises

    assert seen == ["first", "broken", "last"] * 3
    assert failures.counts() == {"consumer 'broken'": 3}
    (warning,) = caplog.records  # the first failure only, with its traceback
    assert "consumer 'broken' failed" in warning.getMessage()
    assert warning.exc_info is not None
    assert isinstance(warning.exc_info[1], ValueError)


def test_each_consumer_gets_the_same_record() -> None:
    received: list[RequestRecord] = []
    record = make_record()
    RecordDispatcher([("a", received.append), ("b", received.append)], FailureReporter()).dispatch(record)
    assert received == [record, record]
    assert received[0] is received[1]


def test_failure_counts_are_a_copy() -> None:
    failures = FailureReporter()
    try:
        int("not a number")
    except ValueError:
        failures.report("somewhere")
    failures.counts()["somewhere"] = 0  # the reporter's counts are not the caller's to change
    assert failures.counts() == {"somewhere": 1}
