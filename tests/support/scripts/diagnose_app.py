"""Run in a fresh interpreter: print the monitor's diagnostics as a user's set-up changes.

``SCENARIO=plain`` (the default): FlaskMonitor(app) as the README shows, then one request.
``SCENARIO=own_logger_provider``: the user configures logs themselves (``setup_telemetry=False``):
first nothing, then a LoggerProvider without a processor, then with one.

Prints one JSON line per step: ``{"step": ..., "codes": [...], "diagnostics": [...]}``; exits without
the exit flush (nothing here is about export).
"""

from __future__ import annotations

import io
import json
import os
import sys

from flask import Flask

from otel_flask_monitor import FlaskMonitor, get_state


def show(step: str, app: Flask) -> None:
    diagnostics = get_state(app).diagnostics.as_list()
    line = {"step": step, "codes": [item["code"] for item in diagnostics], "diagnostics": diagnostics}
    print(json.dumps(line), flush=True)


def main() -> None:
    scenario = os.environ.get("SCENARIO", "plain")
    app = Flask("diagnose")

    @app.get("/work")
    def work() -> dict[str, bool]:
        return {"ok": True}

    client = app.test_client()
    if scenario == "plain":
        FlaskMonitor(app)
        show("start", app)
        client.get("/work")
        show("after a request", app)
    elif scenario == "own_logger_provider":
        from opentelemetry._logs import set_logger_provider
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk._logs.export import ConsoleLogRecordExporter, SimpleLogRecordProcessor

        FlaskMonitor(app, setup_telemetry=False)
        client.get("/work")
        show("nothing configured", app)
        provider = LoggerProvider()
        set_logger_provider(provider)
        show("provider without a processor", app)
        provider.add_log_record_processor(
            SimpleLogRecordProcessor(ConsoleLogRecordExporter(out=io.StringIO()))
        )
        show("provider with a processor", app)
    else:
        raise SystemExit(f"unknown SCENARIO {scenario!r}")
    sys.stdout.flush()
    os._exit(0)  # the exit flush would try the (absent) Collector; no step here is about it


if __name__ == "__main__":
    main()
