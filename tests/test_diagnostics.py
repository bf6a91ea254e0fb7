"""``diagnostics`` in /monitoring/health: one test per code, each set up the way a user gets there (a
real process where the cause lives in the process), asserting the code appears, and that it is gone
once the cause is fixed (in the same process where the fix can happen at run time, else in a process
set up right).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
from flask import Flask

from otel_flask_monitor import get_state
from otel_flask_monitor.dashboard import NOT_CONNECTED_REASON
from otel_flask_monitor.diagnostics import CATALOGUE, process_findings
from otel_flask_monitor.export_status import ExportHealth
from otel_flask_monitor.process import PROCESS, ForkOrigin
from tests.support.apps import build_app
from tests.support.loki_receiver import LokiReceiver
from tests.support.real_processes import (
    FAST_EXPORT,
    NO_TIMED_EXPORT,
    REPO,
    Gunicorn,
    Rotel,
    base_env,
    free_port,
    wait_for_port,
)

SCRIPTS = Path(__file__).parent / "support" / "scripts"
WAIT_SECONDS = 30.0


def codes(app: Flask) -> list[str]:
    return [item["code"] for item in app.test_client().get("/monitoring/health").get_json()["diagnostics"]]


def entry(document: dict[str, Any], code: str) -> dict[str, str]:
    found = [item for item in document["diagnostics"] if item["code"] == code]
    assert len(found) == 1, document["diagnostics"]
    return found[0]


# ---- the registry ---------------------------------------------------------------------------------


def test_every_code_has_a_severity_an_explanation_a_fix_and_a_troubleshooting_entry() -> None:
    troubleshooting = (REPO / "docs" / "troubleshooting.md").read_text()
    for code, template in CATALOGUE.items():
        assert template.severity in ("info", "warning")
        assert template.message.strip()
        assert template.fix.strip()
        assert "\n" not in template.message + template.fix  # one line each
        assert f"`{code}`" in troubleshooting, f"docs/troubleshooting.md does not explain {code}"


def test_each_entry_is_code_severity_message_and_fix() -> None:
    app = build_app()
    document = app.test_client().get("/monitoring/health").get_json()

    assert document["diagnostics"]
    assert all(set(item) == {"code", "severity", "message", "fix"} for item in document["diagnostics"])


# ---- noted as requests flow (in-process: the test-wide providers stand in for the user's) ----------


def test_no_requests_seen_until_the_first_request_of_the_app_not_the_monitors_own() -> None:
    app = build_app()
    client = app.test_client()
    client.get("/monitoring/stats")

    assert "no_requests_seen" in codes(app)
    assert client.get("/items/1").status_code == 200
    assert "no_requests_seen" not in codes(app)


def test_route_excluded_by_excluded_paths_counts_and_says_the_span_is_still_made() -> None:
    app = build_app("excluding", excluded_paths=["^/health-check$"])
    client = app.test_client()
    for _ in range(3):
        assert client.get("/health-check").status_code == 200

    document = client.get("/monitoring/health").get_json()
    assert "3 matched excluded_paths" in entry(document, "route_excluded")["message"]
    assert "the span is still made" in entry(document, "route_excluded")["message"]
    assert "no_requests_seen" in codes(app)  # excluded requests are not recorded
    # Fixed: without the exclusion the same request is recorded and nothing is reported.
    fixed = build_app("not-excluding")
    fixed.test_client().get("/health-check")
    assert {"route_excluded", "no_requests_seen"}.isdisjoint(codes(fixed))


def test_route_excluded_by_the_instrumentations_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_PYTHON_FLASK_EXCLUDED_URLS", "health-check")
    app = build_app("excluded-by-env")
    app.test_client().get("/health-check")
    app.test_client().get("/items/1")

    document = app.test_client().get("/monitoring/health").get_json()
    assert entry(document, "route_excluded")["message"].endswith(
        "1 matched OTEL_PYTHON_FLASK_EXCLUDED_URLS (no span, log record or dashboard figure)."
    )
    monkeypatch.delenv("OTEL_PYTHON_FLASK_EXCLUDED_URLS")
    fixed = build_app("no-longer-excluded")
    fixed.test_client().get("/health-check")
    assert "route_excluded" not in codes(fixed)


# ---- process-level set-ups: fresh interpreters -------------------------------------------------------


def run_script(scenario: str, **env: str) -> list[dict[str, Any]]:
    environ = base_env(f"http://127.0.0.1:{free_port()}", SCENARIO=scenario, **NO_TIMED_EXPORT, **env)
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "diagnose_app.py")],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def plain_run() -> list[dict[str, Any]]:
    """FlaskMonitor(app) with nothing else set: the fixed state of every process-level code."""
    return run_script("plain")


def test_a_plain_set_up_reports_only_that_no_request_was_seen_yet(plain_run: list[dict[str, Any]]) -> None:
    assert [step["codes"] for step in plain_run] == [["no_requests_seen"], []]


def test_sdk_disabled(plain_run: list[dict[str, Any]]) -> None:
    steps = run_script("plain", OTEL_SDK_DISABLED="true")

    assert steps[-1]["codes"] == ["sdk_disabled"]  # and nothing it implies (no_log_exporter) twice
    assert "sdk_disabled" not in plain_run[-1]["codes"]


def test_exporter_disabled_names_the_variables_and_what_is_not_exported(
    plain_run: list[dict[str, Any]],
) -> None:
    steps = run_script("plain", OTEL_LOGS_EXPORTER="none", OTEL_METRICS_EXPORTER="none")

    assert steps[-1]["codes"] == ["exporter_disabled"]  # the logs left without a processor: said once
    item = steps[-1]["diagnostics"][0]
    assert item["message"].startswith(
        "OTEL_LOGS_EXPORTER=none, OTEL_METRICS_EXPORTER=none: log records and metrics are not exported"
    )
    assert "exporter_disabled" not in plain_run[-1]["codes"]


def test_no_log_exporter_until_the_users_provider_gets_a_processor() -> None:
    steps = {step["step"]: step for step in run_script("own_logger_provider")}

    nothing = steps["nothing configured"]
    assert nothing["codes"] == ["no_log_exporter"]
    assert "no logger provider is configured" in nothing["diagnostics"][0]["message"]
    bare = steps["provider without a processor"]
    assert bare["codes"] == ["no_log_exporter"]
    assert "has no log record processor" in bare["diagnostics"][0]["message"]
    assert steps["provider with a processor"]["codes"] == []


class ServedApp:
    """tests/support/scripts/serve_monitored_app.py on 127.0.0.1:<free port>; stopped with its children."""

    def __init__(self, env: dict[str, str], log_dir: Path, *arguments: str) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.stderr_path = log_dir / f"served-{self.port}.stderr"
        with self.stderr_path.open("wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, str(SCRIPTS / "serve_monitored_app.py"), str(self.port), *arguments],
                env=env,
                cwd=REPO,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )

    def output(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-3000:]

    def wait_ready(self) -> None:
        wait_for_port(self.port, self.process, "the served app", self.output)

    def health(self) -> dict[str, Any]:
        # Under the reloader the parent listens first and its child answers once it has started.
        response = requests.get(self.base_url + "/monitoring/health", timeout=WAIT_SECONDS)
        response.raise_for_status()
        document: dict[str, Any] = response.json()
        return document

    def wait_for_health(self, done: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            assert requests.get(self.base_url + "/work", timeout=WAIT_SECONDS).status_code == 200
            document = self.health()
            if done(document):
                return document
            assert time.monotonic() < deadline, (
                f"{what} not seen in {WAIT_SECONDS}s: {document}\n{self.output()}"
            )
            time.sleep(0.2)

    def stop(self) -> None:
        # The reloader's child outlives a parent stopped alone: stop the whole family.
        family = [self.process.pid]
        with suppress(psutil.Error):
            family += [child.pid for child in psutil.Process(self.process.pid).children(recursive=True)]
        for pid in family:
            with suppress(psutil.Error):
                psutil.Process(pid).kill()
        self.process.wait(timeout=10)


@pytest.mark.slow
def test_reloader_parent_in_the_reloaders_child_and_not_without_the_reloader(tmp_path: Path) -> None:
    env = base_env(f"http://127.0.0.1:{free_port()}")
    with_reloader = ServedApp(env, tmp_path, "reloader")
    without = ServedApp(env, tmp_path)  # started side by side: the suite waits once for both
    try:
        with_reloader.wait_ready()
        without.wait_ready()
        served_by_child = with_reloader.health()
        plain = without.health()
    finally:
        with_reloader.stop()
        without.stop()

    item = entry(served_by_child, "reloader_parent")
    # The parent named is the process the user started; the health page came from its child.
    assert f"pid {with_reloader.process.pid}," in item["message"]
    assert served_by_child["system_metrics"]["pid"] != with_reloader.process.pid
    assert "reloader_parent" not in [item["code"] for item in plain["diagnostics"]]


@pytest.mark.slow
def test_preload_master_in_a_worker_forked_after_set_up_and_not_without_preload(tmp_path: Path) -> None:
    env = base_env(f"http://127.0.0.1:{free_port()}")
    preloaded = Gunicorn(env, tmp_path, preload=True, name="preloaded")
    separate = Gunicorn(env, tmp_path, name="separate")
    with preloaded, separate:
        forked = preloaded.health()
        loaded_in_worker = separate.health()

    item = entry(forked, "preload_master")
    assert f"process {preloaded.process.pid}, the master" in item["message"]
    assert item["severity"] == "info"  # the monitor's own providers over HTTP survive the fork
    assert "preload_master" not in [item["code"] for item in loaded_in_worker["diagnostics"]]


def test_preload_master_is_a_warning_with_otlp_over_grpc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(PROCESS, "forked_from", ForkOrigin(4242, monitor_owned=True))
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    item = entry(
        build_app("forked-grpc").test_client().get("/monitoring/health").get_json(), "preload_master"
    )

    assert item["severity"] == "warning"
    assert "gRPC does not survive fork" in item["message"]
    assert "post_fork" in item["fix"]


@pytest.mark.slow
def test_collector_not_reached_then_connected_then_export_failing_when_it_dies(tmp_path: Path) -> None:
    with LokiReceiver() as loki:
        collector = Rotel(loki.otlp_endpoint, tmp_path)
        env = base_env(
            collector.endpoint,
            **FAST_EXPORT,
            OTEL_EXPORTER_OTLP_TIMEOUT="2",
        )
        app = ServedApp(env, tmp_path)
        try:
            app.wait_ready()
            never = app.wait_for_health(
                lambda d: d["telemetry"]["connection"] == "never_reached", "export never reached"
            )
            with collector:
                collector.start()
                connected = app.wait_for_health(
                    lambda d: d["telemetry"]["connection"] == "connected", "export connected"
                )
                collector.kill()
                lost = app.wait_for_health(lambda d: d["telemetry"]["connection"] == "failing", "export lost")
        finally:
            app.stop()

    assert never["status"] == "degraded"
    assert never["reasons"] == [NOT_CONNECTED_REASON]
    assert (
        f"No Collector has answered at {collector.endpoint} since"
        in entry(never, "collector_not_reached")["message"]
    )
    assert connected["status"] == "ok"
    assert {"collector_not_reached", "export_failing"}.isdisjoint(i["code"] for i in connected["diagnostics"])
    # Gone after having answered: the loud state, not the calm one.
    assert lost["reasons"] == ["telemetry export failing"]
    assert "lost" in {signal["connection"] for signal in lost["telemetry"]["signals"]}
    assert "it answered before and stopped" in entry(lost, "export_failing")["message"]
    assert "collector_not_reached" not in [item["code"] for item in lost["diagnostics"]]


def test_export_health_tells_never_reached_from_lost() -> None:
    now = iter(range(1000, 2000))
    health = ExportHealth(clock=lambda: float(next(now)))
    health.register("logs", "http://collector:4318/v1/logs")
    health.register("traces", "http://collector:4318/v1/traces")

    def state() -> tuple[str, dict[str, str]]:
        document = health.as_dict()
        return document["connection"], {s["signal"]: s["connection"] for s in document["signals"]}

    assert state() == ("pending", {"logs": "pending", "traces": "pending"})
    health.record_failure("logs", 3)
    assert state() == ("never_reached", {"logs": "never_reached", "traces": "pending"})
    health.record_success("traces", 1)  # the endpoint works for traces: no longer "never reached"
    assert state() == ("failing", {"logs": "never_reached", "traces": "connected"})
    health.record_success("logs", 1)
    assert state() == ("connected", {"logs": "connected", "traces": "connected"})
    health.note_error("Connection refused", "logs")
    assert state() == ("failing", {"logs": "lost", "traces": "connected"})
    health.after_fork_in_child()  # a new worker has reached nothing yet
    assert state() == ("pending", {"logs": "pending", "traces": "pending"})


def test_a_start_up_check_shows_never_reached_but_exit_still_tries_what_is_queued(
    caplog: pytest.LogCaptureFixture,
) -> None:
    health = ExportHealth()
    health.register("logs", "http://collector:4318/v1/logs")
    health.register("traces", "http://collector:4318/v1/traces")
    with caplog.at_level("WARNING", logger="otel_flask_monitor.export"):
        health.note_unreachable("logs", "nothing accepts connections at collector:4318 (checked at start)")
        health.note_unreachable("traces", "nothing accepts connections at collector:4318 (checked at start)")
        health.begin_exit(timeout_seconds=1000)

        assert health.as_dict()["connection"] == "never_reached"
        assert not health.failing  # a check is not an export: at exit the queue is still tried
        assert not health.should_skip_export()
        health.note_error("Connection refused", "logs")  # the first real export fails: now it is known
        assert health.should_skip_export()
    assert caplog.records == []  # the caller said it; the SDK's failure adds no second message


def test_unmanaged_exporters_are_not_tracked() -> None:
    document = build_app("unmanaged").test_client().get("/monitoring/health").get_json()

    assert document["telemetry"]["connection"] == "not_tracked"


def test_collector_not_reached_names_the_endpoint_without_its_credentials() -> None:
    health = ExportHealth()
    health.register("logs", "http://shop:s3cret-token@collector.internal:4318/v1/logs")
    health.note_unreachable("logs", "nothing accepts connections at collector.internal:4318")

    (item,) = process_findings(get_state(build_app("credentials")).settings, health)

    assert item.code == "collector_not_reached"
    assert "at http://collector.internal:4318 since" in item.message
    assert "s3cret" not in item.message + item.fix
