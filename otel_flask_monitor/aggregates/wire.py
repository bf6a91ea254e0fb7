"""The worker-file schema (with its format version): slots, sums and a worker's state as JSON, and back.

The other workers of a server read back, checked, the objects a worker wrote; multiprocess.py and
workers.py do the file I/O.

Files of one worker (``<dir>/<pid>-<start ms>/``):

- ``state.json`` (:func:`encode_state`): ``format`` (:data:`FORMAT`) and ``counters`` (the names of
  counts.COUNTERS, in wire order) first, then who wrote it, the window settings, the closed slot numbers
  present, the generation of the sums file, the slot still written, the recent errors. A reader that
  finds another format, other counters, another server or other window settings skips the worker.
- ``slot-<number>.json`` (:func:`encode_slot`): a closed slot, written once, with each route's slowest
  requests (the drill-down reads them from here).
- ``sums-<generation>.json`` (:func:`encode_summed`): closed slots added together, with each slot's
  total (the timeline's) and the slot numbers; written under a new generation now and then (the
  generation ``state.json`` names may hold some slots fewer or more than its closed ones).

Counts are flat JSON lists: ``[<counters in COUNTERS order>..., [key, count, ...], [code, count, ...]]``
(the latency buckets and the status codes; JSON object keys would be strings). A slot's slowest
requests: ``[[method, route, [[duration_ms, time_unix, status, path, trace_id], ...]], ...]``.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from otel_flask_monitor.aggregates.counts import (
    COUNTERS,
    SLOWEST_PER_SLOT,
    RouteCounts,
    RouteKey,
    Slot,
    SlowRequest,
    SummedSlots,
    counter_values,
)
from otel_flask_monitor.aggregates.merge import WindowState
from otel_flask_monitor.aggregates.store import ERROR_FIELDS

FORMAT: Final = 3
"""Version of the files' layout (readers of one version skip the other's files): 1 had no sums file, 2 no
status codes, ``latency_met`` or slowest requests."""
STATE_FILE: Final = "state.json"
MAX_FILE_BYTES: Final = 32 * 1024 * 1024
"""Files are bounded by (max_routes + 1) x latency buckets per slot; anything bigger is not ours."""

_ERROR_TYPES: Final[Mapping[str, tuple[type, ...]]] = {
    "time_unix": (int, float),
    "method": (str,),
    "route": (str,),
    "path": (str,),
    "status_code": (int,),
    "exception_type": (str, type(None)),
    "trace_id": (str, type(None)),
    "user_agent": (str, type(None)),
}
if tuple(_ERROR_TYPES) != ERROR_FIELDS:  # pragma: no cover - a programming error, caught at import
    raise AssertionError("wire._ERROR_TYPES and store.RecentError disagree")


_COUNTS_WIDTH: Final = len(COUNTERS) + 2
_INT: Final = frozenset({int})


class MalformedStateError(ValueError):
    """Exchanged data that is not what this module wrote."""


def slot_file(number: int) -> str:
    return f"slot-{number}.json"


def sums_file(generation: int) -> str:
    return f"sums-{generation}.json"


# -- counts and slots --------------------------------------------------------------------------------


def _flat(counts: dict[int, int]) -> list[int]:
    flat: list[int] = []
    for key, count in counts.items():
        flat.append(key)
        flat.append(count)
    return flat


def encode_counts(counts: RouteCounts) -> list[Any]:
    return [*counter_values(counts), _flat(counts.latency), _flat(counts.statuses)]


def _count_map(flat: object, what: str, requests: int) -> dict[int, int]:
    """``[key, count, ...]`` whose counts add up to ``requests`` (every request adds one to one key)."""
    if type(flat) is not list or len(flat) % 2 or not set(map(type, flat)) <= _INT:
        raise MalformedStateError(f"malformed {what}")
    counts = flat[1::2]
    if counts and min(counts) < 0:
        raise MalformedStateError(f"a negative count in the {what}")
    mapped = dict(zip(flat[::2], counts, strict=True))
    if len(mapped) != len(counts):
        raise MalformedStateError(f"a key twice in the {what}")
    # The running sums rely on it when they subtract.
    if sum(counts) != requests:
        raise MalformedStateError(f"the {what} do not add up to the requests")
    return mapped


def _integer(value: object, what: str) -> int:
    if type(value) is not int:
        raise MalformedStateError(f"not {what}: {value!r}")
    return value


_REQUESTS, _CLIENT_ERRORS, _SERVER_ERRORS, _LATENCY_MET = (
    COUNTERS.index(name) for name in ("requests", "client_errors", "server_errors", "latency_met")
)


def decode_counts(raw: object) -> RouteCounts:
    # Checked and built with C-level operations: a reader decodes a few thousand of these per slot.
    if type(raw) is not list or len(raw) != _COUNTS_WIDTH:
        raise MalformedStateError("malformed counts")
    values = raw[:-2]
    if not set(map(type, values)) <= _INT or min(values) < 0:
        raise MalformedStateError("not counts")
    requests = values[_REQUESTS]
    if values[_CLIENT_ERRORS] + values[_SERVER_ERRORS] > requests or values[_LATENCY_MET] > requests:
        raise MalformedStateError("counts exceed the requests")
    return RouteCounts.of(
        values,
        _count_map(raw[-2], "latency buckets", requests),
        _count_map(raw[-1], "status codes", requests),
    )


def encode_routes(routes: Mapping[tuple[str, str], RouteCounts]) -> list[Any]:
    return [[method, route, encode_counts(counts)] for (method, route), counts in routes.items()]


def decode_routes(raw: object) -> dict[tuple[str, str], RouteCounts]:
    if not isinstance(raw, list):
        raise MalformedStateError("malformed routes")
    routes: dict[tuple[str, str], RouteCounts] = {}
    for entry in raw:
        if not isinstance(entry, list) or len(entry) != 3:
            raise MalformedStateError("malformed route entry")
        method, route, counts = entry
        if not isinstance(method, str) or not isinstance(route, str):
            raise MalformedStateError("malformed route key")
        decoded = decode_counts(counts)
        if decoded.requests == 0:
            # A recorded route always has a request; the running sums assume so when they subtract it.
            raise MalformedStateError("route statistics without requests")
        routes[(method, route)] = decoded
    return routes


def encode_slot(slot: Slot) -> dict[str, Any]:
    """A slot as JSON-ready data; :func:`decode_slot` gives back an equal slot."""
    return {
        "number": slot.number,
        "total": encode_counts(slot.total),
        "routes": encode_routes(slot.routes),
        "slowest": [
            [method, route, [list(entry) for entry in heap]] for (method, route), heap in slot.slowest.items()
        ],
    }


_SLOW_TYPES: Final = ((int, float), (int, float), (int,), (str,), (str,))


def decode_slowest(raw: object, routes: dict[RouteKey, RouteCounts]) -> dict[RouteKey, list[SlowRequest]]:
    """A slot's slowest requests, at most :data:`SLOWEST_PER_SLOT` per route of the slot, as heaps."""
    if not isinstance(raw, list):
        raise MalformedStateError("malformed slowest requests")
    slowest: dict[RouteKey, list[SlowRequest]] = {}
    for entry in raw:
        if not isinstance(entry, list) or len(entry) != 3:
            raise MalformedStateError("malformed slowest entry")
        method, route, entries = entry
        key = (method, route)
        if key not in routes or not isinstance(entries, list) or not 0 < len(entries) <= SLOWEST_PER_SLOT:
            raise MalformedStateError("slowest requests of no route, or too many")
        heap: list[SlowRequest] = []
        for slow in entries:
            if (
                not isinstance(slow, list)
                or len(slow) != len(_SLOW_TYPES)
                or any(
                    isinstance(value, bool) or not isinstance(value, kinds)
                    for value, kinds in zip(slow, _SLOW_TYPES, strict=True)
                )
            ):
                raise MalformedStateError("malformed slow request")
            duration, time_unix, status, path, trace_id = slow
            heap.append((float(duration), float(time_unix), status, path, trace_id))
        heapq.heapify(heap)
        slowest[key] = heap
    return slowest


