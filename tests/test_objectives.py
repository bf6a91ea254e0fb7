"""Declaring objectives: validation naming the bad entry, and which objective a route gets."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from typing import Any

import pytest

from otel_flask_monitor import ConfigError
from otel_flask_monitor.config import resolve_settings
from otel_flask_monitor.objective_declarations import objective, parse_objectives
from otel_flask_monitor.objectives import AppRoute, Availability, Latency, ObjectiveError, RoutePattern

ROUTES = [
    AppRoute("/api/products", frozenset({"GET", "HEAD", "OPTIONS"}), "list_products"),
    AppRoute("/api/products/<int:product_id>", frozenset({"GET", "HEAD", "OPTIONS"}), "get_product"),
    AppRoute("/api/products/<int:product_id>/purchase", frozenset({"POST", "OPTIONS"}), "purchase"),
    AppRoute("/api/orders", frozenset({"GET", "HEAD", "OPTIONS"}), "orders"),
    AppRoute("/static/<path:filename>", frozenset({"GET", "HEAD", "OPTIONS"}), "static"),
]


def resolved(declaration: dict[str, Any], method: str, rule: str) -> dict[str, tuple[object, str]]:
    policy = parse_objectives("objectives", declaration)
    route = next(route for route in ROUTES if route.rule == rule)
    table = policy.table([route])
    return {found.kind: (found.objective, found.source) for found in table.get((method, rule), ())}


def test_the_most_specific_declaration_wins_per_kind() -> None:
    declaration = {
        "default": {"availability": 99.5, "latency": {"threshold_ms": 1000, "target": 90}},
        "/api/**": {"latency": {"threshold_ms": 500, "target": 95}},
        "/api/products/*": {"latency": {"threshold_ms": 400, "target": 95}},
        "GET /api/products": {"latency": {"threshold_ms": 300, "target": 99}},
        "POST /api/products/<int:product_id>/purchase": {"availability": 99.9},
    }
    assert resolved(declaration, "GET", "/api/products") == {
        "latency": (Latency(300, 99), "GET /api/products"),
        "availability": (Availability(99.5), "default"),
    }
    # HEAD is not GET: the exact entry names GET only, so the glob decides.
    assert resolved(declaration, "HEAD", "/api/products")["latency"] == (Latency(500, 95), "/api/**")
    # '*' stays within a segment, '**' crosses them; the longer literal wins.
    assert resolved(declaration, "GET", "/api/products/<int:product_id>")["latency"] == (
        Latency(400, 95),
        "/api/products/*",
    )
    assert resolved(declaration, "POST", "/api/products/<int:product_id>/purchase") == {
        "latency": (Latency(500, 95), "/api/**"),
        "availability": (Availability(99.9), "POST /api/products/<int:product_id>/purchase"),
    }


def test_none_switches_a_kind_off_and_static_files_need_an_explicit_entry() -> None:
    declaration = {"default": {"availability": 99.5}, "/api/orders": {"availability": None}}
    assert resolved(declaration, "GET", "/api/orders") == {}
    assert resolved(declaration, "GET", "/static/<path:filename>") == {}
    with_static = {**declaration, "/static/**": {"availability": 99}}
    assert resolved(with_static, "GET", "/static/<path:filename>") == {
        "availability": (Availability(99), "/static/**")
    }


def test_the_decorator_sits_between_exact_entries_and_globs() -> None:
    @objective(latency={"threshold_ms": 250, "target": 99.5})
    def view() -> None: ...

    route = AppRoute(
        "/api/orders", frozenset({"GET"}), "orders", declared=view.__otel_flask_monitor_objectives__
    )  # type: ignore[attr-defined]
    glob = parse_objectives("objectives", {"/api/**": {"latency": {"threshold_ms": 500, "target": 95}}})
    assert glob.resolve("GET", route.rule, route.declared).latency.source == "@objective"  # type: ignore[union-attr]
    exact = parse_objectives("objectives", {"/api/orders": {"latency": {"threshold_ms": 900, "target": 90}}})
    found = exact.resolve("GET", route.rule, route.declared).latency
    assert found is not None
    assert (found.objective, found.source) == (Latency(900, 90), "/api/orders")


def test_targets_become_exact_decimal_ratios() -> None:
    assert Availability(99.9).target_ratio == Decimal("0.999")
    assert Latency(300, 99).target_ratio == Decimal("0.99")
    assert Availability(99.95).target_ratio == Decimal("0.9995")


@pytest.mark.parametrize(
    ("declaration", "message"),
    [
        (
            {"/x": {"latency": {"threshold_ms": 300, "target": 0.99}}},
            r"entry '/x': latency target: 0.99 looks like a ratio",
        ),
        ({"/x": {"availability": 100}}, r"entry '/x': availability target: a percentage between 1 and 100"),
        ({"/x": {"availability": -5}}, r"entry '/x': availability target"),
        ({"/x": {"availability": True}}, r"entry '/x': availability target: expected a number"),
        (
            {"/x": {"latency": {"threshold_ms": 0, "target": 99}}},
            r"entry '/x': latency threshold_ms: must be positive",
        ),
        ({"/x": {"latency": {"threshold_ms": -3, "target": 99}}}, r"threshold_ms: must be positive"),
        ({"/x": {"latency": {"threshold_ms": float("nan"), "target": 99}}}, r"finite"),
        ({"/x": {"latency": {"threshold_ms": 300}}}, r"entry '/x': latency: missing target"),
        ({"/x": {"latency": {"threshold_ms": 300, "target": 99, "p": 1}}}, r"latency: unknown key\(s\) p"),
        ({"/x": {"latency": 300}}, r"entry '/x': latency: expected"),
        ({"/x": {"availabilty": 99.9}}, r"entry '/x': unknown key\(s\) availabilty"),
        ({"/x": {}}, r"entry '/x': declares no objective"),
        ({"/x": 99.9}, r"entry '/x': expected a mapping"),
        ({"api/x": {"availability": 99}}, r"entry 'api/x': route pattern 'api/x' is malformed"),
        ({"FETCH /x": {"availability": 99}}, r"unknown HTTP method\(s\) FETCH"),
        ({"/x/<int:id": {"availability": 99}}, r"unbalanced or malformed placeholder"),
        ({"/x/a**": {"availability": 99}}, r"'\*\*' must be a whole path segment"),
        ({"/x/***": {"availability": 99}}, r"'\*\*\*' is not a glob"),
        ({"GET  /x y": {"availability": 99}}, r"malformed"),
    ],
)
def test_a_bad_entry_is_a_config_error_naming_it(declaration: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_settings({"objectives": declaration})


def test_the_environment_variable_takes_json_and_names_itself_in_errors() -> None:
    declaration = {"default": {"availability": 99.5}}
    settings = resolve_settings({}, {}, {"OTEL_FLASK_MONITOR_OBJECTIVES": json.dumps(declaration)})
    assert settings.objectives == parse_objectives("x", declaration)
    with pytest.raises(ConfigError, match=r"^OTEL_FLASK_MONITOR_OBJECTIVES: not valid JSON"):
        resolve_settings({}, {}, {"OTEL_FLASK_MONITOR_OBJECTIVES": "{availability: 99}"})
    with pytest.raises(
        ConfigError, match=r"^app.config\['OTEL_FLASK_MONITOR_OBJECTIVES'\]: expected a mapping"
    ):
        resolve_settings({}, {"OTEL_FLASK_MONITOR_OBJECTIVES": ["/x"]})


def test_the_decorator_validates_at_import_time() -> None:
    with pytest.raises(ObjectiveError, match="availability target"):
        objective(availability=150)
    with pytest.raises(ObjectiveError, match="declares no objective"):
        objective()


def test_patterns_matching_no_route_are_reported() -> None:
    policy = parse_objectives(
        "objectives",
        {
            "default": {"availability": 99},
            "/api/produtcs": {"availability": 99},
            "POST /api/orders": {"availability": 99},
            "/api/products/**": {"availability": 99},
        },
    )
    # A typo, and a method the route does not accept.
    assert policy.unmatched_patterns(ROUTES) == ["/api/produtcs", "POST /api/orders"]


@pytest.mark.parametrize(
    ("pattern", "method", "rule", "matches"),
    [
        ("/api/products", "DELETE", "/api/products", True),
        ("/api/products", "GET", "/api/products/", False),
        ("GET,POST /a", "POST", "/a", True),
        ("get /a", "GET", "/a", True),
        ("/api/*", "GET", "/api/products", True),
        ("/api/*", "GET", "/api/products/<int:id>", False),
        ("/api/**", "GET", "/api/products/<int:id>", True),
        ("/api/**", "GET", "/api", False),
        ("/*/orders", "GET", "/v1/orders", True),
        ("/a/<string(length=2):code>", "GET", "/a/<string(length=2):code>", True),
    ],
)
def test_what_a_pattern_matches(pattern: str, method: str, rule: str, matches: bool) -> None:
    assert RoutePattern.parse(pattern).matches(method, rule) is matches


def test_the_objective_modules_import_without_flask() -> None:
    code = (
        "import sys; sys.modules['flask'] = None\n"
        "from otel_flask_monitor.objective_declarations import parse_objectives\n"
        "from otel_flask_monitor.objective_metrics import ObjectiveCounter\n"
        "from otel_flask_monitor.alert_rules import RuleBuilder\n"
        "from otel_flask_monitor.burn_rate import burn_rate\n"
        "policy = parse_objectives('o', {'default': {'availability': 99}})\n"
        "print(ObjectiveCounter(policy, max_routes=1).observations(), burn_rate(9, 10, 0.5))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[] 0.2"
