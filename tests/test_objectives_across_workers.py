"""The live objectives and the route drill-down across the workers of a real gunicorn (``multiprocess_dir``).

Two workers serve ``GET /pay`` (tests/objective_app.py: a latency objective of 99 % within 200 ms and
an availability objective of 99 %). A known mix goes in: fast answers, answers that sleep past the
threshold, server errors. Once every worker has written its files, every read of ``/monitoring/stats``,
whichever worker answers it, shows the merged counts and the same figures, the burning route is on
``/monitoring/health``, and ``/monitoring/stats/route`` shows the merged drill-down.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Final

import pytest
import requests

from tests.support.objective_app import SLOW_SECONDS
from tests.support.real_processes import Gunicorn, base_env, drive, free_port
from tests.test_multiprocess_aggregates import WAIT_SECONDS, wait_for_fresh_files

FAST: Final = 30
SLOW: Final = 6
FAILED: Final = 8
TOTAL: Final = FAST + SLOW + FAILED


class Reads:
    def __init__(self, server: Gunicorn) -> None:
        self.server = server

    def get(self, path: str, **params: str) -> dict[str, Any]:
        response = requests.get(self.server.base_url + path, params=params, timeout=10)
        response.raise_for_status()
        document: dict[str, Any] = response.json()
        return document

    def objectives(self) -> tuple[int, dict[str, dict[str, Any]]]:
        document = self.get("/monitoring/stats")
        rows = {row["objective"]: row for row in document["objectives"] if row["route"] == "/pay"}
        return document["served_by"], rows


@pytest.mark.slow
def test_objectives_and_drill_down_agree_whichever_worker_answers(tmp_path: Path) -> None:
    shared = tmp_path / "aggregates"
    env = base_env(
        f"http://127.0.0.1:{free_port()}",
        OTEL_SDK_DISABLED="true",
        OTEL_FLASK_MONITOR_MULTIPROCESS_DIR=str(shared),
    )
    with Gunicorn(env, tmp_path, workers=2, app="tests.support.objective_app:payments_app()") as server:
        paths = ["/pay"] * FAST + ["/pay?slow=1"] * SLOW + ["/pay?fail=1"] * FAILED
        load = drive(server.base_url, paths, concurrency=6)
        assert load.failed == FAILED
        reads = Reads(server)
        deadline = time.monotonic() + WAIT_SECONDS
        while reads.objectives()[1].get("availability", {}).get("requests") != TOTAL:
            assert time.monotonic() < deadline, f"{TOTAL} requests not seen within {WAIT_SECONDS}s"
            time.sleep(0.2)
        wait_for_fresh_files(server, shared, time.time())  # type: ignore[arg-type]

        answered_by: set[int] = set()
        latency_good: set[int] = set()
        for _ in range(40):
            served_by, rows = reads.objectives()
            answered_by.add(served_by)
            availability, latency = rows["availability"], rows["latency"]
            # Availability, exact: 8 of 44 failed; budget 1 %: (8 / 44) / 0.01 = 18.18x, past the page
            # factor (14.4x) over the window and the last 5 minutes alike.
            assert (availability["requests"], availability["good"]) == (TOTAL, FAST + SLOW)
            assert availability["attained_ratio"] == pytest.approx((FAST + SLOW) / TOTAL, rel=1e-5)
            assert availability["burn_rate"] == pytest.approx(FAILED / TOTAL / 0.01, rel=1e-5)
            assert availability["error_budget_left"] == pytest.approx(1 - FAILED / TOTAL / 0.01, rel=1e-5)
            assert availability["last_5m"]["requests"] == TOTAL
            assert availability["burning"] is True
            # Latency: the slow ones missed 200 ms for sure; the others met it unless the box stalled.
            assert latency["requests"] == TOTAL
            assert latency["good"] <= TOTAL - SLOW
            assert latency["attained_ratio"] == pytest.approx(latency["good"] / TOTAL, rel=1e-5)
            latency_good.add(latency["good"])
            if len(answered_by) >= 2:
                break
        assert len(answered_by) == 2, "every read reached the same worker"
        assert len(latency_good) == 1, f"the workers disagree on the latency objective: {latency_good}"

        health = reads.get("/monitoring/health")
        assert {(entry["route"], entry["objective"]) for entry in health["objectives_burning"]} == {
            ("/pay", "availability")
        }

        answered_by = set()
        for _ in range(40):
            detail = reads.get("/monitoring/stats/route", method="GET", route="/pay")
            answered_by.add(detail["served_by"])
            assert detail["per_process"] is False
            assert detail["summary"]["requests"] == TOTAL
            assert sum(slot["requests"] for slot in detail["timeline"]) == TOTAL
            assert detail["status_codes"] == [
                {"status_code": 200, "requests": FAST + SLOW},
                {"status_code": 500, "requests": FAILED},
            ]
            # The slowest five of the window are sleepers, from whichever worker served them.
            assert [entry["duration_ms"] >= SLOW_SECONDS * 1000 for entry in detail["slowest"]] == [True] * 5
            if len(answered_by) >= 2:
                break
        assert len(answered_by) == 2, "every read reached the same worker"
