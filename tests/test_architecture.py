"""The package's shape (docs/architecture.md): one way through the house.

Every module sits in :data:`LAYERS` and imports only modules listed before it (typing-only imports
too), so there is no import circle and no arrow back up; each opens with one line saying what it
owns; none is much over 400 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Final

PACKAGE: Final = Path(__file__).resolve().parent.parent / "otel_flask_monitor"

LAYERS: Final = (
    # Foundations: no imports from the package.
    "_version",
    "_otel_compat",
    "_otel_private_names",
    "hosts",
    "redaction",
    "streaming",
    "burn_rate",
    "otlp_wire",
    "trace_links",
    # The record (what one request leaves), and what is declared: objectives and the settings.
    "record",
    "objectives",
    "objective_declarations",
    "log_policy",
    "config",
    # The consumers of the record, knowing nothing of Flask.
    "dispatch",
    "attributes",
    "spans",
    "logs",
    "signals",
    "aggregates",
    "objective_metrics",
    "alert_rules",
    # Export: the OTLP encoder, the monitor's own pipeline, provider set-up, process metrics, and the
    # process-wide state that holds them (with the one after-fork hook), read by the diagnostics.
    "otlp_encoding",
    "otlp_exporters",
    "export_status",
    "exporters",
    "otel_env",
    "telemetry",
    "system_metrics",
    "process",
    "diagnostics",
    # The Flask side: the request hooks that build the record, and the app's own handlers.
    "instrumentation_guard",
    "exclusion",
    "hook_order",
    "hooks",
    "errors",
    "app_lifetime",
    # One app's state, and the routes that serve it.
    "state",
    "endpoints",
    "dashboard.sessions",
    "dashboard.access",
    "dashboard.login",
    "dashboard",
    # Entry points.
    "extension",
    "instrumentor",
    "cli",
    "__main__",
    "__init__",
    "demo",
)
"""Bottom to top. An entry also covers the modules of a package of that name (``demo`` covers
``demo.app``); imports inside one entry are that package's own business."""

MAX_LINES: Final = 410
# Larger for now, and why: the entry goes when the module shrinks (the test says so).
LARGER_FOR_NOW: Final[dict[str, str]] = {}


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts.pop()
        found[".".join(parts)] = path
    return found


def layer_of(module: str) -> int:
    for index, entry in enumerate(LAYERS):
        if module == entry or module.startswith(entry + "."):
            return index
    raise AssertionError(f"{module} is in no layer: add it to LAYERS (and docs/architecture.md)")


def imported_modules(path: Path) -> set[str]:
    """The package modules ``path`` imports, anywhere in it (functions and typing-only blocks too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("otel_flask_monitor"):
            target = node.module.removeprefix("otel_flask_monitor").lstrip(".")
            if target:
                found.add(target)
            else:  # from otel_flask_monitor import x: a module, or a name of the package root
                found.update(
                    alias.name if (PACKAGE / f"{alias.name}.py").exists() else "__init__"
                    for alias in node.names
                )
        elif isinstance(node, ast.Import):
            found.update(
                alias.name.removeprefix("otel_flask_monitor.")
                for alias in node.names
                if alias.name.startswith("otel_flask_monitor.")
            )
    return found


def test_every_module_imports_only_modules_below_it() -> None:
    upward = []
    for module, path in modules().items():
        own = layer_of(module)
        for target in sorted(imported_modules(path)):
            theirs = layer_of(target)
            if theirs > own:
                upward.append(f"{module} imports {target}")
    assert upward == [], "imports that run up (or in a circle):\n" + "\n".join(upward)


def test_every_module_opens_with_one_line_saying_what_it_owns() -> None:
    missing = []
    for module, path in modules().items():
        docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")), clean=False)
        lines = (docstring or "").split("\n")
        if not lines[0].strip() or (len(lines) > 1 and lines[1].strip()):
            missing.append(module)
    assert missing == [], f"no one-line summary at the top: {missing}"


def test_no_module_is_much_over_400_lines() -> None:
    sizes = {
        path.name if path.parent == PACKAGE else str(path.relative_to(PACKAGE)): path
        for path in modules().values()
    }
    too_long = [
        f"{name}: {len(path.read_text(encoding='utf-8').splitlines())} lines"
        for name, path in sizes.items()
        if name not in LARGER_FOR_NOW and len(path.read_text(encoding="utf-8").splitlines()) > MAX_LINES
    ]
    assert too_long == []
    for name, why in LARGER_FOR_NOW.items():
        path = sizes.get(name)
        assert path is not None, f"{name} ({why}) is gone: take it out of LARGER_FOR_NOW"
        assert len(path.read_text(encoding="utf-8").splitlines()) > MAX_LINES, (
            f"{name} ({why}) is small now: take it out of LARGER_FOR_NOW"
        )


def test_the_layer_check_sees_an_arrow_up() -> None:
    assert layer_of("record") < layer_of("hooks")
    assert layer_of("demo.app") == layer_of("demo")
    assert "hooks" in imported_modules(PACKAGE / "extension.py")
    assert "aggregates" in imported_modules(PACKAGE / "state.py")  # typing-only imports count
