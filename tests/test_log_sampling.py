"""Log sampling (``log_sample_ratio``, ``slow_request_ms``): errors and slow requests always logged, the
rest kept by trace id exactly as OpenTelemetry's ``TraceIdRatioBased`` keeps traces, every kept
record weighted by ``sample_rate``, and the aggregates still counting every request."""

from __future__ import annotations

import math
import random
from dataclasses import replace
from typing import Final

import pytest
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

from otel_flask_monitor import FlaskMonitor
from otel_flask_monitor.config import ConfigError
from otel_flask_monitor.log_policy import LogSampler
from otel_flask_monitor.record import ExceptionInfo, RequestRecord
from tests.conftest import Exported
from tests.support.apps import build_app
from tests.test_aggregates import make_record

RATIOS: Final = (0.001, 0.01, 0.1, 0.25, 0.5, 0.9, 1.0)


def a_record(trace_id: str | None) -> RequestRecord:
    return make_record(trace_id=trace_id, duration_ms=5.0)


def seeded_ids() -> list[str]:
    rng = random.Random(20_251_201)
    return [f"{rng.getrandbits(128):032x}" for _ in range(20_000)]


@pytest.mark.parametrize("ratio", RATIOS)
def test_the_same_trace_ids_are_kept_as_by_trace_id_ratio_based(ratio: float) -> None:
    sampler, reference = LogSampler(ratio, slow_request_ms=1000), TraceIdRatioBased(ratio)
    for trace_id in seeded_ids():
        traced = reference.should_sample(None, int(trace_id, 16), "GET /items").decision.is_sampled()
        assert (sampler.sample_rate(a_record(trace_id)) is not None) is traced, (ratio, trace_id)


@pytest.mark.parametrize("ratio", [0.01, 0.1, 0.5])
def test_the_kept_fraction_matches_the_ratio(ratio: float) -> None:
    ids = seeded_ids()
    sampler = LogSampler(ratio, slow_request_ms=1000)
    kept = [sampler.sample_rate(a_record(trace_id)) for trace_id in ids]
    fraction = sum(rate is not None for rate in kept) / len(ids)
    # Six standard deviations of a binomial proportion: these ids are fixed, and even random ones
    # would miss it about once in 10^9 runs.
    tolerance = 6 * math.sqrt(ratio * (1 - ratio) / len(ids))
    assert abs(fraction - ratio) <= tolerance
    assert {rate for rate in kept if rate is not None} == {1 / ratio}


@pytest.mark.parametrize("ratio", [0.001, 0.1])
def test_errors_exceptions_and_slow_requests_are_always_kept_with_rate_one(ratio: float) -> None:
    sampler = LogSampler(ratio, slow_request_ms=250)
    exception = ExceptionInfo(type="ValueError", message="no", stacktrace="...", escaped=True)
    for trace_id in seeded_ids()[:2000]:
        normal = a_record(trace_id)
        assert sampler.sample_rate(replace(normal, status_code=503)) == 1.0
        assert sampler.sample_rate(replace(normal, exception=exception)) == 1.0
        assert sampler.sample_rate(replace(normal, duration_ms=250.0)) == 1.0
        assert sampler.sample_rate(replace(normal, status_code=404)) in (None, 1 / ratio)


def test_ratio_one_keeps_every_record_with_rate_one() -> None:
    sampler = LogSampler(1.0, slow_request_ms=1000)
    assert {sampler.sample_rate(a_record(trace_id)) for trace_id in seeded_ids()[:1000]} == {1.0}
    assert sampler.sample_rate(a_record(None)) == 1.0


def test_in_an_app_kept_records_carry_sample_rate_and_aggregates_count_every_request(
    exported: Exported,
) -> None:
    app = build_app("sampled", log_sample_ratio=0.25)
    client = app.test_client()
    for item in range(200):
        client.get(f"/items/{item}")
    for _ in range(5):
        client.get("/boom")  # unhandled exception: answered 500
    records = exported.request_logs()
    rates = {}
    bound = TraceIdRatioBased.get_bound_for_rate(0.25)
    for readable in records:
        attributes = readable.log_record.attributes or {}
        status = attributes["http.response.status_code"]
        rates[status] = rates.get(status, set()) | {attributes["sample_rate"]}
        if status == 200:
            trace_id = readable.log_record.trace_id
            assert trace_id & TraceIdRatioBased.TRACE_ID_LIMIT < bound
    assert rates[200] == {4.0}
    assert rates[500] == {1.0}
    assert sum(1 for r in records if (r.log_record.attributes or {})["http.response.status_code"] == 500) == 5
    assert (
        0
        < sum(1 for r in records if (r.log_record.attributes or {})["http.response.status_code"] == 200)
        < 200
    )
    assert client.get("/monitoring/stats").get_json()["totals"]["requests"] == 205


def test_slow_requests_are_logged_whatever_the_ratio(exported: Exported) -> None:
    app = build_app("all-slow", log_sample_ratio=0.001, slow_request_ms=0)  # every request is "slow"
    client = app.test_client()
    for item in range(50):
        client.get(f"/items/{item}")
    assert len(exported.request_logs()) == 50
    assert {(r.log_record.attributes or {})["sample_rate"] for r in exported.request_logs()} == {1.0}


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"log_sample_ratio": 0}, "log_sample_ratio"),
        ({"log_sample_ratio": 1.5}, "log_sample_ratio"),
        ({"log_sample_ratio": -0.1}, "log_sample_ratio"),
        ({"log_sample_ratio": "ten percent"}, "log_sample_ratio"),
        ({"log_sample_ratio": "nan"}, "log_sample_ratio"),
        ({"slow_request_ms": -1}, "slow_request_ms"),
        ({"slow_request_ms": "slow"}, "slow_request_ms"),
    ],
)
def test_bad_values_raise_config_error_naming_the_option(options: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        FlaskMonitor(build_app("bad", monitor=False), **options)  # type: ignore[arg-type]


def test_a_bad_environment_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_FLASK_MONITOR_LOG_SAMPLE_RATIO", "2")
    with pytest.raises(ConfigError, match="OTEL_FLASK_MONITOR_LOG_SAMPLE_RATIO"):
        FlaskMonitor(build_app("bad-env", monitor=False))
