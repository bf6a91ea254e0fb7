"""The app's endpoints and which were called in the window: the ``endpoints`` of ``/monitoring/stats``.

An endpoint is a (method, URL rule) pair, matched against the routes of the stats document (the rows
the routes table shows, merged across workers with ``multiprocess_dir``) by the key the aggregates
count a request under: the method (``_OTHER`` for a non-standard one) and the rule's template.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from otel_flask_monitor.aggregates import OVERFLOW_ROUTE
from otel_flask_monitor.record import method_key
from otel_flask_monitor.redaction import truncate

ANY_METHOD: Final = "*"
"""Method of a rule that accepts every method (a Werkzeug rule added without ``methods``)."""
# The never-called first: when the list is cut at the route cap, they are what it is for.
_LISTING_ORDER: Final = {False: 0, None: 1, True: 2}


class UrlRule(Protocol):
    """What is read of a ``werkzeug.routing.Rule``."""

    @property
    def rule(self) -> str: ...
    @property
    def endpoint(self) -> Any: ...
    @property
    def methods(self) -> set[str] | None: ...


@dataclass(frozen=True, slots=True)
class Endpoint:
    method: str
    rule: str
    """The rule's template, cut as a record's route is (``max_attribute_length``)."""
    endpoint: str


def app_endpoints(rules: Iterable[UrlRule], own_blueprint: str, max_route_length: int) -> Iterator[Endpoint]:
    """The (method, rule) pairs an app serves, leaving out the monitor's own routes, static files
    (``static``, ``<blueprint>.static``), and the methods added without being asked for: ``HEAD``
    beside ``GET`` (Werkzeug; a HEAD request runs the GET view) and Flask's automatic ``OPTIONS``."""
    own_prefix = own_blueprint + "."
    for rule in rules:
        name = str(rule.endpoint)
        if name == "static" or name.endswith(".static") or name.startswith(own_prefix):
            continue
        template = truncate(rule.rule, max_route_length)
        if rule.methods is None:
            yield Endpoint(ANY_METHOD, template, name)
            continue
        methods = set(rule.methods)
        if "GET" in methods:
            methods.discard("HEAD")
        if getattr(rule, "provide_automatic_options", False):
            methods.discard("OPTIONS")
        for method in sorted(methods):
            yield Endpoint(method, template, name)


def endpoints_section(
    endpoints: Iterable[Endpoint], routes: Iterable[Mapping[str, Any]], limit: int
) -> dict[str, Any]:
    """``endpoints`` (at most ``limit``: the never-called first, then those that cannot be told, then
    the called, each by rule and method) with the counts over all of them.

    ``called`` is None when the endpoint was not seen but requests beyond ``max_routes`` shared the
    route ``<other>``: it may be among them.
    """
    keys: set[tuple[str, str]] = set()
    called_rules: set[str] = set()
    overflowed = False
    for row in routes:
        keys.add((row["method"], row["route"]))
        called_rules.add(row["route"])
        overflowed = overflowed or row["route"] == OVERFLOW_ROUTE
    ranked: list[tuple[int, str, str, dict[str, Any]]] = []
    for endpoint in endpoints:
        if endpoint.method == ANY_METHOD:
            seen = endpoint.rule in called_rules
        else:
            key = method_key(endpoint.method)
            seen = (key, endpoint.rule) in keys or (key == "GET" and ("HEAD", endpoint.rule) in keys)
        called = True if seen else None if overflowed else False
        entry = {
            "method": endpoint.method,
            "rule": endpoint.rule,
            "endpoint": endpoint.endpoint,
            "called": called,
        }
        ranked.append((_LISTING_ORDER[called], endpoint.rule, endpoint.method, entry))
    ranked.sort(key=lambda item: item[:3])
    entries = [item[3] for item in ranked]
    return {
        "endpoints": entries[:limit],
        "endpoints_total": len(entries),
        "endpoints_called": sum(1 for entry in entries if entry["called"] is True),
        "endpoints_not_called": sum(1 for entry in entries if entry["called"] is False),
    }
