"""Each Locust scenario, run headless for a few seconds against the demo served by real gunicorn.

The scenarios' success rules are the contract checked here: every answer the demo gives on purpose
(409 out of stock, the /simulate-error 500, the 4xx the invalid scenario provokes) is a success, so
a healthy demo shows zero failures in every scenario, and each scenario requests only its own names.

How many requests a run of a few seconds makes, and which of its weighted tasks it happens to pick,
depend on the machine's load and on chance: the tests assert that the scenario ran (at least one
request), never a count or that a given task was drawn.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

from tests.support.real_processes import Gunicorn

REPO_ROOT = Path(__file__).resolve().parents[1]
LOCUSTFILE = REPO_ROOT / "loadtest" / "locustfile.py"
RUN_SECONDS = 4

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("OTEL_")}
    env |= {"OTEL_TRACES_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none"}
    with Gunicorn(env, tmp_path_factory.mktemp("gunicorn"), workers=2) as server:
        yield server.base_url


@dataclass(frozen=True)
class Row:
    method: str
    name: str
    requests: int
    failures: int


@dataclass(frozen=True)
class LocustRun:
    returncode: int
    rows: list[Row]
    output: str

    @property
    def total(self) -> Row:
        (aggregated,) = [row for row in self.rows if row.name == "Aggregated"]
        return aggregated

    def names(self) -> set[str]:
        return {row.name for row in self.rows if row.name != "Aggregated"}


def run_locust(host: str, user_class: str | None, users: int, csv_prefix: Path) -> LocustRun:
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--users",
        str(users),
        "--spawn-rate",
        str(users),
        "--run-time",
        f"{RUN_SECONDS}s",
        "--stop-timeout",
        "2",
        "--host",
        host,
        "--csv",
        str(csv_prefix),
        "--only-summary",
        "--loglevel",
        "WARNING",
    ]
    if user_class is not None:
        command.append(user_class)
    completed = subprocess.run(
        command,
        cwd=csv_prefix.parent,
        capture_output=True,
        text=True,
        timeout=RUN_SECONDS + 40,
        check=False,
    )
    with Path(f"{csv_prefix}_stats.csv").open(newline="") as stats:
        rows = [
            Row(
                method=record["Type"],
                name=record["Name"],
                requests=int(record["Request Count"]),
                failures=int(record["Failure Count"]),
            )
            for record in csv.DictReader(stats)
        ]
    return LocustRun(completed.returncode, rows, completed.stdout + completed.stderr)


SHOP_NAMES = {
    "/api/products",
    "/api/products/[id]",
    "/api/products/[id]/purchase",
    "/api/products/featured",
    "/api/orders",
    "/simulate-error",
}


def test_default_mixed_user_only_runs_the_mix_and_sees_no_failure(demo_url: str, tmp_path: Path) -> None:
    run = run_locust(demo_url, None, users=10, csv_prefix=tmp_path / "mixed")

    assert run.total.requests > 0, run.output
    assert run.total.failures == 0, run.output
    assert run.returncode == 0, run.output
    assert run.names() <= SHOP_NAMES  # the mixed user only: the other scenarios' names are not there


def test_high_load_tester_sees_no_failure(demo_url: str, tmp_path: Path) -> None:
    run = run_locust(demo_url, "HighLoadTester", users=10, csv_prefix=tmp_path / "high")

    assert run.total.requests > 0, run.output
    assert run.total.failures == 0, run.output
    assert run.returncode == 0, run.output
    assert run.names() <= SHOP_NAMES - {"/simulate-error", "/api/orders"}


def test_invalid_request_tester_counts_the_expected_4xx_as_successes(demo_url: str, tmp_path: Path) -> None:
    run = run_locust(demo_url, "InvalidRequestTester", users=5, csv_prefix=tmp_path / "invalid")

    assert run.total.requests > 0, run.output
    assert run.total.failures == 0, run.output
    assert run.returncode == 0, run.output
    assert run.names() <= {
        "/api/products/999",
        "/api/products/abc",
        "/api/products/[id]/purchase (invalid body)",
        "/api/products/999/purchase",
        "/invalid/path",
    }


def always_ok(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "application/json")])
    return [b"{}"]


def test_an_unexpected_answer_is_a_failure(tmp_path: Path) -> None:
    # A server that answers 200 to everything: the invalid scenario must fail every request, which
    # shows its success rules forgive only the refusals they name.
    server = make_server("127.0.0.1", 0, always_ok, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        run = run_locust(f"http://127.0.0.1:{server.server_port}", "InvalidRequestTester", 2, tmp_path / "ok")
    finally:
        server.shutdown()
        thread.join(timeout=5)

    assert run.total.requests > 0, run.output
    assert run.total.failures == run.total.requests, run.output
    assert run.returncode != 0
