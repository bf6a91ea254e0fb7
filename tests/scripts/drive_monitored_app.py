"""Run in a fresh interpreter: the monitor sets up its own providers from OTEL_* variables.

Sends REQUESTS requests through the test client (optionally a second batch once the test creates
SECOND_BATCH_GO_FILE), prints one JSON line with what the app saw, and exits normally so the
monitor's exit flush runs.
"""

from __future__ import annotations

import json
import os
import sys
import time

from flask import Flask

from otel_flask_monitor import FlaskMonitor, get_state
from otel_flask_monitor.process import PROCESS


def main() -> None:
    requests = int(os.environ.get("REQUESTS", "50"))
    pause_after = float(os.environ.get("PAUSE_AFTER_SECONDS", "0"))
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
    latencies: list[float] = []

    def send(count: int) -> None:
        for number in range(count):
            started = time.perf_counter()
            status = client.get(f"/work/{number}").status_code
            latencies.append(time.perf_counter() - started)
            statuses[status] = statuses.get(status, 0) + 1

    send(requests)
    for _ in range(int(os.environ.get("HUGE_ERRORS", "0"))):
        client.get("/huge-error")
    go_file = os.environ.get("SECOND_BATCH_GO_FILE")
    if go_file:
        # The test starts the Collector stand-in between the two batches, then creates the file.
        print("first batch sent", flush=True)
        deadline = time.monotonic() + 30
        while not os.path.exists(go_file) and time.monotonic() < deadline:
            time.sleep(0.05)
        send(int(os.environ.get("SECOND_BATCH_REQUESTS", "0")))
        health = get_state(app).telemetry.health
        deadline = time.monotonic() + 30
        while health.in_outage and time.monotonic() < deadline:
            time.sleep(0.1)  # the exporters retry with backoff; exit during an outage drops
    time.sleep(pause_after)
    latencies.sort()
    state = get_state(app)
    print(
        json.dumps(
            {
                "statuses": statuses,
                "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000 if latencies else 0,
                "max_ms": latencies[-1] * 1000 if latencies else 0,
                "owned_providers": [type(p).__name__ for p in PROCESS.telemetry.owned],
                "health": state.telemetry.health.as_dict(),
            }
        ),
        flush=True,
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
