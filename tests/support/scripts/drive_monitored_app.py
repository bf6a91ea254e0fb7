"""Run in a fresh interpreter: the monitor sets up its own providers from OTEL_* variables.

Sends REQUESTS requests through the test client (optionally a second batch once the test creates
SECOND_BATCH_GO_FILE), waits for an outage to be declared if WAIT_FOR_OUTAGE is set, prints one JSON
line with what the app saw, and exits normally so the monitor's exit flush runs. A last JSON line,
printed after every other exit handler, gives the seconds the exit took.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import time
from collections.abc import Callable

from flask import Flask

from otel_flask_monitor import FlaskMonitor, get_state
from otel_flask_monitor.process import PROCESS

WAIT_SECONDS = 60.0
_exit_from: list[float] = []


def _report_exit() -> None:
    # Registered before the monitor's own handler, so it runs after it (atexit runs last-in first).
    if _exit_from:
        print(json.dumps({"exit_seconds": time.monotonic() - _exit_from[0]}), flush=True)


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"{what}: not within {WAIT_SECONDS} s")
        time.sleep(0.05)


def main() -> None:
    atexit.register(_report_exit)
    requests = int(os.environ.get("REQUESTS", "50"))
    app = Flask("drive")

    @app.get("/work/<int:n>")
    def work(n: int) -> dict[str, int]:
        return {"n": n}

    @app.get("/huge-error")
    def huge_error() -> dict[str, int]:
        raise ValueError("m" * 50_000)

    FlaskMonitor(app, service_name="drive-test")
    client = app.test_client()
    statuses: dict[int, int] = {}

    def send(count: int) -> None:
        for number in range(count):
            status = client.get(f"/work/{number}").status_code
            statuses[status] = statuses.get(status, 0) + 1

    send(requests)
    for _ in range(int(os.environ.get("HUGE_ERRORS", "0"))):
        client.get("/huge-error")
    go_file = os.environ.get("SECOND_BATCH_GO_FILE")
    if go_file:
        # The test starts the Collector stand-in between the two batches, then creates the file.
        print("first batch sent", flush=True)
        wait_until(lambda: os.path.exists(go_file), "the test's go file")
        send(int(os.environ.get("SECOND_BATCH_REQUESTS", "0")))
        health = get_state(app).telemetry.health
        # The exporters retry with backoff; exit during an outage drops.
        wait_until(lambda: not health.in_outage, "recovery")
    if os.environ.get("WAIT_FOR_OUTAGE"):
        health = get_state(app).telemetry.health
        wait_until(lambda: health.in_outage, "an outage")
    state = get_state(app)
    print(
        json.dumps(
            {
                "statuses": statuses,
                "owned_providers": [type(p).__name__ for p in PROCESS.telemetry.owned],
                "health": state.telemetry.health.as_dict(),
            }
        ),
        flush=True,
    )
    sys.stdout.flush()
    _exit_from.append(time.monotonic())


if __name__ == "__main__":
    main()
