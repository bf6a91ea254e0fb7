"""Latency buckets and the percentiles read from them (DDSketch's key mapping, counts in a sparse dict).

A latency is stored as the count of its bucket key under ``ddsketch.mapping.LogarithmicMapping`` at 1 %
relative accuracy: the value read back for a key is within 1 % of every value that maps to it, so any
percentile is within 1 % of the exact sample at that rank. The buckets are a plain ``dict`` (sparse)
instead of a ``DDSketch`` object per slot: a DDSketch's dense store allocates at least 128 bins, about
2.5 KB per sketch against about 0.6 KB for the dict, and with one sketch per route per slot (200 routes
x 90 slots at the defaults) that difference is the memory bound. Merging is adding counts per key,
which is exactly DDSketch's merge; subtracting is its exact inverse.

Any other additive count map (a status-code breakdown, say) merges with :func:`add_buckets` and
:func:`subtract_buckets` as well.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from itertools import accumulate
from typing import Final

from ddsketch.mapping import LogarithmicMapping

RELATIVE_ACCURACY: Final = 0.01
QUANTILES: Final = (0.5, 0.95, 0.99)
MIN_LATENCY_MS: Final = 1e-6
"""Durations are clamped to 1 ns, so that the logarithmic mapping always has a key."""

LatencyBuckets = dict[int, int]
"""Bucket key -> how many durations fell in it."""

_MAPPING: Final = LogarithmicMapping(RELATIVE_ACCURACY)
raw_bucket_key: Final = _MAPPING.key
"""The mapping's own key function, for durations of at least :data:`MIN_LATENCY_MS`: the recording
path calls it directly, saving a call per request."""


def latency_key(duration_ms: float) -> int:
    """Bucket key of a duration; :func:`latency_of_key` gives it back within 1 %."""
    return int(raw_bucket_key(max(duration_ms, MIN_LATENCY_MS)))


def latency_of_key(key: int) -> float:
    return float(_MAPPING.value(key))


def quantiles(buckets: LatencyBuckets, wanted: Iterable[float] = QUANTILES) -> list[float | None]:
    """Values at ranks ``q * (n - 1)`` of the counted durations (DDSketch's definition)."""
    keys = sorted(buckets)
    cumulative = list(accumulate(map(buckets.__getitem__, keys)))
    if not cumulative or cumulative[-1] == 0:
        return [None for _ in wanted]
    total = cumulative[-1]
    # The first key whose cumulative count exceeds the rank holds the sample at that rank.
    return [latency_of_key(keys[bisect_right(cumulative, q * (total - 1))]) for q in wanted]


def add_buckets(target: dict[int, int], source: dict[int, int]) -> None:
    for key, count in source.items():
        target[key] = target.get(key, 0) + count


def subtract_buckets(target: dict[int, int], source: dict[int, int]) -> None:
    """Exact inverse of :func:`add_buckets` for a ``source`` added before; empty keys are dropped, so a
    map that had everything subtracted is empty again."""
    for key, count in source.items():
        remaining = target[key] - count
        if remaining:
            target[key] = remaining
        else:
            del target[key]


def bucket_bounds(key: int) -> tuple[float, float]:
    """The durations (lower exclusive, upper inclusive) that map to ``key``: the mapping's key is
    ``ceil(log(duration) / log(gamma))``."""
    gamma = _MAPPING.gamma
    return (float(gamma ** (key - 1)), float(gamma**key))
