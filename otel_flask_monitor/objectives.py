"""Objectives (SLOs) per route: what an objective is, and which ones a route has.

Flask-free. Two kinds of objective exist per route (docs/objectives.md):

- latency: the share of requests answered within ``threshold_ms`` (inclusive), e.g. 99 % under
  300 ms;
- availability: the share of requests that are not server errors (5xx or an unhandled exception).

An :class:`ObjectivePolicy` holds what was declared (:mod:`otel_flask_monitor.objective_declarations`
reads the ``objectives`` option and the ``@objective`` decorator) and resolves each route's.
Targets are percentages, as in Sloth (``objective: 99.9``) and Pyrra (``target: "99.9"``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Final, Literal

Kind = Literal["latency", "availability"]
KINDS: Final[tuple[Kind, ...]] = ("latency", "availability")

DEFAULT_PATTERN: Final = "default"
"""The key of the entry that applies to every route no other entry gives an objective of that kind."""

HTTP_METHODS: Final = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"}
)

# A Flask rule placeholder: <name>, <converter:name> or <converter(args):name>.
_PLACEHOLDER: Final = re.compile(r"<(?:[A-Za-z_]\w*(?:\([^()<>]*\))?:)?[A-Za-z_]\w*>")
_PATTERN_SYNTAX: Final = re.compile(r"^(?:(?P<methods>[A-Za-z]+(?:,[A-Za-z]+)*)\s+)?(?P<path>/\S*)$")


class ObjectiveError(ValueError):
    """A declaration the monitor cannot use; the message names the entry. The ``objectives`` option
    reports it as ``ConfigError`` naming the option too."""


@dataclass(frozen=True, slots=True)
class Latency:
    """``target`` percent of requests answer within ``threshold_ms`` milliseconds (inclusive)."""

    threshold_ms: float
    target: float

    def __post_init__(self) -> None:
        _check_threshold("latency threshold_ms", self.threshold_ms)
        _check_target("latency target", self.target)

    @property
    def target_ratio(self) -> Decimal:
        return _percent_to_ratio(self.target)

    def describe(self) -> str:
        return f"{_number(self.target)} % of requests within {_number(self.threshold_ms)} ms"


@dataclass(frozen=True, slots=True)
class Availability:
    """``target`` percent of requests are answered without a server error (5xx, unhandled exception)."""

    target: float

    def __post_init__(self) -> None:
        _check_target("availability target", self.target)

    @property
    def target_ratio(self) -> Decimal:
        return _percent_to_ratio(self.target)

    def describe(self) -> str:
        return f"{_number(self.target)} % of requests without a server error"


Objective = Latency | Availability


class Unset:
    """An entry that says nothing about a kind (unlike ``None``, which switches that kind off)."""

    _instance: Unset | None = None

    def __new__(cls) -> Unset:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = Unset()


@dataclass(frozen=True, slots=True)
class RoutePattern:
    """Which routes an entry covers: an optional method list and a rule template or glob.

    The path is compared with the Flask rule template (``/api/products/<int:product_id>``), not with
    request paths. ``*`` matches within one path segment, ``**`` across segments; everything else is
    literal. ``None`` methods: every method of the matched rules.
    """

    text: str
    methods: frozenset[str] | None
    path: str
    _regex: re.Pattern[str] | None = field(repr=False, compare=False)

    @classmethod
    def parse(cls, text: str) -> RoutePattern:
        match = _PATTERN_SYNTAX.match(text.strip())
        if match is None:
            raise ObjectiveError(
                f"route pattern {text!r} is malformed: expected '[METHOD[,METHOD...]] /path', e.g. "
                f"'GET /api/products/<int:product_id>', '/api/**' or {DEFAULT_PATTERN!r}"
            )
        methods = None
        if match["methods"]:
            methods = frozenset(method.upper() for method in match["methods"].split(","))
            unknown = sorted(methods - HTTP_METHODS)
            if unknown:
                raise ObjectiveError(f"route pattern {text!r}: unknown HTTP method(s) {', '.join(unknown)}")
        path = match["path"]
        _check_path(text, path)
        regex = None
        if "*" in path:
            body = "".join(
                ".*" if piece == "**" else "[^/]*" if piece == "*" else re.escape(piece)
                for piece in re.split(r"(\*\*|\*)", path)
                if piece
            )
            regex = re.compile(body)
        return cls(text.strip(), methods, path, regex)

    @property
    def is_exact(self) -> bool:
        return self._regex is None

    def matches(self, method: str, rule: str) -> bool:
        if self.methods is not None and method not in self.methods:
            return False
        return rule == self.path if self._regex is None else self._regex.fullmatch(rule) is not None

    def precedence(self) -> tuple[int, int, int]:
        """Larger wins: exact templates before globs, then more literal characters, then a pattern
        that names methods (fewer methods first)."""
        literal = len(self.path.replace("*", ""))
        named = 0 if self.methods is None else len(HTTP_METHODS) + 1 - len(self.methods)
        return (1 if self.is_exact else 0, literal, named)


def _check_path(text: str, path: str) -> None:
    if "***" in path:
        raise ObjectiveError(f"route pattern {text!r}: '***' is not a glob ('*' = one segment, '**' = any)")
    for segment in path.split("/"):
        if "**" in segment and segment != "**":
            raise ObjectiveError(
                f"route pattern {text!r}: '**' must be a whole path segment, as in '/api/**'"
            )
    rest = _PLACEHOLDER.sub("", path)
    if "<" in rest or ">" in rest:
        raise ObjectiveError(
            f"route pattern {text!r}: unbalanced or malformed placeholder; write it as in the Flask rule, "
            "e.g. '<int:product_id>'"
        )


@dataclass(frozen=True, slots=True)
class ObjectiveEntry:
    """One declaration: the objectives of the routes ``pattern`` matches (``None``: the default)."""

    pattern: RoutePattern | None
    latency: Latency | Unset | None = UNSET
    availability: Availability | Unset | None = UNSET

    @property
    def name(self) -> str:
        return DEFAULT_PATTERN if self.pattern is None else self.pattern.text

    def declared(self, kind: Kind) -> Latency | Availability | Unset | None:
        return self.latency if kind == "latency" else self.availability


@dataclass(frozen=True, slots=True)
class ResolvedObjective:
    """The objective of one kind a route has, and the declaration it came from."""

    kind: Kind
    objective: Objective
    source: str
    """The pattern of the entry (``"default"``, ``"GET /api/**"``), or ``"@objective"``."""


@dataclass(frozen=True, slots=True)
class RouteObjectives:
    latency: ResolvedObjective | None = None
    availability: ResolvedObjective | None = None

    def __iter__(self) -> Iterator[ResolvedObjective]:
        return iter([found for found in (self.latency, self.availability) if found is not None])

    def __bool__(self) -> bool:
        return self.latency is not None or self.availability is not None


@dataclass(frozen=True, slots=True)
class AppRoute:
    """One URL rule of an app: its template, its methods, and what its view declares."""

    rule: str
    methods: frozenset[str]
    endpoint: str
    declared: ObjectiveEntry | None = None
    """The :func:`objective` declaration on the view (its pattern is ``None``)."""

    @property
    def serves_static(self) -> bool:
        """Flask's static-file route (of the app or of a blueprint)."""
        return self.endpoint == "static" or self.endpoint.endswith(".static")


