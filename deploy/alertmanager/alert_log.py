"""The demo stack's alert receiver: writes each alert Alertmanager sends as one line on stdout.

    python alert_log.py --host 0.0.0.0 --port 9095      # POST /alerts (Alertmanager webhook_configs)

Standard library only, so it runs in the stock python image. The body is Alertmanager's webhook
message, version 4 (prometheus/alertmanager v0.33.1 notify/webhook/webhook.go Message and
template/template.go Data/Alert): ``{"status", "receiver", "alerts": [{"status", "labels",
"annotations", "startsAt", ...}], ...}``. A line reads:

    FIRING page ObjectiveBudgetBurn shop POST /api/products/<int:product_id>/purchase availability: ...
"""

from __future__ import annotations

import argparse
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_BODY_BYTES = 1 << 20


def alert_lines(message: dict[str, Any]) -> list[str]:
    """One line per alert of an Alertmanager webhook message."""
    lines = []
    for alert in message.get("alerts", []):
        labels: dict[str, str] = alert.get("labels", {})
        annotations: dict[str, str] = alert.get("annotations", {})
        fields = [
            str(alert.get("status", "?")).upper(),
            labels.get("severity", "-"),
            labels.get("alertname", "-"),
            labels.get("service_name", "-"),
            labels.get("http_request_method", "-"),
            labels.get("http_route", "-"),
            labels.get("objective", "-") + ":",
            annotations.get("summary", ""),
            f"(since {alert.get('startsAt', '?')})",
        ]
        lines.append(" ".join(fields))
    return lines


class AlertLogHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self._answer(200, b"ok\n")  # liveness

    def do_POST(self) -> None:
        if self.path != "/alerts":
            self._answer(404, b"POST alerts to /alerts\n")
            return
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= MAX_BODY_BYTES:
            self._answer(400, b"expected a JSON body\n")
            return
        try:
            message = json.loads(self.rfile.read(length))
            lines = alert_lines(message)
        except (ValueError, AttributeError, TypeError):
            self._answer(400, b"not an Alertmanager webhook message\n")
            return
        for line in lines:
            print(line, flush=True)
        self._answer(200, b"logged\n")

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # the stdlib's signature
        pass  # one line per alert is the output; no access log


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9095)
    args = parser.parse_args(argv)
    server = ThreadingHTTPServer((args.host, args.port), AlertLogHandler)
    print(f"alert-log: listening on {args.host}:{args.port}, POST /alerts", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
