"""Pre-fork servers: every gunicorn worker is its own instance, reports its own process, and serves.

With ``--preload`` the providers are built in the master before it forks; without it, in each worker.
Either way each worker must export under its own ``service.instance.id`` and ``process.pid``, its
psutil instruments must describe itself (not the master), and nothing may deadlock after the fork.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Final

import psutil
import pytest
import requests
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from tests.support.loki_receiver import LokiReceiver
from tests.support.real_processes import (
    FAST_EXPORT,
    REPO,
    Gunicorn,
    base_env,
    drive,
    free_port,
    stderr_report,
    tagged_paths,
)

WORKERS: Final = 4
REQUESTS: Final = 400
WAIT_SECONDS: Final = 60.0  # a deadline for what certainly arrives; only a broken product waits it out
# Float rounding of the exported nanosecond stamp and uptime (both derive from psutil's create time).
CLOCK_EPSILON_SECONDS: Final = 0.005


def _attributes(attributes: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    kv: KeyValue
    for kv in attributes:
        kind = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, kind) if kind else None
    return out


def _uptime_by_resource(requests_: list[ExportMetricsServiceRequest]) -> dict[tuple[str, int], list[float]]:
    """(service.instance.id, process.pid) -> the process create times implied by process.uptime."""
    found: dict[tuple[str, int], list[float]] = defaultdict(list)
    for request in requests_:
        for resource_metrics in request.resource_metrics:
            resource = _attributes(resource_metrics.resource.attributes)
            key = (str(resource.get("service.instance.id")), int(resource.get("process.pid", 0)))
            for scope in resource_metrics.scope_metrics:
                for metric in scope.metrics:
                    if metric.name != "process.uptime":
                        continue
                    for point in metric.gauge.data_points:
                        found[key].append(point.time_unix_nano / 1e9 - point.as_double)
            found.setdefault(key, [])
    return found


@pytest.mark.slow
@pytest.mark.parametrize("preload", [False, True], ids=["fork-then-load", "preload"])
def test_every_worker_exports_as_its_own_instance(preload: bool, tmp_path: Path) -> None:
    with LokiReceiver() as loki:
        env = base_env(loki.otlp_endpoint, **FAST_EXPORT)
        with Gunicorn(env, tmp_path, workers=WORKERS, preload=preload) as server:
            workers = server.worker_pids()
            master = server.process.pid
            # Read while the workers live: after server.stop() their pids are gone.
            created = {pid: psutil.Process(pid).create_time() for pid in [master, *workers]}
            load = drive(server.base_url, tagged_paths("fork", REQUESTS), concurrency=8)
            # /monitoring/health describes the worker that answers: never the master.
            health_pids = set()
            for _ in range(40):
                document = requests.get(server.base_url + "/monitoring/health", timeout=5).json()
                health_pids.add(document["system_metrics"]["pid"])
            # Every worker exports its metrics (the instruments run whether or not it served requests).
            deadline = time.monotonic() + WAIT_SECONDS
            while time.monotonic() < deadline:
                resources = _uptime_by_resource(loki.metric_requests())
                if set(workers) <= {pid for (_, pid), implied in resources.items() if implied}:
                    break
                time.sleep(0.2)
            entries = loki.wait_for(lambda es: len(es) >= REQUESTS, WAIT_SECONDS, "request records")
            workers_after = server.worker_pids()
            code = server.stop()
            stderr = server.stderr_lines()

    assert load.failed == 0
    assert code == 0, stderr[-30:]
    # No worker hung and was replaced (a deadlock after fork ends in gunicorn's WORKER TIMEOUT).
    assert workers_after == workers
    assert not [line for line in stderr if "WORKER TIMEOUT" in line or "Traceback" in line], stderr
    warnings, _, noise = stderr_report(stderr)
    assert warnings == [], stderr
    assert noise == [], stderr

    assert health_pids <= set(workers), (health_pids, workers, master)
    resources = _uptime_by_resource(loki.metric_requests())
    by_pid: dict[int, set[str]] = defaultdict(set)
    for instance, pid in resources:
        by_pid[pid].add(instance)
    assert set(workers) <= set(by_pid), (workers, dict(by_pid))
    assert set(by_pid) <= {*workers, master}, dict(by_pid)  # the master exports its own, if preloaded
    # One instance id per process, none shared between processes.
    assert all(len(ids) == 1 for ids in by_pid.values()), dict(by_pid)
    instance_of = {pid: next(iter(ids)) for pid, ids in by_pid.items()}
    assert len(set(instance_of.values())) == len(instance_of), instance_of
    # The psutil instruments of each worker describe that worker's own process. process.uptime is
    # observed in a callback and stamped when the collection ends, so the create time it implies
    # (stamp - uptime) is the process's own create time plus that short delay: never earlier. A
    # handle on the master (forked before its workers) would imply an earlier time.
    implied_by_worker = {pid: implied for (_, pid), implied in resources.items() if pid in workers}
    assert set(implied_by_worker) == set(workers), (implied_by_worker.keys(), workers)
    for pid, implied in implied_by_worker.items():
        assert implied, f"worker {pid} exported no process.uptime"
        assert all(value >= created[pid] - CLOCK_EPSILON_SECONDS for value in implied), (
            pid,
            created[pid],
            created[master],
            implied[:3],
        )

    # Request records carry the identity of the worker that served them.
    pairs = {(e.labels.get("service_instance_id"), e.metadata.get("process_pid")) for e in entries}
    for instance, pid_text in pairs:
        assert pid_text is not None, pairs
        assert int(pid_text) in workers, pairs
        assert instance_of[int(pid_text)] == instance, (pairs, instance_of)
    assert len(pairs) > 1, "all records came from one worker: the load did not spread"


# Forks a process whose monitor set up its providers, with the export-health lock and the metric
# reader's export lock held by another thread at the moment of the fork (a metrics export in flight);
# the child must start as a new instance with zeroed counts, able to export metrics.
_FORK_SCRIPT: Final = r"""
import json, os, signal, sys, threading, time
from otel_flask_monitor import telemetry
from otel_flask_monitor.process import PROCESS