@dataclass(frozen=True, slots=True)
class ObjectivePolicy:
    """All declared objectives of an app (the ``objectives`` option) and how a route resolves them.

    For each kind separately, the most specific entry that says something about that kind wins
    (``None`` switches the kind off for the routes it covers):

    1. an entry whose pattern is the exact rule template (one naming the method before one that
       does not);
    2. the :func:`objective` decorator on the route's view;
    3. glob entries, the one with the most literal characters first;
    4. the ``default`` entry, except for Flask's static-file routes (endpoint ``static``), which
       get objectives only from entries that match them.

    Ties keep declaration order.
    """

    entries: tuple[ObjectiveEntry, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.entries)

    def resolve(
        self, method: str, rule: str, declared: ObjectiveEntry | None = None, *, use_default: bool = True
    ) -> RouteObjectives:
        candidates = self._candidates(method, rule, declared, use_default)
        found: dict[str, ResolvedObjective] = {}
        for kind in KINDS:
            for source, entry in candidates:
                value = entry.declared(kind)
                if value is UNSET:
                    continue
                if isinstance(value, (Latency, Availability)):
                    found[kind] = ResolvedObjective(kind, value, source)
                break
        return RouteObjectives(found.get("latency"), found.get("availability"))

    def _candidates(
        self, method: str, rule: str, declared: ObjectiveEntry | None, use_default: bool
    ) -> list[tuple[str, ObjectiveEntry]]:
        # (tier, literal characters, method specificity): larger first, then declaration order.
        ranked: list[tuple[tuple[int, int, int], int, str, ObjectiveEntry]] = []
        for order, entry in enumerate(self.entries):
            if entry.pattern is None:
                if use_default:
                    ranked.append(((0, 0, 0), order, entry.name, entry))
            elif entry.pattern.matches(method, rule):
                exact, literal, named = entry.pattern.precedence()
                ranked.append(((3 if exact else 1, literal, named), order, entry.name, entry))
        if declared is not None:
            ranked.append(((2, 0, 0), len(self.entries), "@objective", declared))
        ranked.sort(key=lambda item: (tuple(-part for part in item[0]), item[1]))
        return [(source, entry) for _, _, source, entry in ranked]

    def unmatched_patterns(self, routes: Iterable[AppRoute]) -> list[str]:
        """Patterns of entries that match no (method, rule) of ``routes``: probably a typo."""
        pairs = [(method, route.rule) for route in routes for method in route.methods]
        return [
            entry.pattern.text
            for entry in self.entries
            if entry.pattern is not None and not any(entry.pattern.matches(m, r) for m, r in pairs)
        ]

    def table(self, routes: Iterable[AppRoute]) -> dict[tuple[str, str], RouteObjectives]:
        """The objectives of every (method, rule) pair of ``routes`` that has one."""
        table: dict[tuple[str, str], RouteObjectives] = {}
        for route in routes:
            for method in sorted(route.methods):
                resolved = self.resolve(
                    method, route.rule, route.declared, use_default=not route.serves_static
                )
                if resolved:
                    table[(method, route.rule)] = resolved
        return table


