"""What each log attribute costs per request: built by the monitor, taken in by the SDK, encoded for OTLP.

    python benchmarks/log_attributes.py                 # 15 interleaved rounds, batches of 512
    python benchmarks/log_attributes.py --rounds 2      # quick smoke run

The input is benchmarks/otlp_encoding.py's: the shop demo with ``FlaskMonitor`` serves a mix of
512 requests, here with ``log_attributes=full``; the script keeps the request records the monitor
built and the log records it exported. Per selection (``default``, ``full``, and ``default`` plus
each opt-in attribute alone) one round times ``attributes.record_attributes`` over the records, the
SDK logger's ``emit`` of the result (a provider with no processor: its log record, the attributes
checked and copied) and the fast encoder over the log records cut to that selection (plus
``sample_rate``), alternating;
the figure is CPU µs per request (median of the rounds) and the difference to ``default``. Bytes
are what Loki counts for structured metadata (name plus value as text), the mean over the batch of
the records that carry the attribute, with how many do.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import statistics
import sys
from collections.abc import Callable, Sequence
from typing import Any

from otlp_encoding import capture_batches, cpu_seconds, parse_options


def capture(count: int) -> tuple[list[Any], list[Any]]:
    """The request records the monitor built and the request log records it exported."""
    os.environ["OTEL_FLASK_MONITOR_LOG_ATTRIBUTES"] = "full"
    from otel_flask_monitor import signals

    records: list[Any] = []
    build = signals.record_attributes

    def keeping(record: Any, selected: frozenset[str]) -> Any:
        records.append(record)
        return build(record, selected)

    signals.record_attributes = keeping  # type: ignore[assignment]
    try:
        _, logs = capture_batches(count)
    finally:
        signals.record_attributes = build  # type: ignore[assignment]
    return records[:count], logs


def cut_to(logs: list[Any], names: frozenset[str]) -> list[Any]:
    cut = []
    for readable in logs:
        log_record = copy.copy(readable.log_record)
        log_record.attributes = {
            key: value for key, value in (readable.log_record.attributes or {}).items() if key in names
        }
        cut.append(dataclasses.replace(readable, log_record=log_record))
    return cut


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(__doc__, argv)

    from otel_flask_monitor import _otel_compat as compat
    from otel_flask_monitor import otlp_encoding
    from otel_flask_monitor.attributes import entry_bytes, record_attributes
    from otel_flask_monitor.log_policy import (
        DEFAULT_LOG_ATTRIBUTES,
        FULL_LOG_ATTRIBUTES,
        OPTIONAL_LOG_ATTRIBUTES,
        SAMPLE_RATE_ATTRIBUTE,
        parse_log_attributes,
    )

    records, logs = capture(options.batch)
    # The SDK's side of an emit (its LogRecord, the attributes checked and copied), with no processor.
    logger = compat.SdkLoggerProvider().get_logger("bench")
    selections = {"default": DEFAULT_LOG_ATTRIBUTES, "full": FULL_LOG_ATTRIBUTES}
    for name in OPTIONAL_LOG_ATTRIBUTES:
        selections[f"+{name}"] = parse_log_attributes("bench", ["default", name])
    batches = {label: cut_to(logs, names | {SAMPLE_RATE_ATTRIBUTE}) for label, names in selections.items()}

    def run(label: str) -> Callable[[], object]:
        names, batch = selections[label], batches[label]

        def build_and_encode() -> object:
            for record in records:
                logger.emit(body="GET", attributes=record_attributes(record, names))
            return otlp_encoding.encode_logs(batch)

        return build_and_encode

    per_request: dict[str, list[float]] = {label: [] for label in selections}
    labels = list(selections)
    for round_number in range(options.rounds):
        for label in labels if round_number % 2 == 0 else labels[::-1]:
            per_request[label].append(cpu_seconds(run(label)) / options.batch * 1e6)

    full_attributes = [readable.log_record.attributes or {} for readable in logs]
    baseline = statistics.median(per_request["default"])
    print(f"{options.batch} requests, {options.rounds} interleaved rounds; CPU µs per request (median)")
    print(f"{'selection':<38} {'µs':>7} {'Δ default':>10} {'bytes':>7} {'carried by':>11}")
    for label in labels:
        median = statistics.median(per_request[label])
        name = label[1:] if label.startswith("+") else None
        if name is None:
            chosen = selections[label]
            sizes = [sum(entry_bytes(k, v) for k, v in a.items() if k in chosen) for a in full_attributes]
            carried = len(sizes)
        else:
            sizes = [entry_bytes(name, a[name]) for a in full_attributes if name in a]
            carried = len(sizes)
        mean_bytes = statistics.mean(sizes) if sizes else 0.0
        print(
            f"{label:<38} {median:7.2f} {median - baseline:+10.2f} {mean_bytes:7.0f} "
            f"{carried / len(full_attributes):10.0%}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
