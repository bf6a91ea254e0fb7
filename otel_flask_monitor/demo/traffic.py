"""``--traffic``: a light request mix the demo sends to itself, so the dashboard is alive on first open.

Bounded in time and in count, about :data:`REQUESTS_PER_SECOND` requests a second, to 127.0.0.1 only
(straight through ``http.client``: no proxy variable can send it elsewhere). The mix touches every
kind of answer the dashboard distinguishes except the simulated 500, whose traceback would flood the
terminal (open ``/simulate-error`` yourself to see one): fast reads, a slow route, purchases (201,
and 409 when a shelf runs empty), unknown products (404) and bad purchase bodies (400).
"""

from __future__ import annotations

import http.client
import json
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from werkzeug.serving import WSGIRequestHandler

from otel_flask_monitor._version import __version__
from otel_flask_monitor.demo.shop import CATALOGUE, MAX_QUANTITY

TRAFFIC_HOST: Final = "127.0.0.1"
USER_AGENT: Final = f"otel-flask-monitor-demo-traffic/{__version__}"
REQUESTS_PER_SECOND: Final = 1.5
DEFAULT_SECONDS: Final = 600.0
REQUEST_TIMEOUT_SECONDS: Final = 5.0
START_TIMEOUT_SECONDS: Final = 15.0

UNKNOWN_PRODUCT_ID: Final = 999


@dataclass(frozen=True, slots=True)
class PlannedRequest:
    method: str
    path: str
    body: bytes | None = None


def _product_id(rng: random.Random) -> int:
    return rng.choice(CATALOGUE).id


def _purchase(rng: random.Random) -> PlannedRequest:
    body = json.dumps({"quantity": rng.randint(1, 3)}).encode()
    return PlannedRequest("POST", f"/api/products/{_product_id(rng)}/purchase", body)


def _bad_purchase(rng: random.Random) -> PlannedRequest:
    too_many = f'{{"quantity": {MAX_QUANTITY + 5}}}'.encode()
    body = rng.choice([b"{}", b'{"quantity": 0}', too_many, b"{not json"])
    return PlannedRequest("POST", f"/api/products/{_product_id(rng)}/purchase", body)


# (weight, request maker): mostly reads, some writes, a few client errors, now and then the slow route.
_MIX: Final[tuple[tuple[int, Callable[[random.Random], PlannedRequest]], ...]] = (
    (30, lambda _: PlannedRequest("GET", "/api/products")),
    (25, lambda rng: PlannedRequest("GET", f"/api/products/{_product_id(rng)}")),
    (15, _purchase),
    (10, lambda _: PlannedRequest("GET", "/api/orders")),
    (8, lambda _: PlannedRequest("GET", "/api/products/featured")),
    (7, lambda _: PlannedRequest("GET", f"/api/products/{UNKNOWN_PRODUCT_ID}")),
    (5, _bad_purchase),
)


def plan_request(rng: random.Random) -> PlannedRequest:
    weights = [weight for weight, _ in _MIX]
    (make,) = rng.choices([make for _, make in _MIX], weights=weights)
    return make(rng)


def _send(port: int, planned: PlannedRequest) -> int:
    connection = http.client.HTTPConnection(TRAFFIC_HOST, port, timeout=REQUEST_TIMEOUT_SECONDS)
    try:
        headers = {"User-Agent": USER_AGENT}
        if planned.body is not None:
            headers["Content-Type"] = "application/json"
        connection.request(planned.method, planned.path, body=planned.body, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def _wait_until_listening(port: int, stop: threading.Event) -> bool:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline and not stop.is_set():
        try:
            socket.create_connection((TRAFFIC_HOST, port), timeout=0.5).close()
        except OSError:
            stop.wait(0.1)
        else:
            return True
    return False


@dataclass(slots=True)
class TrafficReport:
    sent: int = 0
    failed: int = 0


def drive(
    port: int,
    seconds: float,
    stop: threading.Event,
    *,
    rng: random.Random | None = None,
    requests_per_second: float = REQUESTS_PER_SECOND,
) -> TrafficReport:
    """Send the mix to 127.0.0.1:``port`` for at most ``seconds`` (and at most that many seconds' worth
    of requests), until ``stop`` is set. A request that fails is counted, never raised."""
    report = TrafficReport()
    if not _wait_until_listening(port, stop):
        return report
    rng = rng or random.Random()
    interval = 1.0 / requests_per_second
    budget = max(int(seconds * requests_per_second), 1)
    deadline = time.monotonic() + seconds
    while report.sent < budget and time.monotonic() < deadline and not stop.is_set():
        try:
            _send(port, plan_request(rng))
        except (OSError, http.client.HTTPException):
            report.failed += 1
        report.sent += 1
        stop.wait(rng.uniform(0.5, 1.5) * interval)
    return report


def start(port: int, seconds: float) -> tuple[threading.Thread, threading.Event]:
    """Drive the demo in a daemon thread (it ends with the process); set the event to stop sooner."""
    stop = threading.Event()
    thread = threading.Thread(
        target=drive, args=(port, seconds, stop), name="otel-flask-monitor-demo-traffic", daemon=True
    )
    thread.start()
    return thread, stop


class RequestHandler(WSGIRequestHandler):
    """Werkzeug's handler without access-log lines for the built-in traffic: at a request or two a
    second they would scroll the start-up message away. Every other request is logged as usual."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if self.headers.get("User-Agent") == USER_AGENT:
            return
        super().log_request(code, size)
