"""Record -> its OTel attributes, built once here -> the server span and the log record.

The consumer of the two signals that leave the process with the record: it builds the attributes
once per record and hands the same mapping to both, so neither depends on the other having run. A
failure of one is counted under its own name (``consumer 'span'``, ``consumer 'log'``) and leaves
the other its record.
"""

from __future__ import annotations

from opentelemetry.util.types import AttributeValue

from otel_flask_monitor._otel_compat import Logger
from otel_flask_monitor.attributes import AttributeBound, record_attributes
from otel_flask_monitor.dispatch import FailureReporter
from otel_flask_monitor.logs import emit_request_log
from otel_flask_monitor.record import RequestRecord
from otel_flask_monitor.spans import SpanWriter


class RecordSignals:
    """The span and log consumer of one monitor; either may be switched off (``None``)."""

    __slots__ = ("_bound", "_failures", "_logger", "_spans")

    def __init__(
        self,
        *,
        spans: SpanWriter | None,
        logger: Logger | None,
        failures: FailureReporter,
        bound: AttributeBound | None = None,
    ) -> None:
        """``bound``: what keeps a record's attributes within one Loki line (None: the settings' own
        limits already do)."""
        self._spans = spans
        self._logger = logger
        self._failures = failures
        self._bound = bound

    @property
    def enabled(self) -> bool:
        return self._spans is not None or self._logger is not None

    def attributes(self, record: RequestRecord) -> dict[str, AttributeValue]:
        attributes = record_attributes(record)
        return attributes if self._bound is None else self._bound.fit(attributes)

    def __call__(self, record: RequestRecord) -> None:
        attributes = self.attributes(record)
        if self._spans is not None:
            try:
                self._spans.enrich(record, attributes)
            except Exception:
                self._failures.report("consumer 'span'")
        if self._logger is not None:
            try:
                emit_request_log(self._logger, record, attributes)
            except Exception:
                self._failures.report("consumer 'log'")

    def enrich_span(self, record: RequestRecord) -> None:
        """Only the span, now: a streamed body's span ends before its record is complete."""
        if self._spans is not None:
            self._spans.enrich(record, self.attributes(record))
