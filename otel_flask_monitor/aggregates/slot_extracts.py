"""What a reader keeps of other workers' closed slots beside their sums: extracts, read once each.

The running sums (merge.py) hold another worker's closed slots added together; the drill-down of one
route needs that route's part of every slot, and the live objectives the last five minutes' counts per
route. A reader reads each such slot file once and keeps of it only the objective counts per route and
the drilled-down route's part (read again when another route is drilled into), for the slots of the
window: at most ``slot_count`` extracts per worker.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from otel_flask_monitor.aggregates.counts import RouteKey, Slot
from otel_flask_monitor.aggregates.drill import RouteSlot, route_slots_of
from otel_flask_monitor.aggregates.live_objectives import (
    ObjectiveCounts,
    add_objective_counts,
    slot_objective_counts,
)
from otel_flask_monitor.aggregates.wire import MalformedStateError, WorkerState, decode_slot, slot_file
from otel_flask_monitor.aggregates.workers import guarded_read, read_json


def load_slot(path: Path, number: int) -> Slot:
    """Closed slot ``number`` of the worker whose directory is ``path``."""
    slot = decode_slot(read_json(path / slot_file(number)))
    if slot.number != number:
        raise MalformedStateError(f"{slot_file(number)} holds slot {slot.number}")
    return slot


@dataclass(frozen=True, slots=True)
class SlotExtract:
    objective: dict[RouteKey, ObjectiveCounts]
    focus: RouteKey | None
    """The route drilled into when the slot was read (None: none)."""
    part: RouteSlot | None


class SlotExtracts:
    """Extracts of other workers' closed slots, by (worker directory name, slot number). Not
    thread-safe: the exchange's read lock serialises."""

    def __init__(self) -> None:
        self._extracts: dict[tuple[str, int], SlotExtract] = {}

    def __len__(self) -> int:
        return len(self._extracts)

    def extract(self, path: Path, name: str, number: int, focus: RouteKey | None) -> SlotExtract:
        cached = self._extracts.get((name, number))
        if cached is not None and (focus is None or cached.focus == focus):
            return cached
        slot = load_slot(path, number)
        part = None if focus is None else route_slots_of([slot], focus)[0]
        extract = self._extracts[(name, number)] = SlotExtract(
            slot_objective_counts(slot.routes), focus, part
        )
        return extract

    def forget(self, window: range, names: Iterable[str]) -> None:
        """Drop the extracts of slots older than ``window`` and of workers not in ``names``."""
        live = set(names)
        for key in [key for key in self._extracts if key[1] < window.start or key[0] not in live]:
            del self._extracts[key]

    def route_part(
        self, path: Path, name: str, worker: WorkerState, window: range, key: RouteKey
    ) -> list[RouteSlot]:
        """``key``'s part of the worker's slots in ``window`` (closed ones, and the one it writes)."""
        part = []
        for number in worker.closed_numbers:
            if number in window:
                extracted = self.extract(path, name, number, key).part
                assert extracted is not None
                part.append(extracted)
        current = worker.state.current
        if current is not None:
            part.extend(route_slots_of([current], key))
        return part

    def route_parts(
        self, directory: Path, workers: Mapping[str, WorkerState], window: range, key: RouteKey
    ) -> tuple[list[list[RouteSlot]], list[float]]:
        """``key``'s part of each readable worker's slots in ``window``, and when those workers started."""
        parts, started = [], []
        for name, worker in workers.items():
            part = guarded_read(directory / name, self.route_part, name, worker, window, key)
            if part is not None:
                parts.append(part)
                started.append(worker.state.started_unix)
        return parts, started

    def short_counts_of(
        self, directory: Path, workers: Mapping[str, WorkerState], short: range
    ) -> list[dict[RouteKey, ObjectiveCounts]]:
        """Each readable worker's objective counts per route over ``short``."""
        found = [
            guarded_read(directory / name, self.short_counts, name, w, short) for name, w in workers.items()
        ]
        return [counts for counts in found if counts is not None]

    def short_counts(
        self, path: Path, name: str, worker: WorkerState, short: range
    ) -> dict[RouteKey, ObjectiveCounts]:
        """The worker's objective counts per route over ``short``."""
        counts: dict[RouteKey, ObjectiveCounts] = {}
        for number in worker.closed_numbers:
            if number in short:
                add_objective_counts(counts, self.extract(path, name, number, None).objective)
        current = worker.state.current
        if current is not None and current.number in short:
            add_objective_counts(counts, slot_objective_counts(current.routes))
        return counts