def decode_slot(raw: object) -> Slot:
    """The inverse of :func:`encode_slot`; raises :class:`MalformedStateError` on anything malformed."""
    if not isinstance(raw, dict):
        raise MalformedStateError("malformed slot")
    slot = Slot(_integer(raw.get("number"), "a slot number"))
    slot.routes = decode_routes(raw.get("routes"))
    slot.total = decode_counts(raw.get("total"))
    slot.slowest = decode_slowest(raw.get("slowest"), slot.routes)
    return slot


def encode_summed(summed: SummedSlots) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "generation": summed.generation,
        "numbers": list(summed.numbers),
        "total": encode_counts(summed.total),
        "routes": encode_routes(summed.routes),
        "slot_totals": [[number, encode_counts(counts)] for number, counts in summed.slot_totals.items()],
    }


def decode_summed(raw: object, generation: int) -> SummedSlots:
    """The inverse of :func:`encode_summed`, for the ``generation`` a state names."""
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise MalformedStateError("malformed sums")
    if raw.get("generation") != generation:
        raise MalformedStateError("sums of another generation")
    numbers = raw.get("numbers")
    if not isinstance(numbers, list):
        raise MalformedStateError("malformed slot numbers")
    slot_totals: dict[int, RouteCounts] = {}
    entries = raw.get("slot_totals")
    if not isinstance(entries, list):
        raise MalformedStateError("malformed slot totals")
    for entry in entries:
        if not isinstance(entry, list) or len(entry) != 2:
            raise MalformedStateError("malformed slot total")
        slot_totals[_integer(entry[0], "a slot number")] = decode_counts(entry[1])
    if sorted(slot_totals) != numbers:
        raise MalformedStateError("slot totals of other slots")
    return SummedSlots(
        generation=generation,
        numbers=tuple(numbers),
        routes=decode_routes(raw.get("routes")),
        total=decode_counts(raw.get("total")),
        slot_totals=slot_totals,
    )


