"""Process metrics: the instruments as a metric reader sees them, checked against psutil itself."""

from __future__ import annotations

import gc
import json
import os
import select
import time
from typing import Any

import psutil
import pytest
from flask import Flask
from opentelemetry import metrics
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricsData

from otel_flask_monitor import FlaskMonitor
from otel_flask_monitor.process import PROCESS
from otel_flask_monitor.system_metrics import ProcessSampler
from otel_flask_monitor.telemetry import INSTRUMENTATION_NAME


def points_by_metric(data: MetricsData | None) -> dict[str, list[tuple[dict[str, Any], float]]]:
    found: dict[str, list[tuple[dict[str, Any], float]]] = {}
    assert data is not None
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            if scope_metrics.scope.name != INSTRUMENTATION_NAME:
                continue
            for metric in scope_metrics.metrics:
                points = found.setdefault(metric.name, [])
                points.extend(
                    (dict(point.attributes or {}), point.value)  # type: ignore[union-attr]
                    for point in metric.data.data_points
                )
    return found


def single_value(points: dict[str, list[tuple[dict[str, Any], float]]], name: str) -> float:
    assert name in points, f"{name} missing from {sorted(points)}"
    assert len(points[name]) == 1, points[name]
    return points[name][0][1]


@pytest.fixture
def sampler() -> ProcessSampler:
    return PROCESS.system_metrics.start(metrics.get_meter(INSTRUMENTATION_NAME))


def test_instruments_report_what_psutil_reports(
    sampler: ProcessSampler, metric_reader: InMemoryMetricReader
) -> None:
    sample = sampler.refresh()
    points = points_by_metric(metric_reader.get_metrics_data())
    process = psutil.Process()

    assert sample.pid == os.getpid()
    assert single_value(points, "process.memory.usage") == sample.memory_rss_bytes
    assert sample.memory_rss_bytes == pytest.approx(process.memory_info().rss, rel=0.1)
    assert single_value(points, "process.memory.virtual") == pytest.approx(process.memory_info().vms, rel=0.1)
    assert single_value(points, "process.memory.utilization") == pytest.approx(
        process.memory_info().rss / psutil.virtual_memory().total, rel=0.1
    )
    assert abs(single_value(points, "process.thread.count") - process.num_threads()) <= 2
    assert abs(single_value(points, "process.unix.file_descriptor.count") - process.num_fds()) <= 5
    assert single_value(points, "process.uptime") == pytest.approx(time.time() - process.create_time(), abs=5)
    assert 0.0 <= single_value(points, "process.cpu.utilization") <= 1.0

    cpu_time = {attributes["cpu.mode"]: value for attributes, value in points["process.cpu.time"]}
    now_cpu = process.cpu_times()
    assert 0 < cpu_time["user"] <= now_cpu.user
    assert 0 <= cpu_time["system"] <= now_cpu.system

    switches = {
        attributes["process.context_switch.type"]: value
        for attributes, value in points["process.context_switches"]
    }
    assert 0 < switches["voluntary"] <= process.num_ctx_switches().voluntary
    assert 0 <= switches["involuntary"] <= process.num_ctx_switches().involuntary

    collections = {
        attributes["cpython.gc.generation"]: value for attributes, value in points["cpython.gc.collections"]
    }
    assert sorted(collections) == [0, 1, 2]
    assert collections[0] <= gc.get_stats()[0]["collections"]
    assert {"cpython.gc.collected_objects", "cpython.gc.uncollectable_objects"} <= set(points)


def test_collection_and_requests_read_the_cached_sample(
    sampler: ProcessSampler, metric_reader: InMemoryMetricReader
) -> None:
    app = Flask("metrics-cached")
    app.get("/ping")(lambda: "pong")
    FlaskMonitor(app)
    before = sampler.refresh()
    client = app.test_client()
    for _ in range(20):
        assert client.get("/ping").status_code == 200
    metric_reader.get_metrics_data()
    assert sampler.latest() is before  # no psutil call on the request or collection path


def test_several_apps_share_one_sampler_and_one_instrument_set(metric_reader: InMemoryMetricReader) -> None:
    for name in ("first", "second", "third"):
        FlaskMonitor(Flask(name))
    points = points_by_metric(metric_reader.get_metrics_data())
    assert len(points["process.memory.usage"]) == 1
    assert PROCESS.system_metrics.sampler.running


def test_sampler_thread_refreshes_in_the_background() -> None:
    sampler = ProcessSampler(interval_seconds=0.05)
    try:
        first = sampler.latest()
        deadline = time.monotonic() + 30  # every 0.05 s; only a stopped thread waits this out
        while sampler.latest() is first and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sampler.latest() is not first
        assert sampler.latest().time_unix > first.time_unix
    finally:
        sampler.stop()
    assert not sampler.running


def test_health_document_reports_the_current_sample(sampler: ProcessSampler) -> None:
    app = Flask("metrics-health")
    FlaskMonitor(app)
    sample = sampler.latest()
    system = app.test_client().get("/monitoring/health").get_json()["system_metrics"]
    assert system["pid"] == os.getpid()
    assert system["threads"] == sample.threads
    assert system["memory_rss_mb"] == pytest.approx(sample.memory_rss_bytes / 1_048_576, abs=0.01)


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_forked_child_reports_its_own_process(
    sampler: ProcessSampler, metric_reader: InMemoryMetricReader
) -> None:
    parent_pid = os.getpid()
    assert sampler.latest().pid == parent_pid
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child; reports through the pipe
        try:
            os.close(read_end)
            sample = sampler.latest()
            points = points_by_metric(metric_reader.get_metrics_data())
            report = {
                "pid": os.getpid(),
                "sample_pid": sample.pid,
                "rss_metric": single_value(points, "process.memory.usage"),
                "child_rss": psutil.Process().memory_info().rss,
                "create_time": sample.create_time_unix,
                "own_create_time": psutil.Process().create_time(),
                "running": sampler.running,
            }
        except BaseException as error:
            report = {"error": repr(error)}
        os.write(write_end, json.dumps(report).encode())
        os._exit(0)

    os.close(write_end)
    try:
        ready, _, _ = select.select([read_end], [], [], 20)
        assert ready, "the forked child did not report within 20 s"
        report = json.loads(os.read(read_end, 65536).decode())
    finally:
        os.close(read_end)
        deadline = time.monotonic() + 10
        while os.waitpid(child, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:
                os.kill(child, 9)
                os.waitpid(child, 0)
                break
            time.sleep(0.02)

    assert "error" not in report, report["error"]
    assert report["pid"] == child != parent_pid
    assert report["sample_pid"] == child
    assert report["rss_metric"] == pytest.approx(report["child_rss"], rel=0.2)
    # The child's own start, not the parent's (a handle kept from before the fork would give that).
    assert report["create_time"] == report["own_create_time"] != psutil.Process().create_time()
    assert report["running"]
    assert sampler.latest().pid == parent_pid  # the parent keeps its own
