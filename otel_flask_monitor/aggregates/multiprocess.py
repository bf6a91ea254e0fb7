"""Aggregates across the workers of a pre-fork server, through files in a shared directory.

Modelled on prometheus_client's multiprocess mode: every worker keeps recording into its own in-memory
:class:`~otel_flask_monitor.aggregates.store.AggregateStore` (the request path is unchanged) and a daemon
thread writes the store's window to ``<dir>/<pid>-<start ms>/`` every second (the files: wire.py; each
written to a temporary file then ``os.replace``d, so a reader sees a whole old file or a whole new one).
The worker that answers ``/monitoring/stats`` merges its own live window with the files of the other
live workers of the same server.

A reader holds, per other worker, that worker's closed slots as one sum (read once, from the worker's
``sums-<generation>.json``) and its last ``state.json`` (parsed again only when its bytes changed). As
the window moves it follows with the slots' own files, each read once: a slot that closed since is
added, one that left the window subtracted; beyond :data:`REBASE_AFTER` such slots it folds them into
its sum. So a reader holds about one window's sum per worker, and a slot boundary costs it about two
slot files per worker; the sums files matter only to a reader that starts (or lost track).

The drill-down and the live objectives' last 5 minutes read other workers' slots one by one
(slot_extracts.py keeps what they need of each).

Which workers count (workers.py): the live ones of this server. A retired worker's directory is deleted
(its counts leave the totals); live processes of another server are skipped and left alone.
Unreadable files are skipped.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from otel_flask_monitor.aggregates.counts import RouteKey, Slot, SummedSlots
from otel_flask_monitor.aggregates.drill import route_slots_of
from otel_flask_monitor.aggregates.live_objectives import ObjectiveCounts, short_counts
from otel_flask_monitor.aggregates.merge import FollowedSum, RunningSums, WindowState, sum_key, window_bounds
from otel_flask_monitor.aggregates.slot_extracts import SlotExtracts, load_slot
from otel_flask_monitor.aggregates.store import AggregateStore
from otel_flask_monitor.aggregates.wire import (
    STATE_FILE,
    MalformedStateError,
    WorkerHeader,
    WorkerState,
    decode_state,
    decode_summed,
    encode_slot,
    encode_state,
    encode_summed,
    slot_file,
    sums_file,
)
from otel_flask_monitor.aggregates.workers import (
    Identity,
    guarded_read,
    live_workers,
    private_dir,
    read_bytes,
    read_json,
    resolve_directory,
    write_json,
)

if TYPE_CHECKING:
    from otel_flask_monitor.dispatch import FailureReporter

WRITE_INTERVAL_SECONDS: Final = 1.0
REBASE_AFTER: Final = 8
"""Slots a reader holds added to or subtracted from a worker's sum before it folds them into the sum."""
SUMS_EVERY: Final = REBASE_AFTER // 2
"""A writer writes its closed slots' sum every so many generations (a generation: its closed slots
changed); a reader that starts from it follows the slots closed or gone since with their files."""
_SUMS_KEPT: Final = 2
"""Sums files a writer keeps: the newest, and the one before for a reader that read the previous state."""
_SLOTS_KEPT_BEHIND: Final = REBASE_AFTER
"""Slot files a writer keeps after they left its window, for readers to subtract them from their sums."""

_logger = logging.getLogger("otel_flask_monitor")


@dataclass(frozen=True, slots=True)
class _ReadState:
    raw: bytes
    """The bytes of ``state.json`` this was parsed from: equal bytes are not parsed again."""
    worker: WorkerState


