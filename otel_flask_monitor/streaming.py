"""A streamed response body measured to its end: bytes the server took, time, CPU, how it ended.

Knows nothing of Flask: it wraps the iterable a WSGI response body is made of (PEP 3333) and reports
once, when the server has taken the last chunk, when the body raised, or when the server closed it
(the client went away, or the server is shutting down), whichever comes first.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Final

CLOSED_EARLY: Final = "closed_early"
"""The server closed the body before its end: almost always the client went away."""
EXCEPTION: Final = "exception"
"""The body raised after the status line was sent: the client got a truncated response."""


@dataclass(frozen=True, slots=True)
class BodyOutcome:
    end_ns: int
    """``time.perf_counter_ns()`` when the body ended."""
    end_time_ns: int
    """Wall clock (ns since the epoch) when the body ended."""
    bytes_sent: int
    """Bytes of the chunks the server took and asked past (the last chunk of a body cut short is
    not counted: the server's write of it is what failed)."""
    cpu_ns: int
    """CPU time spent producing the chunks (inside the body's iterator, on the thread that asked)."""
    cut_short: str | None = None
    """None for a complete body, else :data:`CLOSED_EARLY` or :data:`EXCEPTION`."""
    error: BaseException | None = None
    """What the body raised (only with :data:`EXCEPTION`)."""


class MeasuredBody:
    """Iterates ``body`` for the server, yielding bytes, and calls ``on_end`` exactly once."""

    __slots__ = ("_bodiless", "_body", "_cpu_ns", "_iterator", "_on_end", "_pending", "_sent", "_unreported")

    def __init__(
        self, body: Iterable[bytes | str], on_end: Callable[[BodyOutcome], None], *, bodiless: bool
    ) -> None:
        self._body = body
        # HEAD, 1xx, 204, 304: Werkzeug sends no body and only closes this one; that is the
        # complete answer, not a body cut short.
        self._bodiless = bodiless
        self._iterator: Iterator[bytes | str] | None = None
        self._on_end = on_end
        self._sent = 0
        self._pending = 0
        self._cpu_ns = 0
        # list.pop is atomic: a close() racing the last next() still reports once.
        self._unreported = [True]

    def __iter__(self) -> MeasuredBody:
        return self

    def __next__(self) -> bytes:
        # A server asks for the next chunk only once it has written the previous one.
        self._sent += self._pending
        self._pending = 0
        cpu_start = time.thread_time_ns()
        try:
            if self._iterator is None:
                self._iterator = iter(self._body)
            chunk = next(self._iterator)
        except StopIteration:
            self._cpu_ns += time.thread_time_ns() - cpu_start
            self._report(None, None)
            raise
        except BaseException as error:
            self._cpu_ns += time.thread_time_ns() - cpu_start
            self._report(EXCEPTION, error)
            raise
        self._cpu_ns += time.thread_time_ns() - cpu_start
        # Encoded here as Werkzeug would encode it further out, so that the count is of bytes.
        data = chunk.encode() if isinstance(chunk, str) else chunk
        self._pending = len(data)
        return data

    def close(self) -> None:
        """PEP 3333: the server calls this once it is done with the body, complete or not."""
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            # Not reported yet: the server stopped before the end (the chunk it was writing when
            # the client went away is not counted).
            self._report(None if self._bodiless else CLOSED_EARLY, None)

    def _report(self, cut_short: str | None, error: BaseException | None) -> None:
        try:
            self._unreported.pop()
        except IndexError:
            return
        self._on_end(
            BodyOutcome(
                end_ns=time.perf_counter_ns(),
                end_time_ns=time.time_ns(),
                bytes_sent=self._sent,
                cpu_ns=self._cpu_ns,
                cut_short=cut_short,
                error=error,
            )
        )
