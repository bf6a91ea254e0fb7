"""Each benchmark still runs end to end (tiny iteration counts; the figures themselves are not checked)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

pytestmark = pytest.mark.slow


def run_benchmark(script: str, *arguments: str, timeout_seconds: float = 120) -> str:
    completed = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *arguments],
        capture_output=True,
        text=True,
        timeout=timeout_seconds,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return completed.stdout


def test_overhead_prints_every_variant_and_both_targets() -> None:
    output = run_benchmark("overhead.py", "--requests", "50", "--rounds", "1")

    for variant in ("bare", "otel", "monitor", "article"):
        assert f"\n{variant} " in output, output
    assert "target monitor / otel" in output
    assert "target monitor / article" in output
    assert "/v1/traces" in output, "nothing reached the sink"


def test_objective_counter_prints_its_target() -> None:
    output = run_benchmark("objective_counter.py", "--records", "2000", "--rounds", "1")

    assert "objective counter" in output, output
    assert "target objective counter / sync counter" in output


def test_backend_down_prints_each_variant_and_the_p99_targets() -> None:
    output = run_benchmark("backend_down.py", "--requests", "100", "--rounds", "1")

    for variant in ("reachable", "refused", "hung"):
        assert f"\n{variant} " in output, output
    assert "target p99 refused / reachable" in output
    assert "target p99 hung / reachable" in output


def test_query_redaction_prints_each_size_and_the_ratio() -> None:
    output = run_benchmark("query_redaction.py", "--repeat", "8")

    assert "query  60000 bytes: redactor" in output, output
    assert "ratio redactor 60 KB / 3 KB:" in output


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt-get install -y wrk)")
def test_http_throughput_against_gunicorn_and_rotel() -> None:
    output = run_benchmark("http_throughput.py", "--duration", "1", "--repeats", "1")

    assert "\nbare " in output, output
    assert "\nmonitored " in output, output
    assert "monitored / bare: req/s" in output


def test_aggregates_prints_record_memory_and_stats_figures() -> None:
    output = run_benchmark("aggregates.py", "--quick")

    assert "AggregateStore.record:" in output, output
    assert "snapshot() with 200 routes over a full window" in output
    assert "GET /monitoring/stats with 200 routes" in output


def test_multiprocess_merge_checks_the_merged_totals_and_prints_its_figures() -> None:
    output = run_benchmark("multiprocess_merge.py", "--quick")  # it asserts no request is lost

    assert "one worker's files:" in output, output
    assert "GET /monitoring/stats merged over 4 workers" in output
