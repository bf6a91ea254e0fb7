"""The private OpenTelemetry surface is fenced: every private name the monitor relies on is listed in
``_otel_private_names.PRIVATE_NAMES`` and present in the installed packages, and no other module of the
package imports an underscore module of OpenTelemetry or reads a private attribute."""

from __future__ import annotations

import ast
import contextlib
import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest
from flask import Flask
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_flask_monitor import _otel_compat as compat
from otel_flask_monitor import _otel_private_names as names

PACKAGE: Final = Path(__file__).resolve().parent.parent / "otel_flask_monitor"

# Underscore names of other libraries the package reads, each for a reason of its own.
NOT_OPENTELEMETRY: Final = {
    "_get_current_object": "werkzeug's LocalProxy: its documented way to the proxied object",
    "_got_first_request": "Flask: whether hooks may still be registered on an app",
}


def private_surface_problems(entries: tuple[names.PrivateName, ...] = names.PRIVATE_NAMES) -> list[str]:
    """One line per entry the installed packages lack or hold in another shape."""
    problems: list[str] = []
    with samples() as objects:
        for entry in entries:
            where = f"{entry.owner} {entry.path} ({entry.used_for})"
            try:
                if entry.owner == "module":
                    module, _, name = entry.path.partition(":")
                    value: Any = getattr(__import__(module, fromlist=[name]), name)
                elif entry.owner == "logger":
                    value = __import__(entry.path, fromlist=["_"])
                else:
                    value = compat.read_attribute_path(objects[entry.owner], entry.path)
                holds = entry.holds(value)
            except Exception as error:
                problems.append(f"{where}: {type(error).__name__}: {error}")
                continue
            if not holds:
                problems.append(f"{where}: present, but {value!r} is of another shape")
    return problems


@contextlib.contextmanager
def samples() -> Iterator[dict[str, Any]]:
    """One fresh object of each kind ``PRIVATE_NAMES`` reads private attributes on."""
    app = Flask("otel_flask_monitor_compat_check")
    FlaskInstrumentor().instrument_app(app)
    objects: dict[str, Any] = {
        "tracer_provider": TracerProvider(shutdown_on_exit=False),
        "logger_provider": compat.SdkLoggerProvider(shutdown_on_exit=False),
        "meter_provider": MeterProvider(shutdown_on_exit=False),
        "metric_reader": PeriodicExportingMetricReader(
            ConsoleMetricExporter(), export_interval_millis=math.inf
        ),
        "log_batch_processor": compat.BatchLogRecordProcessor(compat.InMemoryLogRecordExporter()),
        "span_batch_processor": BatchSpanProcessor(InMemorySpanExporter()),
        **{
            f"otlp_http_{name}_exporter": compat.otlp_exporter("http/protobuf", signal)
            for name, signal in (("span", "traces"), ("log", "logs"), ("metric", "metrics"))
        },
    }
    try:
        yield objects | {"instrumented_app": app}
    finally:
        FlaskInstrumentor().uninstrument_app(app)
        for sample in objects.values():
            sample.shutdown()


def test_every_private_name_the_monitor_relies_on_is_present() -> None:
    problems = private_surface_problems()
    assert not problems, "OpenTelemetry changed under the monitor (_otel_compat.py):\n" + "\n".join(problems)


def test_a_missing_private_name_is_named() -> None:
    renamed = (
        names.PrivateName("log_batch_processor", "_batch_processor._gone", "export health"),
        names.PrivateName("module", "opentelemetry._logs:NoSuchName", "the Logs API"),
        names.PrivateName(
            "otlp_http_metric_exporter", "_preferred_temporality", "the reader", lambda v: v is None
        ),
    )
    problems = private_surface_problems(renamed)
    assert len(problems) == 3
    assert "log_batch_processor _batch_processor._gone (export health): AttributeError" in problems[0]
    assert "opentelemetry._logs:NoSuchName" in problems[1]
    assert "_preferred_temporality (the reader): present, but" in problems[2]