class MultiprocessAggregates:
    """Shares one store's window with the other workers of the server and merges theirs on read.

    ``start()`` begins writing (a daemon thread, every ``interval`` seconds; after ``fork`` the child
    starts its own); :meth:`snapshot` is the merged ``/monitoring/stats`` document. ``identity`` is for
    tests (default: this process, re-read after ``fork``).
    """

    def __init__(
        self,
        store: AggregateStore,
        directory: str,
        *,
        interval: float = WRITE_INTERVAL_SECONDS,
        failures: FailureReporter | None = None,
        identity: Identity | None = None,
    ) -> None:
        self.store = store
        self.setting = directory
        self.interval = interval
        self._failures = failures
        self._fixed_identity = identity
        self._reset()
        _LIVE_EXCHANGES.add(self)  # closed at exit, held weakly: an exchange goes with its app

    def _reset(self) -> None:
        self._lock = threading.Lock()  # serialises reads (the merger is not thread-safe)
        self._write_lock = threading.Lock()
        self._merger = self.store.merger()
        self._read: dict[str, _ReadState] = {}
        self._held: dict[str, FollowedSum] = {}
        self._extracts = SlotExtracts()
        self._identity: Identity | None = self._fixed_identity
        self._directory: Path | None = None
        self._written: set[int] = set()
        self._own_sums = RunningSums()
        self._generation = 0
        self._sums_generation: int | None = None
        self._sums_written: list[int] = []
        self._wrote_state = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def identity(self) -> Identity:
        if self._identity is None:
            self._identity = Identity.current()
        return self._identity

    @property
    def directory(self) -> Path:
        if self._directory is None:
            self._directory = resolve_directory(self.setting, self.identity)
        return self._directory

    @property
    def own_directory(self) -> Path:
        return self.directory / self.identity.name

    # -- writing ---------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="otel-flask-monitor-multiprocess", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        stop = self._stop
        while not stop.wait(self.interval):
            self._write_safely()

    def _write_safely(self) -> None:
        try:
            self.write()
        except Exception:
            if self._failures is not None:
                self._failures.report("multiprocess writer")
            else:
                _logger.debug("otel_flask_monitor: writing the aggregates failed", exc_info=True)

    def write(self) -> None:
        """Write this process's window now (the thread calls it every interval)."""
        with self._write_lock:
            store = self.store
            state = store.window_state()
            if not self._wrote_state and state.current is None and not state.closed:
                return  # a process that served nothing (a preloading master) writes nothing
            if not self._wrote_state:
                live_workers(self.directory)  # retires what a previous run of the server left behind
            own = private_dir(self.own_directory)
            window = window_bounds(store.clock(), [state.newest_number], store.slot_seconds, store.slot_count)
            closed = {number: slot for number, slot in sorted(state.closed.items()) if number in window}
            for number, slot in closed.items():
                if number not in self._written:
                    write_json(own / slot_file(number), encode_slot(slot))
                    self._written.add(number)
            numbers = tuple(closed)
            if self._own_sums.sync({number: (1, slot) for number, slot in closed.items()}):
                self._generation += 1
                self._write_sums_if_due(own, numbers, closed)
            identity = self.identity
            header = WorkerHeader(
                identity.pid, identity.start_ms, identity.server, store.window_seconds, store.slot_seconds
            )
            sums_generation = self._sums_generation if numbers else None
            write_json(own / STATE_FILE, encode_state(header, store.clock(), state, numbers, sums_generation))
            self._wrote_state = True
            # Files no state names any more, kept a while for readers that read an older state.
            for number in [n for n in self._written if n < window.start - _SLOTS_KEPT_BEHIND]:
                with contextlib.suppress(FileNotFoundError):
                    (own / slot_file(number)).unlink()
                self._written.discard(number)

    def _write_sums_if_due(self, own: Path, numbers: tuple[int, ...], closed: dict[int, Slot]) -> None:
        """The closed slots' sum, every :data:`SUMS_EVERY` generations: readers follow the slots closed
        or gone since with the slots' own files. The last :data:`_SUMS_KEPT` sums stay."""
        if not numbers:
            self._sums_generation = None
            return
        if self._sums_generation is not None and self._generation - self._sums_generation < SUMS_EVERY:
            return
        summed = SummedSlots(
            generation=self._generation,
            numbers=numbers,
            routes=self._own_sums.routes,
            total=self._own_sums.total,
            slot_totals={number: slot.total for number, slot in closed.items()},
        )
        write_json(own / sums_file(self._generation), encode_summed(summed))
        self._sums_generation = self._generation
        self._sums_written.append(self._generation)
        while len(self._sums_written) > _SUMS_KEPT:
            with contextlib.suppress(FileNotFoundError):
                (own / sums_file(self._sums_written.pop(0))).unlink()

    def close(self) -> None:
        """Stop writing and remove this process's files (at exit: its counts leave the totals, as a
        dead worker's do)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2)
        identity, directory = self._identity, self._directory
        if identity is not None and directory is not None and identity.pid == os.getpid():
            shutil.rmtree(directory / identity.name, ignore_errors=True)

    def after_fork_in_child(self) -> None:
        """In a forked child: a new writer with a new identity (its store starts afresh on its own:
        :func:`otel_flask_monitor.aggregates.after_fork_in_child` resets stores first)."""
        was_started = self._thread is not None
        self._stop.set()  # no such thread in a forked child; called in-process, the old one stops
        self._reset()
        if was_started:
            self.start()

    # -- reading ---------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The ``/monitoring/stats`` document over this process and the other live workers."""
        store = self.store
        now = store.clock()
        own = store.window_state()
        identity = self.identity
        with self._lock:
            try:
                sources, workers = self._sources(identity, own, now)
                window = self._merger.window(now, sources.values())
                self._extracts.forget(window, workers.keys())
                objectives = store.objective_rows(lambda short: self._short_counts(sources, short))
                document = self._merger.document(sources, now, window, objectives)
            except Exception:
                # Whatever broke may have left the running sums half-updated: start them again.
                self._merger = store.merger()
                raise
        document["per_process"] = False
        document["served_by"] = identity.pid
        document["workers"] = sorted(
            (
                {"pid": workers[name], "requests": state.requests_in_window(window.start)}
                for name, state in sources.items()
            ),
            key=lambda worker: worker["pid"],
        )
        return document

    def route_detail(self, key: RouteKey) -> dict[str, Any] | None:
        """The drill-down of ``key`` over this process and the other live workers (None: no request of
        it in the window)."""
        store = self.store
        now = store.clock()
        own = store.window_state()
        identity = self.identity
        with self._lock:
            found, _ = self._live_states(identity)
            newest = [own.newest_number, *(worker.state.newest_number for worker in found.values())]
            window = store.window_of(now, newest)
            self._extracts.forget(window, {identity.name, *found})
            parts, started = self._extracts.route_parts(self.directory, found, window, key)
        parts.append(route_slots_of(own.slots(), key))
        detail = store.route_detail_of(key, parts, now, window, min([own.started_unix, *started]))
        if detail is not None:
            detail["per_process"] = False
            detail["served_by"] = identity.pid
        return detail

    def _short_counts(
        self, sources: dict[str, WindowState], short: range
    ) -> list[dict[RouteKey, ObjectiveCounts]]:
        """Every source's objective counts over ``short``: this process's from its slots, the others'
        from their slots' extracts and their ``state.json``."""
        own = [
            short_counts(state.slots(), short) for name, state in sources.items() if name not in self._read
        ]
        workers = {name: self._read[name].worker for name in sources if name in self._read}
        return own + self._extracts.short_counts_of(self.directory, workers, short)

    def _live_states(self, identity: Identity) -> tuple[dict[str, WorkerState], dict[str, int]]:
        """Every readable live worker's state (not this process's), by directory name; and their pids."""
        found: dict[str, WorkerState] = {}
        pids: dict[str, int] = {}
        for name, pid in live_workers(self.directory, identity.name):
            worker = guarded_read(self.directory / name, self._worker_state, name)
            if worker is not None:
                found[name] = worker
                pids[name] = pid
        return found, pids

    def _sources(
        self, identity: Identity, own: WindowState, now: float
    ) -> tuple[dict[str, WindowState], dict[str, int]]:
        """This process's window and every readable live worker's, by directory name; and their pids."""
        directory = self.directory
        found, pids = self._live_states(identity)
        for gone in self._read.keys() - found.keys():
            del self._read[gone]
        for gone in self._held.keys() - found.keys():
            del self._held[gone]
        window = self._merger.window(now, [own, *(worker.state for worker in found.values())])
        sources = {identity.name: own}
        workers = {identity.name: identity.pid}
        for name, worker in found.items():
            state = guarded_read(directory / name, self._with_closed, name, worker, window)
            if state is not None:
                sources[name] = state
                workers[name] = pids[name]
        return sources, workers

    def _worker_state(self, path: Path, name: str) -> WorkerState:
        raw = read_bytes(path / STATE_FILE)
        cached = self._read.get(name)
        if cached is not None and cached.raw == raw:
            return cached.worker
        store = self.store
        worker = decode_state(
            json.loads(raw),
            server=self.identity.server,
            window_seconds=store.window_seconds,
            slot_seconds=store.slot_seconds,
        )
        self._read[name] = _ReadState(raw, worker)
        return worker

    def _with_closed(self, path: Path, name: str, worker: WorkerState, window: range) -> WindowState:
        """``worker``'s window with its closed slots. If the worker moved on meanwhile (the files of
        the state just read are gone), its new state is read once more."""
        try:
            return self._add_closed(path, name, worker, window)
        except FileNotFoundError:
            worker = self._worker_state(path, name)
            if worker.state.newest_number not in window:
                raise MalformedStateError(f"{name} moved past this read's window") from None
            return self._add_closed(path, name, worker, window)

    def _add_closed(self, path: Path, name: str, worker: WorkerState, window: range) -> WindowState:
        """The closed slots of ``worker`` in ``window``: the sum held (or the worker's newest), minus the
        slots of it that do not count, plus those closed since."""
        counted = {number for number in worker.closed_numbers if number >= window.start}
        if worker.sums_generation is None or not counted:
            self._held.pop(name, None)
            return worker.state

        def load(number: int) -> Slot:
            return load_slot(path, number)

        held = self._held.get(name)
        if held is not None and held.followed >= REBASE_AFTER:
            # Fold what the merger holds (as the last document left it) into one sum, in its place.
            folded = held.folded()
            self._merger.replace_parts(held.keys(name), sum_key(name, folded.base), folded.base)
            held = self._held[name] = folded
        if held is not None:
            try:
                held = held.following(counted, load)
            except FileNotFoundError:  # a slot the writer no longer keeps: start from its newest sum
                held = None
        if held is None:
            generation = worker.sums_generation
            base = decode_summed(read_json(path / sums_file(generation)), generation)
            held = FollowedSum(base, {}, {}).following(counted, load)
        self._held[name] = held
        return dataclasses.replace(worker.state, closed=held.added, summed=held.base, removed=held.removed)


_LIVE_EXCHANGES: Final[weakref.WeakSet[MultiprocessAggregates]] = weakref.WeakSet()


def reset_exchanges_after_fork() -> None:
    """In a forked child: every exchange gets a new identity and writer (after the stores' reset)."""
    for exchange in list(_LIVE_EXCHANGES):
        exchange.after_fork_in_child()


@atexit.register
def _close_all() -> None:
    for exchange in list(_LIVE_EXCHANGES):
        exchange.close()
