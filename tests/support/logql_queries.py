"""LogQL found in the docs and the Grafana dashboard, and the label names a query uses.

Shared by tests/test_logql.py (syntax, with Grafana's grammar) and tests/test_end_to_end.py (the
names a query filters on exist in what a Loki-side receiver stored).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Final

REPO: Final = Path(__file__).resolve().parents[2]
DOCS: Final = REPO / "docs"
QUERIES_DOC: Final = DOCS / "queries.md"
DASHBOARDS: Final = REPO / "deploy" / "grafana" / "dashboards"

_FENCE: Final = re.compile(r"^```logql[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_STRING: Final = re.compile(r'"(?:[^"\\]|\\.)*"|`[^`]*`')
_TEMPLATE_FIELD: Final = re.compile(r"\{\{-?\s*\.([A-Za-z_]\w*)")
_COMPARED: Final = re.compile(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|==|>=|<=|=|>|<)")
_UNWRAP: Final = re.compile(r"\bunwrap\s+(?:(?:duration|duration_seconds|bytes)\()?([A-Za-z_]\w*)")
_GROUPING: Final = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
_SELECTOR: Final = re.compile(r"\{([^{}]*)\}")

# Grafana replaces these before the query reaches Loki; the grammar does not know them.
GRAFANA_VARIABLES: Final[dict[str, str]] = {
    "$__auto": "5m",
    "$__interval": "1m",
    "$__rate_interval": "5m",
    "$__range": "1h",
    "$service": "shop",
}

_NOT_NAMES: Final = frozenset({"__error__", "__error_details__", "__line__", "__timestamp__", "bool"})


def logql_blocks(path: Path) -> list[str]:
    """The body of every ```logql fenced block of a Markdown file, stripped."""
    return [match.group(1).strip() for match in _FENCE.finditer(path.read_text(encoding="utf-8"))]


def docs_queries() -> dict[str, list[str]]:
    """``{doc file name: [queries]}`` for every docs/*.md that has ```logql blocks."""
    found = {}
    for path in sorted(DOCS.glob("*.md")):
        blocks = logql_blocks(path)
        if blocks:
            found[path.name] = blocks
    return found


def _targets(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    targets: list[dict[str, Any]] = []
    for panel in panels:
        targets.extend(target | {"_panel": panel.get("title", "")} for target in panel.get("targets", []))
        targets.extend(_targets(panel.get("panels", [])))
    return targets


def dashboard_targets(path: Path) -> list[dict[str, Any]]:
    """Every query target of a dashboard JSON (rows included), with its panel title as ``_panel``."""
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    return _targets(dashboard.get("panels", []))


def target_datasource_type(target: dict[str, Any]) -> str:
    datasource = target.get("datasource") or {}
    return str(datasource.get("type", "")) if isinstance(datasource, dict) else ""


def expand_grafana_variables(query: str) -> str:
    for name in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
        query = query.replace(name, GRAFANA_VARIABLES[name])
    return query


def selector_label_names(query: str) -> set[str]:
    """Names used inside stream selectors ``{name="..."}``: these must be Loki index labels."""
    names: set[str] = set()
    without_templates = re.sub(r"\{\{.*?\}\}", "", query)
    for selector in _SELECTOR.findall(_STRING.sub('""', without_templates)):
        names.update(_COMPARED.findall(selector))
    return names


def label_names(query: str) -> set[str]:
    """Every label or structured-metadata name a query reads: selectors, filters, unwrap, by/without,
    and ``{{.name}}`` fields of line_format/label_format templates."""
    names = set(_TEMPLATE_FIELD.findall(query))
    bare = _STRING.sub('""', query)
    names.update(_COMPARED.findall(bare))
    names.update(_UNWRAP.findall(bare))
    for group in _GROUPING.findall(bare):
        names.update(part.strip() for part in group.split(",") if part.strip())
    return {name for name in names if name not in _NOT_NAMES}


def is_metric_query(query: str) -> bool:
    return not query.lstrip().startswith("{")