def _private_uses(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, what) of each private OpenTelemetry import and each private attribute read on an object
    other than ``self``/``cls``, bar :data:`NOT_OPENTELEMETRY`."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            if isinstance(node, ast.Import):
                modules, names = [alias.name for alias in node.names], []
            else:
                modules, names = [node.module or ""], [alias.name for alias in node.names]
            for module in modules:
                parts = module.split(".")
                if parts[0] == "opentelemetry" and (any(map(_private, parts)) or any(map(_private, names))):
                    found.append((node.lineno, f"import of {module}: {names}"))
        elif isinstance(node, ast.Attribute) and _private(node.attr) and node.attr not in NOT_OPENTELEMETRY:
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                found.append((node.lineno, f".{node.attr}"))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr", "setattr", "delattr")
            and len(node.args) > 1
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and _private(node.args[1].value)
            and node.args[1].value not in NOT_OPENTELEMETRY
        ):
            found.append((node.lineno, f"{node.func.id}(..., {node.args[1].value!r})"))
    return sorted(found)


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_no_module_but_the_compat_module_reaches_into_opentelemetry() -> None:
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: {what}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "_otel_compat.py"
        for line, what in _private_uses(ast.parse(path.read_text(encoding="utf-8")))
    ]
    assert offenders == [], "private OpenTelemetry names belong in _otel_compat.py:\n" + "\n".join(offenders)


def test_the_scan_sees_each_kind_of_private_use() -> None:
    code = (
        "from opentelemetry._logs import Logger\n"
        "import opentelemetry.sdk._logs\n"
        "from opentelemetry.metrics._internal import _ProxyMeterProvider\n"
        "exporter._client._transport\n"
        "getattr(provider, '_update_resource')\n"
        "self._own\n"
        "request._get_current_object()\n"
    )
    found = [what for _, what in _private_uses(ast.parse(code))]
    assert found == [
        "import of opentelemetry._logs: ['Logger']",
        "import of opentelemetry.sdk._logs: []",
        "import of opentelemetry.metrics._internal: ['_ProxyMeterProvider']",
        "._client",
        "._transport",
        "getattr(..., '_update_resource')",
    ]


# Records which module imported each underscore module of OpenTelemetry, then sets up a monitored
# app the way a user does (the monitor configures the providers and exporters itself).
_IMPORT_WATCH: Final = r"""
import json, sys

importers = {}
IMPORT_MACHINERY = ("importlib", "_frozen_importlib")

class Watch:
    def find_spec(self, name, path=None, target=None):
        parts = name.split(".")
        if parts[0] == "opentelemetry" and any(p.startswith("_") and not p.startswith("__") for p in parts):
            frame = sys._getframe(1)
            while frame and frame.f_globals.get("__name__", "").startswith(IMPORT_MACHINERY):
                frame = frame.f_back
            importers.setdefault(name, frame.f_globals.get("__name__", "?") if frame else "?")
        return None

sys.meta_path.insert(0, Watch())

from flask import Flask
from otel_flask_monitor import FlaskMonitor

app = Flask("watched")
FlaskMonitor(app)
app.test_client().get("/")
print(json.dumps(importers))
"""


@pytest.mark.slow
def test_setting_up_a_monitored_app_imports_private_opentelemetry_only_through_the_compat_module(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_WATCH],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
            "OTEL_METRIC_EXPORT_INTERVAL": "600000",
            "OTEL_FLASK_MONITOR_FLUSH_TIMEOUT_SECONDS": "1",
        },
    )
    assert done.returncode == 0, done.stderr
    importers: dict[str, str] = json.loads(done.stdout.splitlines()[-1])
    assert "opentelemetry.sdk._logs" in importers  # the watch works: the Logs SDK was loaded
    by_the_package = {
        module: importer
        for module, importer in importers.items()
        if importer.startswith("otel_flask_monitor")
    }
    assert by_the_package, importers
    assert set(by_the_package.values()) == {"otel_flask_monitor._otel_compat"}, by_the_package