# -- recent errors and the worker's state ------------------------------------------------------------


def decode_errors(raw: object) -> list[dict[str, Any]]:
    """A recent-error list as :meth:`RecentError.as_dict` wrote it (newest first), checked."""
    if not isinstance(raw, list):
        raise MalformedStateError("malformed error list")
    errors: list[dict[str, Any]] = []
    for entry in raw:
        if not isinstance(entry, dict):
            raise MalformedStateError("malformed error entry")
        error = {name: entry.get(name) for name in ERROR_FIELDS}
        for name, kinds in _ERROR_TYPES.items():
            if not isinstance(error[name], kinds) or isinstance(error[name], bool):
                raise MalformedStateError(f"malformed error field {name!r}")
        errors.append(error)
    return errors


@dataclass(frozen=True, slots=True)
class WorkerHeader:
    """Who wrote a state and for which window: a reader accepts only its own server's and window's."""

    pid: int
    start_ms: int
    server: str
    window_seconds: int
    slot_seconds: int


@dataclass(frozen=True, slots=True)
class WorkerState:
    """A decoded ``state.json``: the window without its closed slots, which live in other files."""

    state: WindowState
    """With ``closed`` empty: the reader fills in the closed slots or their sums."""
    closed_numbers: tuple[int, ...]
    sums_generation: int | None
    """The ``sums-<generation>.json`` holding ``closed_numbers`` added together (None: no closed slot)."""


def encode_state(
    header: WorkerHeader,
    written_at_unix: float,
    state: WindowState,
    closed_numbers: tuple[int, ...],
    sums_generation: int | None,
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "counters": list(COUNTERS),
        "pid": header.pid,
        "start_ms": header.start_ms,
        "server": header.server,
        "written_at_unix": written_at_unix,
        "window_seconds": header.window_seconds,
        "slot_seconds": header.slot_seconds,
        "started_unix": state.started_unix,
        "newest_number": state.newest_number,
        "tracked_routes": state.tracked_routes,
        "closed": list(closed_numbers),
        "sums": sums_generation,
        "current": None if state.current is None else encode_slot(state.current),
        "recent_errors": state.recent_errors,
        "recent_client_errors": state.recent_client_errors,
    }


def decode_state(raw: object, *, server: str, window_seconds: int, slot_seconds: int) -> WorkerState:
    """A ``state.json`` written for ``server`` with these window settings; anything else raises
    :class:`MalformedStateError`."""
    expected = {
        "format": FORMAT,
        "counters": list(COUNTERS),
        "server": server,
        "window_seconds": window_seconds,
        "slot_seconds": slot_seconds,
    }
    if not isinstance(raw, dict) or any(raw.get(key) != value for key, value in expected.items()):
        raise MalformedStateError("another format, server or window")
    closed = raw.get("closed")
    if not isinstance(closed, list):
        raise MalformedStateError("malformed closed slot list")
    numbers = tuple(_integer(number, "a slot number") for number in closed)
    generation = raw.get("sums")
    if (generation is None) != (not numbers) or (generation is not None and type(generation) is not int):
        raise MalformedStateError("malformed sums generation")
    started_unix = raw.get("started_unix")
    if not isinstance(started_unix, (int, float)) or isinstance(started_unix, bool):
        raise MalformedStateError("malformed started_unix")
    current = raw.get("current")
    return WorkerState(
        state=WindowState(
            started_unix=float(started_unix),
            newest_number=_integer(raw.get("newest_number"), "a slot number"),
            closed={},
            current=None if current is None else decode_slot(current),
            recent_errors=decode_errors(raw.get("recent_errors")),
            recent_client_errors=decode_errors(raw.get("recent_client_errors")),
            tracked_routes=_integer(raw.get("tracked_routes"), "a route count"),
        ),
        closed_numbers=numbers,
        sums_generation=generation,
    )
