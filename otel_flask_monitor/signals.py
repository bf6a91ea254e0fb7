"""Record -> its OTel attributes, built once here -> the server span and the log record.

The consumer of the two signals that leave the process with the record: it builds the attributes
once per record and hands the same mapping to both, so neither depends on the other having run. A
failure of one is counted under its own name (``consumer 'span'``, ``consumer 'log'``) and leaves
the other its record.
"""

from __future__ import annotations

from opentelemetry.util.types import AttributeValue

from otel_flask_monitor._otel_compat import Logger
from otel_flask_monitor.attributes import HEADER_PREFIX, AttributeBound, record_attributes
from otel_flask_monitor.dispatch import FailureReporter
from otel_flask_monitor.log_policy import (
    DEFAULT_LOG_ATTRIBUTES,
    FULL_LOG_ATTRIBUTES,
    SAMPLE_RATE_ATTRIBUTE,
    LogSampler,
)
from otel_flask_monitor.logs import emit_request_log
from otel_flask_monitor.record import RequestRecord
from otel_flask_monitor.spans import SpanWriter


class RecordSignals:
    """The span and log consumer of one monitor; either may be switched off (``None``).

    The log sampler decides first: a request it does not log costs no attributes at all (unless the
    span, opt-in, takes them)."""

    __slots__ = ("_bound", "_failures", "_log_attributes", "_logger", "_sampler", "_spans")

    def __init__(
        self,
        *,
        spans: SpanWriter | None,
        logger: Logger | None,
        failures: FailureReporter,
        bound: AttributeBound | None = None,
        log_attributes: frozenset[str] = DEFAULT_LOG_ATTRIBUTES,
        sampler: LogSampler | None = None,
    ) -> None:
        """``bound``: what keeps a record's attributes within one Loki line (None: the settings' own
        limits already do). ``log_attributes``: the log record's (:mod:`otel_flask_monitor.log_policy`);
        the span takes from the full set. ``sampler``: None logs every request."""
        self._spans = spans
        self._logger = logger
        self._failures = failures
        self._bound = bound
        self._log_attributes = log_attributes
        self._sampler = sampler or LogSampler(1.0, 0.0)

    @property
    def enabled(self) -> bool:
        return self._spans is not None or self._logger is not None

    def attributes(
        self, record: RequestRecord, selected: frozenset[str] = FULL_LOG_ATTRIBUTES
    ) -> dict[str, AttributeValue]:
        attributes = record_attributes(record, selected)
        return attributes if self._bound is None else self._bound.fit(attributes)

    def __call__(self, record: RequestRecord) -> None:
        span_attributes = self._write_span(self._spans, record) if self._spans is not None else None
        if self._logger is not None:
            try:
                sample_rate = self._sampler.sample_rate(record)
                if sample_rate is None:
                    return
                attributes = self._log_attributes_of(record, span_attributes)
                attributes[SAMPLE_RATE_ATTRIBUTE] = sample_rate
                emit_request_log(self._logger, record, attributes)
            except Exception:
                self._failures.report("consumer 'log'")

    def _log_attributes_of(
        self, record: RequestRecord, span_attributes: dict[str, AttributeValue] | None
    ) -> dict[str, AttributeValue]:
        """The log record's selection, taken from the span's full set when that was built (and is done
        with: the span copied what it kept)."""
        if span_attributes is None:
            return self.attributes(record, self._log_attributes)
        if self._log_attributes is FULL_LOG_ATTRIBUTES:
            return span_attributes
        selected = self._log_attributes
        return {
            key: value
            for key, value in span_attributes.items()
            if key in selected or key.startswith(HEADER_PREFIX)
        }

    def enrich_span(self, record: RequestRecord) -> None:
        """Only the span, now: a streamed body's span ends before its record is complete."""
        if self._spans is not None:
            self._write_span(self._spans, record)

    def _write_span(self, spans: SpanWriter, record: RequestRecord) -> dict[str, AttributeValue] | None:
        """Write the span; a failure is counted and never stops the record's other consumers (nor,
        for a streamed body, its dispatch when the body ends). Returns the attributes built for the
        span (None if building them failed), which the log record takes its selection from."""
        attributes = None
        try:
            attributes = self.attributes(record)
            spans.enrich(record, attributes)
        except Exception:
            self._failures.report("consumer 'span'")
        return attributes
