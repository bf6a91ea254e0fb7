"""otel_flask_monitor.aggregates.sketch: bucket keys, percentiles, adding and subtracting buckets."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_flask_monitor.aggregates.sketch import (
    MIN_LATENCY_MS,
    RELATIVE_ACCURACY,
    add_buckets,
    latency_key,
    latency_of_key,
    quantiles,
    raw_bucket_key,
    subtract_buckets,
)

DURATIONS = st.floats(min_value=MIN_LATENCY_MS, max_value=3_600_000, allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None)
@given(DURATIONS)
def test_a_duration_reads_back_within_the_relative_accuracy(duration: float) -> None:
    assert latency_of_key(latency_key(duration)) == pytest.approx(duration, rel=RELATIVE_ACCURACY)
    assert raw_bucket_key(duration) == latency_key(duration)  # the recording path's shortcut agrees


@pytest.mark.parametrize("duration", [0.0, -5.0, MIN_LATENCY_MS / 10])
def test_durations_below_a_nanosecond_share_the_lowest_key(duration: float) -> None:
    assert latency_key(duration) == latency_key(MIN_LATENCY_MS)


def test_quantiles_are_the_samples_at_rank_q_times_n_minus_one() -> None:
    buckets: dict[int, int] = {}
    for sample in (1.0, 2.0, 3.0, 4.0, 100.0):
        add_buckets(buckets, {latency_key(sample): 1})
    p0, p50, p95, p100 = quantiles(buckets, [0.0, 0.5, 0.95, 1.0])
    assert p0 == pytest.approx(1.0, rel=RELATIVE_ACCURACY)
    assert p50 == pytest.approx(3.0, rel=RELATIVE_ACCURACY)  # rank 2 of 0..4
    assert p95 == pytest.approx(4.0, rel=RELATIVE_ACCURACY)  # rank 3.8: the sample at rank 3
    assert p100 == pytest.approx(100.0, rel=RELATIVE_ACCURACY)


def test_no_sample_has_no_quantile() -> None:
    assert quantiles({}) == [None, None, None]
    assert quantiles({}, [0.5]) == [None]


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(st.integers(-50, 2000), st.integers(1, 10**9), max_size=40),
    st.dictionaries(st.integers(-50, 2000), st.integers(1, 10**9), max_size=40),
)
def test_subtracting_what_was_added_gives_back_the_same_map(
    base: dict[int, int], other: dict[int, int]
) -> None:
    merged = dict(base)
    add_buckets(merged, other)
    assert sum(merged.values()) == sum(base.values()) + sum(other.values())
    subtract_buckets(merged, other)
    assert merged == base  # no key left at zero


def counted(samples: range) -> dict[int, int]:
    buckets: dict[int, int] = {}
    for sample in samples:
        add_buckets(buckets, {latency_key(float(sample)): 1})
    return buckets


def test_merged_buckets_give_the_percentiles_of_all_samples() -> None:
    first, second = counted(range(1, 51)), counted(range(51, 101))
    add_buckets(first, second)
    assert first == counted(range(1, 101))
    (median,) = quantiles(first, [0.5])
    assert median is not None
    assert math.isclose(median, 50.0, rel_tol=RELATIVE_ACCURACY)
