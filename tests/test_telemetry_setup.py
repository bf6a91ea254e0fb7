"""The monitor's own provider set-up, in fresh interpreters: export, Collector down, recovery, exit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.support.loki_receiver import LokiReceiver
from tests.support.real_processes import FAST_EXPORT, SDK_NOISE, free_port

SCRIPT = Path(__file__).parent / "support" / "scripts" / "drive_monitored_app.py"
REPO = Path(__file__).parent.parent

WAIT_SECONDS = 60.0


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(FAST_EXPORT)
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def results(stdout: str) -> dict[str, Any]:
    """The script's JSON lines merged: what the app saw, then ``exit_seconds``."""
    merged: dict[str, Any] = {}
    for line in stdout.splitlines():
        if line.startswith("{"):
            merged.update(json.loads(line))
    return merged


def run_app(env: dict[str, str], timeout: float = 120) -> tuple[dict[str, Any], list[str]]:
    done = subprocess.run(
        [sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, done.stderr
    return results(done.stdout), done.stderr.splitlines()


def sdk_noise(stderr: list[str]) -> list[str]:
    return [line for line in stderr if line.startswith(SDK_NOISE) or "Traceback" in line]


def test_collector_down_fails_no_request_warns_once_and_exits_at_once() -> None:
    """(The latency of requests with the Collector down is measured against a reachable one by
    benchmarks/backend_down.py: a comparison of timings belongs there, not in a test.)"""
    env = child_env(
        # With credentials in the URL: they must appear neither in the warning nor in the health JSON.
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://apiuser:S3CRETPW@127.0.0.1:{free_port()}",
        REQUESTS="300",
        WAIT_FOR_OUTAGE="1",
        # Were the exit flush to wait for the exporters during the outage, it would take this long.
        OTEL_FLASK_MONITOR_FLUSH_TIMEOUT_SECONDS="60",
    )
    result, stderr = run_app(env)

    assert result["statuses"] == {"200": 300}
    assert result["owned_providers"] == ["TracerProvider", "LoggerProvider", "MeterProvider"]
    health = result["health"]
    assert health["managed_by_monitor"] is True
    assert health["healthy"] is False
    assert "Connection refused" in health["last_error"]
    warnings = [line for line in stderr if line.startswith("telemetry export to")]
    assert len(warnings) == 1, stderr
    assert "the app is unaffected" in warnings[0]
    assert "S3CRETPW" not in "\n".join(stderr)
    assert "S3CRETPW" not in json.dumps(health)
    assert {signal["endpoint"].split("/v1/")[0] for signal in health["signals"]} == {
        env["OTEL_EXPORTER_OTLP_ENDPOINT"].replace("apiuser:S3CRETPW@", "")
    }
    assert sdk_noise(stderr) == [], stderr
    # Exit does not wait for the exporters during an outage: it drops at once. Waiting would take the
    # exporters' retries (about 7 s per signal) or the 60 s flush timeout; dropping takes milliseconds.
    assert result["exit_seconds"] < 5, result["exit_seconds"]
    assert any("could not be delivered before exit" in line for line in stderr)


def test_sdk_disabled_sets_up_nothing_and_the_app_works() -> None:
    env = child_env(
        OTEL_SDK_DISABLED="true",
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{free_port()}",
        REQUESTS="20",
    )
    result, stderr = run_app(env)

    assert result["statuses"] == {"200": 20}
    assert result["owned_providers"] == []
    assert result["health"]["managed_by_monitor"] is False
    assert stderr == []


def test_every_record_of_completed_requests_is_flushed_at_exit() -> None:
    with LokiReceiver() as loki:
        env = child_env(
            OTEL_EXPORTER_OTLP_ENDPOINT=loki.otlp_endpoint,
            # A long delay: nothing is exported during the run, everything at exit.
            OTEL_BLRP_SCHEDULE_DELAY="60000",
            REQUESTS="200",
        )
        result, stderr = run_app(env)
        # The exit flush delivered them before the process ended: they are all there already.
        entries = loki.entries()

    assert result["statuses"] == {"200": 200}
    assert len(entries) == 200
    assert {entry.get("url_path") for entry in entries} == {f"/work/{n}" for n in range(200)}
    assert {entry.labels["service_name"] for entry in entries} == {"drive-test"}
    assert sdk_noise(stderr) == []
    assert not [line for line in stderr if "telemetry export" in line]


def test_export_resumes_by_itself_after_the_collector_comes_back(tmp_path: Path) -> None:
    port = free_port()
    go_file = tmp_path / "go"
    env = child_env(
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}/otlp",
        REQUESTS="50",
        SECOND_BATCH_GO_FILE=str(go_file),
        SECOND_BATCH_REQUESTS="30",
    )
    stderr_path = tmp_path / "stderr"
    with stderr_path.open("w") as stderr_file:
        child = subprocess.Popen(
            [sys.executable, str(SCRIPT)], env=env, stdout=subprocess.PIPE, stderr=stderr_file, text=True
        )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "first batch sent"
        # The first exports have failed once the outage warning is out.
        deadline = time.monotonic() + WAIT_SECONDS
        while "telemetry export to" not in stderr_path.read_text():
            assert child.poll() is None, stderr_path.read_text()
            assert time.monotonic() < deadline, f"no outage warning within {WAIT_SECONDS} s"
            time.sleep(0.05)
        with LokiReceiver(port=port) as loki:
            go_file.touch()
            stdout, _ = child.communicate(timeout=120)
            # The second batch was sent after recovery; the retried first batch may arrive too.
            entries = loki.entries()
    finally:
        child.kill()
        child.wait(timeout=10)

    result = results(stdout)
    stderr = stderr_path.read_text().splitlines()
    assert child.returncode == 0, stderr
    assert result["statuses"] == {"200": 80}
    assert len([line for line in stderr if line.startswith("telemetry export to")]) == 1, stderr
    assert len([line for line in stderr if line.startswith("telemetry export recovered")]) == 1, stderr
    assert sdk_noise(stderr) == []
    assert result["health"]["healthy"] is True
    paths = [entry.get("url_path") for entry in entries]
    assert len(paths) == len(set(zip(paths, [e.trace_id for e in entries], strict=True)))  # no duplicates
    assert {f"/work/{n}" for n in range(30)} <= set(paths)


def test_span_attribute_values_are_capped_when_the_monitor_owns_the_tracer_provider() -> None:
    with LokiReceiver() as loki:
        env = child_env(OTEL_EXPORTER_OTLP_ENDPOINT=loki.otlp_endpoint, REQUESTS="1", HUGE_ERRORS="1")
        run_app(env)
        # Flushed at exit, before the process ended.
        events = [
            event
            for request in loki.trace_requests()
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
            for event in span.events
            if event.name == "exception"
        ]

    assert len(events) == 1
    values = {attribute.key: attribute.value.string_value for attribute in events[0].attributes}
    # The Flask instrumentation records the 50,000-character message uncut; the span limits the
    # monitor sets cut it to max_stacktrace_length (8192 by default).
    assert values["exception.message"].startswith("mmm")
    assert len(values["exception.message"]) == 8192
    assert len(values["exception.stacktrace"]) <= 8192
