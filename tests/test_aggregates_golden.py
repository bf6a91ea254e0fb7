"""``/monitoring/stats`` stays byte-for-byte what docs/dashboard.md documents.

The golden files in tests/golden/ were written by this module on the code before the aggregates
became a package (issue 12 item 3): a fixed clock and fixed records (every kind the store tells apart:
slots closing and expiring, overflow and unmatched keys, invented methods, 4xx, 5xx, exceptions,
clipped paths and user agents, a clock stepping back), for one store and for two workers merged
through files. Any change to the document's shape, key order, rounding or numbers fails here.

To rewrite them after a deliberate change of the document: ``GOLDEN_UPDATE=1 pytest`` this file, and
say so in CHANGELOG.md and docs/dashboard.md.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from otel_flask_monitor.aggregates import AggregateStore
from otel_flask_monitor.aggregates.multiprocess import MultiprocessAggregates
from otel_flask_monitor.aggregates.workers import Identity, process_start_ms
from otel_flask_monitor.record import ExceptionInfo, RequestRecord
from tests.support.clock import FakeClock
from tests.test_aggregates import make_record
from tests.test_multiprocess import worker_standing_in

GOLDEN = Path(__file__).parent / "golden"
START = 1_000_000.0
SERVER = "1-1"

ROUTES = ("/items/<int:item_id>", "/orders", None, "/users/<name>", "/a", "/b", "/c")
METHODS = ("GET", "POST", "BREW", "GET", "DELETE")
STATUSES = (200, 200, 201, 404, 500, 200, 418, 503, 200, 302)
BOOM = ExceptionInfo("shop.errors.TillOnFire", "the till is on fire", "Traceback ...", escaped=True)


def fixed_record(number: int) -> RequestRecord:
    """The ``number``-th request of the scenario: a pure function of ``number``."""
    long_path = number % 11 == 0
    return make_record(
        ROUTES[number % len(ROUTES)],
        method=METHODS[number % len(METHODS)],
        status=STATUSES[number % len(STATUSES)],
        # Spread over four decades, never twice the same sequence across slots.
        duration_ms=0.05 * 1.37 ** (number % 37) + (number % 7) * 0.113,
        path=("/p/" + "x" * 400) if long_path else f"/p/{number}",
        exception=BOOM if number % 13 == 0 else None,
        trace_id=f"{number:032x}" if number % 3 else None,
        user_agent=("agent/" + "y" * 400) if number % 17 == 0 else (None if number % 5 == 0 else "pytest"),
        request_size=None if number % 4 == 0 else number * 3,
        response_size=None if number % 6 == 0 else number * 7 + 1,
    )


def new_store(clock: FakeClock) -> AggregateStore:
    return AggregateStore(window_seconds=60, slot_seconds=10, max_routes=4, recent_errors=3, clock=clock)


def scenario(
    clock: FakeClock,
    record: Callable[[int, RequestRecord], None],
    read: Callable[[], dict[str, Any]],
    after_pause: Callable[[int], None] = lambda _: None,
) -> list[dict[str, Any]]:
    """Feed the fixed records, reading the document at fixed moments; the documents read."""
    documents = [read()]  # nothing recorded yet
    for number in range(420):
        clock.advance(0.37)
        if number == 300:
            clock.advance(-25)  # a clock stepping back never rewrites an older slot
        record(number, fixed_record(number))
        if number in (0, 40, 150, 299, 300, 419):
            documents.append(read())
    for index, pause in enumerate((4.9, 10, 25, 30, 3600)):
        clock.advance(pause)
        after_pause(index)
        documents.append(read())
    return documents


def check_against_golden(name: str, documents: list[dict[str, Any]]) -> None:
    text = "\n".join(json.dumps(document) for document in documents) + "\n"
    path = GOLDEN / name
    if os.environ.get("GOLDEN_UPDATE") == "1":
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text)
    expected = path.read_text().splitlines()
    got = text.splitlines()
    assert len(got) == len(expected)
    for index, (line, want) in enumerate(zip(got, expected, strict=True)):
        assert line == want, f"document {index} of {name} differs"


def test_one_store_gives_the_golden_documents() -> None:
    clock = FakeClock(START)
    store = new_store(clock)
    documents = scenario(clock, lambda _, request: store.record(request), store.snapshot)
    check_against_golden("stats-one-store.jsonl", documents)


@pytest.fixture
def other_worker() -> Iterator[Identity]:
    with worker_standing_in(SERVER) as identity:
        yield identity


def test_two_workers_merged_give_the_golden_documents(tmp_path: Path, other_worker: Identity) -> None:
    clock = FakeClock(START)
    mine, theirs = new_store(clock), new_store(clock)
    own_pid = psutil.Process().pid
    own_start = process_start_ms(own_pid)
    assert own_start is not None
    writer = MultiprocessAggregates(theirs, str(tmp_path), identity=other_worker)
    reader = MultiprocessAggregates(mine, str(tmp_path), identity=Identity(own_pid, own_start, SERVER))

    def record(number: int, request: RequestRecord) -> None:
        (theirs if number % 3 else mine).record(request)
        if number % 7 == 0:
            writer.write()

    def read() -> dict[str, Any]:
        document = reader.snapshot()
        # The pids are this run's; everything else is fixed.
        assert document["served_by"] == own_pid
        document["served_by"] = "<reader>"
        names = {own_pid: "<reader>", other_worker.pid: "<writer>"}
        for worker in document["workers"]:
            worker["pid"] = names[worker["pid"]]
        document["workers"].sort(key=lambda worker: worker["pid"])
        return document

    def after_pause(index: int) -> None:
        if index in (1, 3):  # else the reader sees the writer's window as it was at its last write
            writer.write()

    check_against_golden("stats-two-workers.jsonl", scenario(clock, record, read, after_pause))
