"""Every benchmark in benchmarks/ still runs end to end (tiny iteration counts; the figures themselves
are not checked). A missing system tool (wrk) fails its test: it never skips."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Final

import pytest

from tests.support.otlp_sink import SPAN_KIND_SERVER, OtlpSink
from tests.support.real_processes import require_tool

BENCHMARKS: Final = Path(__file__).resolve().parents[1] / "benchmarks"
# Modules there that are not benchmarks themselves (imported by the others).
HELPERS: Final = frozenset({"interleave.py", "otlp_sink.py", "variants.py"})

pytestmark = pytest.mark.slow


def run_benchmark(script: str, *arguments: str, timeout_seconds: float = 180) -> str:
    completed = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *arguments],
        capture_output=True,
        text=True,
        timeout=timeout_seconds,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return completed.stdout


def test_every_benchmark_has_a_smoke_test() -> None:
    """Each script in benchmarks/ is run by some test (this module's, or its own module's)."""
    tests_text = "".join(path.read_text() for path in Path(__file__).parent.glob("test_*.py"))
    benchmarks = {path.name for path in BENCHMARKS.glob("*.py")} - HELPERS
    assert benchmarks, BENCHMARKS
    assert {name for name in benchmarks if f'"{name}"' not in tests_text} == set()


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


def test_http_throughput_against_gunicorn_and_rotel() -> None:
    require_tool(
        "wrk", "the HTTP throughput benchmark drives gunicorn with wrk (Debian: apt-get install wrk)"
    )
    output = run_benchmark("http_throughput.py", "--duration", "1", "--repeats", "1")

    assert "\nbare " in output, output
    assert "\nmonitored " in output, output
    assert "monitored / bare: req/s" in output


def test_aggregates_prints_record_cost_memory_and_stats_figures() -> None:
    output = run_benchmark("aggregates.py", "--quick")

    assert "AggregateStore.record:" in output, output
    assert "snapshot() with 200 routes" in output, output
    assert "GET /monitoring/stats with 200 routes" in output, output
    assert "AggregateStore.record with the store full" in output, output


def test_multiprocess_merge_prints_the_merged_stats_cost() -> None:
    output = run_benchmark("multiprocess_merge.py", "--quick")

    assert "4 stores filled" in output, output
    assert "one worker's files" in output, output
    assert "GET /monitoring/stats merged over 4 workers" in output, output


def test_overhead_instructions_workload_runs_and_flushes() -> None:
    """The callgrind benchmark's child, run natively: its whole workload (the variant's app, warm-up,
    requests, flush of spans and logs to an OTLP endpoint). Under valgrind even one variant with a
    single request costs 30 s of CPU on an idle machine (two minutes on a loaded one), too slow for
    the suite; ``make bench-instructions`` is that run."""
    with OtlpSink() as sink:
        env = {name: value for name, value in os.environ.items() if not name.startswith("OTEL_")}
        env |= {
            "OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_METRIC_EXPORT_INTERVAL": str(3_600_000),
        }
        completed = subprocess.run(
            [sys.executable, str(BENCHMARKS / "overhead_instructions.py"), "--child", "monitor", "3"],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert completed.returncode == 0, completed.stdout + completed.stderr
        assert [s for s in sink.spans() if s.kind == SPAN_KIND_SERVER], "no server span reached the sink"
        assert sink.logs(), "no log record reached the sink"
