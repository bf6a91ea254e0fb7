"""signals.RecordSignals and attributes: a record's attributes are built once and given to both the
span and the log record; a failure writing one leaves the other its record; what the attributes hold."""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry.util.types import AttributeValue

from otel_flask_monitor._otel_compat import get_logger
from otel_flask_monitor.attributes import AttributeBound, entry_bytes, record_attributes
from otel_flask_monitor.dispatch import FailureReporter
from otel_flask_monitor.log_policy import DEFAULT_LOG_ATTRIBUTES, FULL_LOG_ATTRIBUTES, SAMPLE_RATE_ATTRIBUTE
from otel_flask_monitor.record import ExceptionInfo, RequestRecord
from otel_flask_monitor.redaction import Redactor
from otel_flask_monitor.signals import RecordSignals
from otel_flask_monitor.spans import SpanWriter
from tests.conftest import Exported
from tests.support.records import make_record


class RecordingSpans(SpanWriter):
    def __init__(self, *, fail: bool = False) -> None:
        super().__init__(Redactor([], []), 1024, may_carry_headers=False)
        self.fail = fail
        self.given: list[Mapping[str, AttributeValue]] = []

    def enrich(self, record: RequestRecord, attributes: Mapping[str, AttributeValue]) -> None:
        self.given.append(attributes)
        if self.fail:
            raise RuntimeError("span write failed")


class BrokenLogger:
    def emit(self, *args: object, **kwargs: object) -> None:
        raise RuntimeError("log emit failed")


def test_span_and_log_get_the_same_attributes_built_once(exported: Exported) -> None:
    spans = RecordingSpans()
    signals = RecordSignals(
        spans=spans,
        logger=get_logger("test-signals"),
        failures=FailureReporter(),
        log_attributes=FULL_LOG_ATTRIBUTES,
    )
    signals(make_record(status_code=503))

    (given,) = spans.given
    (log,) = exported.request_logs()
    expected = record_attributes(make_record(status_code=503))
    assert dict(log.log_record.attributes or {}) == {**expected, SAMPLE_RATE_ATTRIBUTE: 1.0}
    assert {key: value for key, value in given.items() if key != SAMPLE_RATE_ATTRIBUTE} == expected


def test_the_log_record_carries_its_selection_of_the_spans_attributes(exported: Exported) -> None:
    spans = RecordingSpans()
    signals = RecordSignals(spans=spans, logger=get_logger("test-signals"), failures=FailureReporter())
    signals(make_record(status_code=503))

    (given,) = spans.given
    (log,) = exported.request_logs()
    full = record_attributes(make_record(status_code=503))
    assert {key: value for key, value in given.items() if key != SAMPLE_RATE_ATTRIBUTE} == full
    selected = {key: value for key, value in full.items() if key in DEFAULT_LOG_ATTRIBUTES}
    assert dict(log.log_record.attributes or {}) == {**selected, SAMPLE_RATE_ATTRIBUTE: 1.0}
    assert selected != full  # the default leaves the opt-in attributes out


def test_a_failing_span_write_leaves_the_log_its_record(exported: Exported) -> None:
    failures = FailureReporter()
    signals = RecordSignals(
        spans=RecordingSpans(fail=True), logger=get_logger("test-signals"), failures=failures
    )
    for _ in range(2):
        signals(make_record())
    assert len(exported.request_logs()) == 2
    assert failures.counts() == {"consumer 'span'": 2}


def test_a_failing_log_leaves_the_span_its_record() -> None:
    failures = FailureReporter()
    spans = RecordingSpans()
    signals = RecordSignals(spans=spans, logger=BrokenLogger(), failures=failures)  # type: ignore[arg-type]
    for _ in range(2):
        signals(make_record())
    assert len(spans.given) == 2
    assert failures.counts() == {"consumer 'log'": 2}


def test_switched_off_signals_write_nothing(exported: Exported) -> None:
    signals = RecordSignals(spans=None, logger=None, failures=FailureReporter())
    assert not signals.enabled
    signals(make_record())
    assert exported.request_logs() == []


def test_a_bound_keeps_the_attributes_within_its_budget() -> None:
    spans = RecordingSpans()
    signals = RecordSignals(spans=spans, logger=None, failures=FailureReporter(), bound=AttributeBound(600))
    signals(make_record(user_agent="a" * 400, path="/" + "p" * 400))
    (given,) = spans.given
    assert sum(entry_bytes(key, value) for key, value in given.items()) <= 600
    assert str(given["user_agent.original"]).startswith("aaa")  # cut, not dropped


def test_attributes_are_primitives_never_none_with_stable_names() -> None:
    attributes = record_attributes(make_record(query="", request_size=None))
    assert attributes == {
        "http.request.method": "GET",
        "http.route": "/items/<int:item_id>",
        "url.path": "/items/1",
        "url.scheme": "http",
        "http.response.status_code": 200,
        "http.response.body.size": 9,
        "http.response.header.content-type": "application/json",
        "client.address": "127.0.0.1",
        "user_agent.original": "pytest",
        "server.address": "localhost",
        "duration_ms": 12.346,
        "cpu_ms": 1.5,
    }


def test_error_and_exception_attributes_and_captured_headers() -> None:
    boom = ExceptionInfo(
        type="shop.ShopError", message="till on fire", stacktrace="Traceback ...", escaped=True
    )
    attributes = record_attributes(
        make_record(
            status_code=500,
            exception=boom,
            method="_OTHER",
            method_original="BREW",
            captured_headers=(("x-request-id", "abc"),),
            streamed=True,
            cut_short="closed_early",
        )
    )
    assert attributes["error.type"] == "shop.ShopError"
    assert attributes["exception.message"] == "till on fire"
    assert attributes["exception.stacktrace"] == "Traceback ..."
    assert attributes["http.request.method_original"] == "BREW"
    assert attributes["http.request.header.x-request-id"] == "abc"
    assert (attributes["response_streamed"], attributes["response_cut_short"]) == (True, "closed_early")
    assert record_attributes(make_record(status_code=502))["error.type"] == "502"
    assert "error.type" not in record_attributes(make_record(status_code=404))
