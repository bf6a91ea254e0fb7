"""Prometheus' name for an OTLP metric (a helper module for the tests, not a test file).

The translation strategy UnderscoreEscapingWithSuffixes, ported from github.com/prometheus/otlptranslator
v1.0.0 (metric_namer.go normalizeName, unit_namer.go), the version prometheus/prometheus v3.7.3 builds
with; tests/test_deployment_files.py checks it against the upstream test cases.
"""

from __future__ import annotations

import re
from typing import Final

_OTLP_UNITS: Final = {
    "d": "days",
    "h": "hours",
    "min": "minutes",
    "s": "seconds",
    "ms": "milliseconds",
    "us": "microseconds",
    "ns": "nanoseconds",
    "By": "bytes",
    "KiBy": "kibibytes",
    "MiBy": "mebibytes",
    "GiBy": "gibibytes",
    "TiBy": "tibibytes",
    "KBy": "kilobytes",
    "MBy": "megabytes",
    "GBy": "gigabytes",
    "TBy": "terabytes",
    "m": "meters",
    "V": "volts",
    "A": "amperes",
    "J": "joules",
    "W": "watts",
    "g": "grams",
    "Cel": "celsius",
    "Hz": "hertz",
    "1": "",
    "%": "percent",
}
_OTLP_PER_UNITS: Final = {
    "s": "second",
    "m": "minute",
    "h": "hour",
    "d": "day",
    "w": "week",
    "mo": "month",
    "y": "year",
}


def _clean_unit(unit: str) -> str:
    return re.sub(r"_+", "_", re.sub(r"[^a-zA-Z0-9:]", "_", unit)).removeprefix("_")


def _unit_suffix(unit: str) -> str:
    return "" if not unit or "{" in unit or "}" in unit else unit


def prometheus_metric_name(name: str, unit: str, kind: str) -> str:
    """The name Prometheus 3.7 gives an OTLP metric; ``kind``: gauge, counter, updown or histogram."""
    tokens = [token for token in re.split(r"[^a-zA-Z0-9:]", name) if token]
    main, _, per = (part.strip() for part in unit.partition("/"))
    main_suffix = _clean_unit(_OTLP_UNITS.get(main, main) if _unit_suffix(main) else "")
    per_unit = _OTLP_PER_UNITS.get(per, per) if _unit_suffix(per) else ""
    per_suffix = _clean_unit(f"per_{per_unit}" if per_unit else "")
    if main_suffix in tokens:
        main_suffix = ""
    per_suffix = "" if per_suffix == "per_" else per_suffix.removesuffix("_")
    if per_suffix in tokens:
        per_suffix = ""
    if per_suffix:
        main_suffix = main_suffix.removesuffix("_")
    tokens += [suffix for suffix in (main_suffix, per_suffix) if suffix]
    if kind == "counter":
        tokens = [token for token in tokens if token != "total"] + ["total"]
    if unit == "1" and kind == "gauge":
        tokens = [token for token in tokens if token != "ratio"] + ["ratio"]
    normalized = "_".join(tokens)
    return f"_{normalized}" if normalized[:1].isdigit() else normalized
