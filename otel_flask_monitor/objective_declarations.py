"""How objectives are declared: the ``objectives`` option, the ``@objective`` decorator, an app's routes.

The option takes a mapping of route pattern to objectives, or its JSON; the decorator goes on a
view; :func:`app_routes` reads an app's URL rules with what their views declare.

Invalid declarations raise :class:`~otel_flask_monitor.objectives.ObjectiveError` naming the entry;
the ``objectives`` option reports it as ``ConfigError`` naming the option too.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, TypeVar

from otel_flask_monitor.objectives import (
    DEFAULT_PATTERN,
    KINDS,
    NO_OBJECTIVES,
    UNSET,
    AppRoute,
    Availability,
    Latency,
    ObjectiveEntry,
    ObjectiveError,
    ObjectivePolicy,
    RoutePattern,
    Unset,
)

if TYPE_CHECKING:
    from flask import Flask

VIEW_ATTRIBUTE: Final = "__otel_flask_monitor_objectives__"
"""Where :func:`objective` leaves its declaration on the view function."""

_ENTRY_KEYS: Final = frozenset(KINDS)
_LATENCY_KEYS: Final = frozenset({"threshold_ms", "target"})
_AVAILABILITY_KEYS: Final = frozenset({"target"})


def parse_objectives(name: str, value: object) -> ObjectivePolicy:
    """Validate a declaration: a mapping (pattern -> objectives), its JSON text, or a policy.

    Raises :class:`ObjectiveError` naming ``name`` (the setting) and the bad entry.
    """
    if value is None:
        return NO_OBJECTIVES
    if isinstance(value, ObjectivePolicy):
        return value
    if isinstance(value, (str, bytes)):
        text = value.decode() if isinstance(value, bytes) else value
        if not text.strip():
            return NO_OBJECTIVES
        try:
            value = json.loads(text)
        except ValueError as error:
            raise ObjectiveError(f"{name}: not valid JSON ({error})") from None
    if not isinstance(value, Mapping):
        raise ObjectiveError(
            f"{name}: expected a mapping of route pattern to objectives (or its JSON), "
            f"got {type(value).__name__}"
        )
    entries = []
    for pattern_text, spec in value.items():
        if not isinstance(pattern_text, str):
            raise ObjectiveError(f"{name}: route patterns are strings, got {pattern_text!r}")
        try:
            pattern = None if pattern_text.strip() == DEFAULT_PATTERN else RoutePattern.parse(pattern_text)
            entries.append(_parse_entry(pattern, spec))
        except ObjectiveError as error:
            raise ObjectiveError(f"{name}: entry {pattern_text!r}: {error}") from None
    return ObjectivePolicy(tuple(entries))


def _parse_entry(pattern: RoutePattern | None, spec: object) -> ObjectiveEntry:
    if not isinstance(spec, Mapping):
        raise ObjectiveError(f"expected a mapping with 'latency' and/or 'availability', got {spec!r}")
    unknown = sorted(str(key) for key in set(spec) - _ENTRY_KEYS)
    if unknown:
        raise ObjectiveError(f"unknown key(s) {', '.join(unknown)} (known: latency, availability)")
    if not spec:
        raise ObjectiveError("declares no objective (give 'latency' and/or 'availability')")
    latency = _parse_latency(spec["latency"]) if "latency" in spec else UNSET
    availability = _parse_availability(spec["availability"]) if "availability" in spec else UNSET
    return ObjectiveEntry(pattern, latency, availability)


def _parse_latency(value: object) -> Latency | None:
    if value is None or isinstance(value, Latency):
        return value
    if not isinstance(value, Mapping):
        raise ObjectiveError(f"latency: expected {{'threshold_ms': ..., 'target': ...}}, got {value!r}")
    unknown = sorted(str(key) for key in set(value) - _LATENCY_KEYS)
    if unknown:
        raise ObjectiveError(f"latency: unknown key(s) {', '.join(unknown)} (known: threshold_ms, target)")
    missing = sorted(_LATENCY_KEYS - set(value))
    if missing:
        raise ObjectiveError(f"latency: missing {', '.join(missing)}")
    return Latency(threshold_ms=value["threshold_ms"], target=value["target"])


def _parse_availability(value: object) -> Availability | None:
    if value is None or isinstance(value, Availability):
        return value
    if isinstance(value, Mapping):
        unknown = sorted(str(key) for key in set(value) - _AVAILABILITY_KEYS)
        if unknown:
            raise ObjectiveError(f"availability: unknown key(s) {', '.join(unknown)} (known: target)")
        if "target" not in value:
            raise ObjectiveError("availability: missing target")
        value = value["target"]
    return Availability(target=value)  # type: ignore[arg-type]  # checked in __post_init__


F = TypeVar("F", bound=Callable[..., Any])


def objective(
    *,
    latency: Latency | Mapping[str, Any] | Unset | None = UNSET,
    availability: Availability | Mapping[str, Any] | float | Unset | None = UNSET,
) -> Callable[[F], F]:
    """Declare the objectives of a view, next to its route::

        @app.get("/api/products")
        @objective(latency=Latency(threshold_ms=300, target=99))
        def list_products(): ...

    Applies to every rule and method of the view; an ``objectives`` entry naming the exact rule
    template overrides it (so operators can change it without a code change). Invalid values raise
    :class:`ObjectiveError` when the module is imported.
    """
    spec: dict[str, object] = {}
    if latency is not UNSET:
        spec["latency"] = latency
    if availability is not UNSET:
        spec["availability"] = availability
    entry = _parse_entry(None, spec)

    def decorate(view: F) -> F:
        setattr(view, VIEW_ATTRIBUTE, entry)
        return view

    return decorate


def declared_objectives(view: object) -> ObjectiveEntry | None:
    declared = getattr(view, VIEW_ATTRIBUTE, None)
    return declared if isinstance(declared, ObjectiveEntry) else None


def app_routes(app: Flask, *, skip_prefix: str | None = None) -> list[AppRoute]:
    """Every URL rule of ``app`` (under ``skip_prefix``, the monitor's own routes, left out)."""
    routes = []
    for rule in app.url_map.iter_rules():
        template = rule.rule
        if skip_prefix is not None and (template == skip_prefix or template.startswith(skip_prefix + "/")):
            continue
        view = app.view_functions.get(rule.endpoint)
        routes.append(
            AppRoute(template, frozenset(rule.methods or ()), rule.endpoint, declared_objectives(view))
        )
    return routes
