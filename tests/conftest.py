"""Test-wide OpenTelemetry providers: in-memory exporters, installed once (globals can be set once).

Because providers are configured here, every in-process FlaskMonitor uses them as they are, the way
it treats providers a user or ``opentelemetry-instrument`` configured. The monitor's own provider
set-up is exercised in subprocesses (tests/test_telemetry_setup.py).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest
from opentelemetry import metrics, trace
from opentelemetry._logs import set_logger_provider
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

# Several tests stop the servers they start with SIGINT (Ctrl-C: a normal interpreter exit). A shell
# without job control starts background commands (`make test &` in a script, nohup) with SIGINT
# ignored, and an ignored signal stays ignored in every process started from then on: those servers
# would never stop. A handled signal is reset to the default in a started program, so handle it here.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Every log attribute for the in-process monitors: the tests of redaction, caps, streaming and the
# record's fields read attributes the lean default leaves out. An option passed to FlaskMonitor
# overrides it; tests/test_log_attributes.py tests the default set itself, without it.
os.environ.setdefault("OTEL_FLASK_MONITOR_LOG_ATTRIBUTES", "full")

SPAN_EXPORTER = InMemorySpanExporter()
LOG_EXPORTER = InMemoryLogRecordExporter()
METRIC_READER = InMemoryMetricReader()

_tracer_provider = TracerProvider()
_tracer_provider.add_span_processor(SimpleSpanProcessor(SPAN_EXPORTER))
trace.set_tracer_provider(_tracer_provider)
_logger_provider = LoggerProvider()
_logger_provider.add_log_record_processor(SimpleLogRecordProcessor(LOG_EXPORTER))
set_logger_provider(_logger_provider)
metrics.set_meter_provider(MeterProvider(metric_readers=[METRIC_READER]))


class Exported:
    """What the in-memory exporters received since the test began."""

    def spans(self) -> list[ReadableSpan]:
        return list(SPAN_EXPORTER.get_finished_spans())

    def server_spans(self) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.kind == trace.SpanKind.SERVER]

    def logs(self) -> list[ReadableLogRecord]:
        return list(LOG_EXPORTER.get_finished_logs())

    def request_logs(self) -> list[ReadableLogRecord]:
        return [r for r in self.logs() if r.log_record.event_name == "http.server.request"]


@pytest.fixture
def exported() -> Iterator[Exported]:
    SPAN_EXPORTER.clear()
    LOG_EXPORTER.clear()
    yield Exported()
    SPAN_EXPORTER.clear()
    LOG_EXPORTER.clear()


@pytest.fixture
def metric_reader() -> InMemoryMetricReader:
    return METRIC_READER
