"""Hands each finished record to the consumers; a consumer that fails never reaches the request."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from otel_flask_monitor.record import RequestRecord

Consumer = Callable[[RequestRecord], None]

_logger = logging.getLogger("otel_flask_monitor")


class FailureReporter:
    """Counts internal failures per place and logs only the first of each, with its traceback."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}

    def report(self, where: str) -> None:
        """Call from an ``except`` block."""
        with self._lock:
            count = self._counts.get(where, 0) + 1
            self._counts[where] = count
        if count == 1:
            _logger.warning(
                "otel_flask_monitor: %s failed; the request was not affected and further failures "
                "here are only counted (see /monitoring/health)",
                where,
                exc_info=True,
            )

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


class RecordDispatcher:
    def __init__(self, consumers: Sequence[tuple[str, Consumer]], failures: FailureReporter) -> None:
        self._consumers = tuple(consumers)
        self._failures = failures

    def dispatch(self, record: RequestRecord) -> None:
        for name, consumer in self._consumers:
            try:
                consumer(record)
            except Exception:
                self._failures.report(f"consumer {name!r}")