NO_OBJECTIVES: Final = ObjectivePolicy()


def _check_number(what: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ObjectiveError(f"{what}: expected a number, got {value!r}")
    if not math.isfinite(value):
        raise ObjectiveError(f"{what}: expected a finite number, got {value!r}")
    return float(value)


def _check_threshold(what: str, value: object) -> None:
    if _check_number(what, value) <= 0:
        raise ObjectiveError(f"{what}: must be positive, got {value!r}")


def _check_target(what: str, value: object) -> None:
    number = _check_number(what, value)
    if 0 < number < 1:
        raise ObjectiveError(
            f"{what}: {value!r} looks like a ratio; targets are percentages, "
            f"e.g. {number * 100:g} for {value!r}"
        )
    if not 1 <= number < 100:
        raise ObjectiveError(f"{what}: a percentage between 1 and 100 (exclusive) is required, got {value!r}")


def _percent_to_ratio(percent: float) -> Decimal:
    # Through repr: 99.9 -> Decimal("0.999"), not the binary float's 0.99900000000000002131...
    return Decimal(repr(float(percent))) / 100


def _number(value: float) -> str:
    return f"{value:g}"


def describe_table(table: Mapping[tuple[str, str], RouteObjectives]) -> Sequence[str]:
    """One line per (method, rule) and objective (``validate`` prints them)."""
    lines = []
    for (method, rule), resolved in sorted(table.items(), key=lambda item: (item[0][1], item[0][0])):
        for found in resolved:
            lines.append(f"{method} {rule}: {found.kind} {found.objective.describe()} (from {found.source})")
    return lines
