"""Aggregates across workers, in one process: the file exchange and the merge of the windows.

Each "worker" is an AggregateStore plus a MultiprocessAggregates writing under an identity; the
identities of the other workers are real processes this test starts (liveness is checked for real),
so that retiring dead and reused pids is exercised as it happens under gunicorn.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from otel_flask_monitor.aggregates import AggregateStore
from otel_flask_monitor.aggregates.multiprocess import REBASE_AFTER, SUMS_EVERY, MultiprocessAggregates
from otel_flask_monitor.aggregates.wire import STATE_FILE
from otel_flask_monitor.aggregates.workers import Identity, process_start_ms, resolve_directory
from otel_flask_monitor.config import resolve_settings
from otel_flask_monitor.extension import get_state
from otel_flask_monitor.record import ExceptionInfo
from tests.support.apps import build_app
from tests.support.clock import FakeClock
from tests.test_aggregates import make_record, new_store

SERVER = "1-1"
ROUTES = ("/items/<int:item_id>", "/orders", "/users/<name>", None)


def _sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])


@contextlib.contextmanager
def worker_standing_in(server: str = SERVER) -> Iterator[Identity]:
    """A live process standing in for another worker of ``server``, for as long as the block runs."""
    process = _sleeper()
    try:
        start = process_start_ms(process.pid)
        assert start is not None
        yield Identity(process.pid, start, server)
    finally:
        process.kill()
        process.wait(timeout=10)


@pytest.fixture
def other_worker() -> Iterator[Identity]:
    with worker_standing_in() as identity:
        yield identity


@pytest.fixture
def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait(timeout=30)
    assert not psutil.pid_exists(process.pid) or process_start_ms(process.pid) is None
    return process.pid


def me() -> Identity:
    start = process_start_ms(psutil.Process().pid)
    assert start is not None
    return Identity(psutil.Process().pid, start, SERVER)


def store(clock: FakeClock) -> AggregateStore:
    return new_store(clock, window_seconds=60, slot_seconds=10, max_routes=50, recent_errors=5)


def reader_and_writer(
    tmp_path: Path, other_worker: Identity, clock: FakeClock, **window: int
) -> tuple[list[AggregateStore], MultiprocessAggregates, MultiprocessAggregates]:
    """[mine, theirs, reference] stores (``window``: their settings, default :func:`store`'s), the
    other worker's writer of ``theirs`` and this process's reader of ``mine``."""
    stores = [new_store(clock, **window) if window else store(clock) for _ in range(3)]
    writer = MultiprocessAggregates(stores[1], str(tmp_path), identity=other_worker)
    reader = MultiprocessAggregates(stores[0], str(tmp_path), identity=me())
    return stores, writer, reader


def feed(stores: list[AggregateStore], clock: FakeClock, rng: random.Random, count: int) -> None:
    """Random records, each to one random worker's store and to the reference (the last store), 10 ms
    apart (so that the newest errors of all workers are one well-defined list)."""
    *workers, reference = stores
    for number in range(count):
        clock.advance(0.01)
        status = rng.choice([200, 200, 200, 201, 404, 418, 500])
        exception = ExceptionInfo("demo.Boom", "boom", "trace", escaped=True) if number % 17 == 0 else None
        record = make_record(
            rng.choice(ROUTES),
            method=rng.choice(["GET", "POST"]),
            status=status,
            duration_ms=rng.lognormvariate(2.0, 1.5),
            path=f"/p/{number}",
            exception=exception,
            request_size=rng.randrange(0, 500),
        )
        rng.choice(workers).record(record)
        reference.record(record)


def comparable(document: dict[str, Any]) -> dict[str, Any]:
    """The figures, without what legitimately differs between a merge and one store."""
    keys = ("totals", "routes", "timeline", "window_start_unix", "recent_errors", "recent_client_errors")
    return {key: document[key] for key in keys}


def test_two_workers_merged_equal_one_store_that_saw_every_request(
    tmp_path: Path, other_worker: Identity
) -> None:
    clock = FakeClock()
    (mine, theirs, reference), writer, reader = reader_and_writer(tmp_path, other_worker, clock)
    rng = random.Random(7)
    # Slots close, leave the window and are written across several rounds; the reader's running sums
    # must follow (added once, subtracted once) and still equal the reference every time.
    for round_number in range(12):
        feed([mine, theirs, reference], clock, rng, 40)
        clock.advance(7)
        writer.write()
        merged = reader.snapshot()
        assert comparable(merged) == comparable(reference.snapshot()), round_number
        assert merged["per_process"] is False
        assert merged["served_by"] == me().pid
        assert {w["pid"] for w in merged["workers"]} == {me().pid, other_worker.pid}
        assert sum(w["requests"] for w in merged["workers"]) == merged["totals"]["requests"]
    assert merged["totals"]["requests"] > 100
    assert len(merged["recent_errors"]) == 5  # merged, then capped at recent_errors


def test_a_writer_that_has_not_written_since_slots_left_the_window_is_still_exact(
    tmp_path: Path, other_worker: Identity
) -> None:
    clock = FakeClock()
    (mine, theirs, reference), writer, reader = reader_and_writer(tmp_path, other_worker, clock)
    feed([mine, theirs, reference], clock, random.Random(9), 400)  # 4 s: one slot
    for _ in range(8):
        clock.advance(9)
        feed([mine, theirs, reference], clock, random.Random(10), 100)
        writer.write()
    # The writer stops writing (busy, stopped): its sum still holds slots that leave the reader's
    # window one by one; their own files take them out of the totals.
    for step in range(8):
        merged = reader.snapshot()
        assert comparable(merged) == comparable(reference.snapshot()), step
        assert sum(w["requests"] for w in merged["workers"]) == merged["totals"]["requests"]
        clock.advance(10)
    assert merged["totals"]["requests"] == 0


def test_a_workers_sum_is_read_once_then_followed_slot_by_slot(
    tmp_path: Path, other_worker: Identity
) -> None:
    clock = FakeClock()
    window = {"window_seconds": 300, "slot_seconds": 10, "max_routes": 50, "recent_errors": 5}
    (mine, theirs, reference), writer, reader = reader_and_writer(tmp_path, other_worker, clock, **window)
    own = tmp_path / other_worker.name
    rng = random.Random(12)

    def next_slot() -> None:
        feed([mine, theirs, reference], clock, rng, 20)
        clock.advance(9.8)
        writer.write()

    for _ in range(32):  # a full window and more
        next_slot()
    assert comparable(reader.snapshot()) == comparable(reference.snapshot())
    # Each slot boundary one slot closes and one leaves: the reader adds and subtracts their own files
    # (and folds them into its sum now and then); it never reads a sum again.
    for boundary in range(3 * REBASE_AFTER):
        next_slot()
        for sums in own.glob("sums-*.json"):
            sums.write_text("not json")
        assert comparable(reader.snapshot()) == comparable(reference.snapshot()), boundary
    # A reader that starts now reads the newest sum, then follows from it: that one is spoilt.
    late = MultiprocessAggregates(new_store(clock, **window), str(tmp_path), identity=me())
    assert [w["pid"] for w in late.snapshot()["workers"]] == [me().pid]


def test_a_reader_starting_between_two_sums_follows_from_the_older(
    tmp_path: Path, other_worker: Identity
) -> None:
    clock = FakeClock()
    mine, theirs, reference = store(clock), store(clock), store(clock)
    writer = MultiprocessAggregates(theirs, str(tmp_path), identity=other_worker)
    rng = random.Random(13)
    for boundary in range(4 * SUMS_EVERY):
        feed([mine, theirs, reference], clock, rng, 20)
        clock.advance(9.9)
        writer.write()
        # Every reader starts afresh here: from the newest sum, up to SUMS_EVERY generations old.
        reader = MultiprocessAggregates(mine, str(tmp_path), identity=me())
        assert comparable(reader.snapshot()) == comparable(reference.snapshot()), boundary


def test_the_writer_writes_a_sum_every_few_generations_and_keeps_two(
    tmp_path: Path, other_worker: Identity
) -> None:
    clock = FakeClock()
    theirs = store(clock)
    writer = MultiprocessAggregates(theirs, str(tmp_path), identity=other_worker)
    own = tmp_path / other_worker.name
    named = []
    for _ in range(20):
        theirs.record(make_record())
        clock.advance(10)
        writer.write()
        state = json.loads((own / STATE_FILE).read_text())
        kept = sorted(int(path.stem.removeprefix("sums-")) for path in own.glob("sums-*.json"))
        if state["sums"] is not None:
            assert kept[-1] == state["sums"]  # the newest, and the one before it
            assert len(kept) <= 2
            named.append(state["sums"])
    steps = {b - a for a, b in itertools.pairwise(sorted(set(named)))}
    assert steps == {SUMS_EVERY}


def test_a_writer_moving_on_while_it_is_read_is_read_again(
    tmp_path: Path, other_worker: Identity, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Just after a slot boundary the reader's window may be ahead of a worker's last state: the slot
    that left it is subtracted with its file. If the worker writes in between (and deletes that file),
    the reader reads the worker's new state once more instead of dropping the worker."""
    clock = FakeClock(1_000_000.0)
    (mine, theirs, reference), writer, reader = reader_and_writer(tmp_path, other_worker, clock)
    for _ in range(7):  # 7 slots of a 6-slot window
        feed([mine, theirs, reference], clock, random.Random(5), 50)
        clock.advance(9.5)
        writer.write()
    clock.advance(10)  # the writer's oldest slot leaves the window before the writer writes again
    read_state = reader._worker_state
    writes_while_read = []

    def state_then_the_writer_writes(path: Path, name: str) -> Any:
        worker = read_state(path, name)
        if not writes_while_read:
            writer.write()
            writes_while_read.append(name)
        return worker

    monkeypatch.setattr(reader, "_worker_state", state_then_the_writer_writes)
    merged = reader.snapshot()
    assert writes_while_read == [other_worker.name]
    assert {w["pid"] for w in merged["workers"]} == {me().pid, other_worker.pid}
    assert comparable(merged) == comparable(reference.snapshot())


def test_a_slot_that_left_the_window_unreadable_drops_its_worker(
    tmp_path: Path, other_worker: Identity
) -> None:
    clock = FakeClock(1_000_000.0)
    theirs = store(clock)
    writer = MultiprocessAggregates(theirs, str(tmp_path), identity=other_worker)
    for _ in range(5):  # slots 100000..100004, the last one still written
        theirs.record(make_record())
        clock.advance(10)
    clock.advance(-5)
    writer.write()
    reader = MultiprocessAggregates(store(clock), str(tmp_path), identity=me())
    assert reader.snapshot()["totals"]["requests"] == 5
    (tmp_path / other_worker.name / "slot-100000.json").write_text("{}")
    clock.advance(20)  # slot 100000 leaves the window; the writer has not written since
    document = reader.snapshot()
    assert document["totals"]["requests"] == 0  # the worker's counts cannot be made exact: skipped
    assert [w["pid"] for w in document["workers"]] == [me().pid]


def test_a_single_process_says_it_is_one() -> None:
    document = store(FakeClock()).snapshot()
    assert document["per_process"] is True
    assert "workers" not in document


def _one_request_worker(clock: FakeClock, directory: Path, identity: Identity) -> MultiprocessAggregates:
    theirs = store(clock)
    theirs.record(make_record(status=500))
    writer = MultiprocessAggregates(theirs, str(directory), identity=identity)
    writer.write()
    assert (directory / identity.name / STATE_FILE).is_file()
    return writer


def test_a_dead_worker_is_retired(tmp_path: Path, dead_pid: int, other_worker: Identity) -> None:
    clock = FakeClock()
    _one_request_worker(clock, tmp_path, other_worker)
    dead = Identity(dead_pid, other_worker.start_ms, SERVER)
    _one_request_worker(clock, tmp_path, dead)
    reader = MultiprocessAggregates(store(clock), str(tmp_path), identity=me())

    document = reader.snapshot()

    assert document["totals"]["requests"] == 1  # the live worker's; the dead one's are dropped
    assert {w["pid"] for w in document["workers"]} == {me().pid, other_worker.pid}
    assert not (tmp_path / dead.name).exists()
    assert (tmp_path / other_worker.name).exists()


def test_a_reused_pid_is_retired(tmp_path: Path, other_worker: Identity) -> None:
    # The pid is running, but it is another process than the one that wrote: it started later.
    reused = Identity(other_worker.pid, other_worker.start_ms - 60_000, SERVER)
    clock = FakeClock()
    _one_request_worker(clock, tmp_path, reused)
    reader = MultiprocessAggregates(store(clock), str(tmp_path), identity=me())

    document = reader.snapshot()

    assert document["totals"]["requests"] == 0
    assert [w["pid"] for w in document["workers"]] == [me().pid]
    assert not (tmp_path / reused.name).exists()


def test_a_live_worker_of_another_server_is_skipped_and_kept(tmp_path: Path, other_worker: Identity) -> None:
    stranger = Identity(other_worker.pid, other_worker.start_ms, "2-2")
    clock = FakeClock()
    _one_request_worker(clock, tmp_path, stranger)
    reader = MultiprocessAggregates(store(clock), str(tmp_path), identity=me())

    assert reader.snapshot()["totals"]["requests"] == 0
    assert (tmp_path / stranger.name / STATE_FILE).is_file()


def test_a_worker_with_other_window_settings_is_skipped(tmp_path: Path, other_worker: Identity) -> None:
    clock = FakeClock()
    theirs = new_store(clock, window_seconds=120, slot_seconds=10)
    theirs.record(make_record())
    MultiprocessAggregates(theirs, str(tmp_path), identity=other_worker).write()
    reader = MultiprocessAggregates(store(clock), str(tmp_path), identity=me())
    assert reader.snapshot()["totals"]["requests"] == 0


@pytest.mark.parametrize(
    "damage",
    ["truncated state", "garbage state", "wrong types", "corrupt sums", "empty state"],
)
def test_a_corrupt_or_partial_file_is_skipped_without_breaking_stats(
    tmp_path: Path, other_worker: Identity, damage: str
) -> None:
    clock = FakeClock()
    theirs = store(clock)
    theirs.record(make_record())
    clock.advance(10)  # the first slot closes: it goes to its own file
    theirs.record(make_record())
    writer = MultiprocessAggregates(theirs, str(tmp_path), identity=other_worker)
    writer.write()
    own = tmp_path / other_worker.name
    state_file = own / STATE_FILE
    text = state_file.read_text()
    if damage == "truncated state":
        state_file.write_text(text[: len(text) // 2])
    elif damage == "garbage state":
        state_file.write_bytes(b"\x00\xff not json")
    elif damage == "wrong types":
        state_file.write_text(text.replace('"closed":[', '"closed":["x",'))
    elif damage == "corrupt sums":
        next(own.glob("sums-*.json")).write_text('{"number": 1, "routes": "no"}')
    else:
        state_file.write_text("")
    mine = store(clock)
    mine.record(make_record(route="/orders"))
    reader = MultiprocessAggregates(mine, str(tmp_path), identity=me())

    document = reader.snapshot()

    assert document["totals"]["requests"] == 1  # this worker's own; the unreadable one is left out
    assert [w["pid"] for w in document["workers"]] == [me().pid]
    assert own.exists()  # its process lives: it may write a good file next time

    writer.write()  # the worker rewrites its state: readable again
    if damage != "corrupt sums":  # sums are written once per generation: that one stays unreadable
        assert reader.snapshot()["totals"]["requests"] == 3


def test_stats_route_survives_a_corrupt_file(tmp_path: Path) -> None:
    app = build_app("mp-corrupt", multiprocess_dir=str(tmp_path))
    exchange = get_state(app).exchange
    assert exchange is not None
    try:
        client = app.test_client()
        assert client.get("/items/1").status_code == 200
        # A live process's directory (this one's parent) with garbage in it.
        parent = psutil.Process().parent()
        assert parent is not None
        bogus = tmp_path / f"{parent.pid}-{round(parent.create_time() * 1000)}"
        bogus.mkdir()
        (bogus / STATE_FILE).write_text("{")
        response = client.get("/monitoring/stats")
        assert response.status_code == 200
        document = response.get_json()
        assert document["totals"]["requests"] == 1
        assert document["per_process"] is False
        assert get_state(app).failures.counts() == {}
    finally:
        exchange.close()


def test_closed_slots_are_written_once_and_deleted_some_slots_after_they_leave_the_window(
    tmp_path: Path, other_worker: Identity
) -> None:
    clock = FakeClock()
    theirs = store(clock)  # 60 s window, 10 s slots: 6 slots
    writer = MultiprocessAggregates(theirs, str(tmp_path), identity=other_worker)
    own = tmp_path / other_worker.name
    for _ in range(30):
        theirs.record(make_record())
        clock.advance(10)
        writer.write()
        # Kept a few slots longer, for readers that subtract them from the sums they hold.
        assert len(list(own.glob("slot-*.json"))) <= theirs.slot_count + REBASE_AFTER
    state = json.loads((own / STATE_FILE).read_text())
    on_disk = sorted(int(p.stem.removeprefix("slot-")) for p in own.glob("slot-*.json"))
    assert on_disk[-len(state["closed"]) :] == state["closed"]
    assert on_disk[0] == state["closed"][0] - REBASE_AFTER
    assert not list(own.glob(".*.tmp"))


def test_a_process_that_served_nothing_writes_nothing(tmp_path: Path, other_worker: Identity) -> None:
    MultiprocessAggregates(store(FakeClock()), str(tmp_path), identity=other_worker).write()
    assert not (tmp_path / other_worker.name).exists()


def test_stale_files_of_a_previous_run_are_removed_at_the_first_write(tmp_path: Path, dead_pid: int) -> None:
    stale = tmp_path / f"{dead_pid}-12345"
    stale.mkdir()
    (stale / STATE_FILE).write_text("{}")
    clock = FakeClock()
    mine = store(clock)
    mine.record(make_record())
    exchange = MultiprocessAggregates(mine, str(tmp_path), identity=me())
    exchange.write()
    assert not stale.exists()
    assert (tmp_path / me().name / STATE_FILE).is_file()
    exchange.close()  # a worker leaving removes its own files
    assert not (tmp_path / me().name).exists()


def test_auto_directory_is_private_per_server_and_drops_servers_that_are_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dead_pid: int
) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    identity = Identity(1, 1, "4242-5000")
    base = tmp_path / f"otel-flask-monitor-{os.getuid()}"
    (base / f"{dead_pid}-1").mkdir(parents=True)

    directory = resolve_directory("auto", identity)

    assert directory == base / "4242-5000"
    assert directory.is_dir()
    assert directory.stat().st_mode & 0o777 == 0o700
    assert not (base / f"{dead_pid}-1").exists()
    assert resolve_directory(str(tmp_path / "explicit"), identity) == tmp_path / "explicit"


def test_the_option_is_read_from_the_environment() -> None:
    settings = resolve_settings({}, {}, {"OTEL_FLASK_MONITOR_MULTIPROCESS_DIR": "auto"})
    assert settings.multiprocess_dir == "auto"
    assert resolve_settings({}, {}, {}).multiprocess_dir is None


def test_stats_fall_back_to_this_process_when_the_directory_is_unusable(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    app = build_app("mp-unusable", multiprocess_dir=str(not_a_directory))
    state = get_state(app)
    assert state.exchange is not None
    try:
        client = app.test_client()
        assert client.get("/items/1").status_code == 200
        response = client.get("/monitoring/stats")
        assert response.status_code == 200
        document = response.get_json()
        assert document["per_process"] is True
        assert document["totals"]["requests"] == 1
        assert state.failures.counts()["multiprocess merge"] == 1
    finally:
        state.exchange.close()