telemetry.setup_telemetry(PROCESS.telemetry, enabled=True, service_name="fork-test",
                          fallback_service_name="x", flush_timeout_seconds=1, attribute_length_limit=8192)
health = PROCESS.telemetry.health
health.record_failure("logs", 7)
health.record_dropped("traces", 3)

def identity():
    out = []
    for provider in PROCESS.telemetry.owned:
        resource = getattr(provider, "resource", None) or provider._sdk_config.resource
        out.append([resource.attributes.get("service.instance.id"), resource.attributes.get("process.pid")])
    return out

parent = {"pid": os.getpid(), "identity": identity()}
readers = [reader for provider in PROCESS.telemetry.owned
           for reader in getattr(provider, "_metric_readers", ())]
assert readers, "no metric reader to hold"
locked, release = threading.Event(), threading.Event()
def hold():
    with health._lock, readers[0]._export_lock:
        locked.set()
        release.wait(10)
holder = threading.Thread(target=hold, daemon=True)
holder.start()
locked.wait(5)
read, write = os.pipe()
child = os.fork()
if child == 0:
    signal.alarm(10)  # a deadlock ends the child instead of the test
    os.close(read)
    health.record_success("logs", 1)
    can_export_metrics = all(reader._export_lock.acquire(timeout=2) for reader in readers)
    report = {"pid": os.getpid(), "identity": identity(), "health": health.as_dict(),
              "can_export_metrics": can_export_metrics}
    os.write(write, json.dumps(report).encode())
    os._exit(0)
os.close(write)
release.set()
data = b""
while chunk := os.read(read, 65536):
    data += chunk
_, status = os.waitpid(child, 0)
print(json.dumps({"parent": parent, "child": json.loads(data or b"null"), "status": status,
                  "parent_health": health.as_dict()}))
"""


def run_script(script: str, endpoint: str) -> dict[str, Any]:
    """``python -c script`` exporting to ``endpoint``; the JSON document it prints last."""
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=base_env(endpoint, OTEL_METRIC_EXPORT_INTERVAL="60000"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_forked_child_is_a_new_instance_with_its_own_counts() -> None:
    result = run_script(_FORK_SCRIPT, f"http://127.0.0.1:{free_port()}")
    parent, child = result["parent"], result["child"]
    assert result["status"] == 0, result
    assert child is not None, result

    assert len(parent["identity"]) == 3
    assert {pid for _, pid in parent["identity"]} == {str(parent["pid"])}
    assert {pid for _, pid in child["identity"]} == {str(child["pid"])}
    parent_ids = {instance for instance, _ in parent["identity"]}
    child_ids = {instance for instance, _ in child["identity"]}
    # One identity shared by the three signals, a new one in the child.
    assert len(parent_ids) == 1
    assert len(child_ids) == 1
    assert parent_ids != child_ids

    assert child["can_export_metrics"] is True, "the child's metric reader waits on the parent's export"
    counts = {s["signal"]: s for s in child["health"]["signals"]}
    assert counts["logs"]["failed"] == 0
    assert counts["logs"]["exported"] == 1
    assert counts["traces"]["dropped"] == 0
    assert child["health"]["healthy"] is True
    parent_counts = {s["signal"]: s for s in result["parent_health"]["signals"]}
    assert parent_counts["logs"]["failed"] == 7
    assert parent_counts["traces"]["dropped"] == 3


# Sets up the monitor's providers, serves one request, then flushes every signal to a receiver: the
# exports must import nothing. A module an exporter thread imports lazily keeps its import lock held
# in a child forked during that import (CPython), and the child's exporters then wait on it forever.
_LAZY_IMPORT_SCRIPT: Final = r"""
import json, sys
from flask import Flask
from otel_flask_monitor import FlaskMonitor
from otel_flask_monitor.process import PROCESS

app = Flask("lazy-imports")
app.get("/")(lambda: "ok")
FlaskMonitor(app)
assert app.test_client().get("/").status_code == 200
before = set(sys.modules)
flushed = [provider.force_flush() for provider in PROCESS.telemetry.owned]
print(json.dumps({"flushed": flushed, "imported": sorted(set(sys.modules) - before)}))
"""


def test_exporting_imports_no_module_a_fork_could_catch_half_imported() -> None:
    with LokiReceiver(path_prefix="") as receiver:
        result = run_script(_LAZY_IMPORT_SCRIPT, receiver.base_url)
        assert receiver.log_requests(), "the flush exported nothing: the test would show nothing"

    assert result["flushed"] == [True, True, True]
    assert result["imported"] == []
