"""Every LogQL query we ship parses with Grafana's own grammar (npm ``@grafana/lezer-logql``).

Needs Node.js and npm on the machine (``.ci/run`` installs them); a missing tool is a failure, not a
skip. ``npm ci`` runs in tests/logql once, when its node_modules is missing.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Final

import pytest

from tests.support.logql_queries import (
    DASHBOARDS,
    QUERIES_DOC,
    dashboard_targets,
    docs_queries,
    expand_grafana_variables,
    is_metric_query,
    label_names,
    logql_blocks,
    selector_label_names,
    target_datasource_type,
)
from tests.support.real_processes import require_tool

LOGQL_DIR: Final = Path(__file__).resolve().parent / "logql"
PARSER_MODULE: Final = LOGQL_DIR / "node_modules" / "@grafana" / "lezer-logql"
NPM_TIMEOUT_SECONDS: Final = 240
PARSE_TIMEOUT_SECONDS: Final = 60
NODE_PURPOSE: Final = "the LogQL check needs Node.js and npm (Debian: apt-get install nodejs npm)"

# The names Loki gives what the monitor sends (docs/log-schema.md): index labels from the resource...
INDEX_LABELS: Final = frozenset(
    {"service_name", "service_instance_id", "service_namespace", "deployment_environment_name"}
)
# ...and structured metadata from the log record.
STRUCTURED_METADATA: Final = frozenset(
    {
        "http_request_method",
        "http_route",
        "url_path",
        "url_query",
        "url_scheme",
        "http_response_status_code",
        "http_request_body_size",
        "http_response_body_size",
        "http_response_header_content_type",
        "client_address",
        "user_agent_original",
        "server_address",
        "duration_ms",
        "cpu_ms",
        "error_type",
        "exception_type",
        "exception_message",
        "exception_stacktrace",
        "severity_text",
        "severity_number",
        "detected_level",
        "trace_id",
        "span_id",
        "scope_name",
        "scope_version",
        "sample_rate",
    }
)

ParseFn = Callable[[list[str]], list[dict[str, object]]]


@pytest.fixture(scope="module")
def parse_logql() -> ParseFn:
    node = require_tool("node", NODE_PURPOSE)
    if not PARSER_MODULE.is_dir():
        npm = require_tool("npm", NODE_PURPOSE)
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=LOGQL_DIR,
            capture_output=True,
            text=True,
            timeout=NPM_TIMEOUT_SECONDS,
            check=False,
        )
        if result.returncode != 0 or not PARSER_MODULE.is_dir():
            pytest.fail(f"npm ci in {LOGQL_DIR} failed:\n{result.stdout}\n{result.stderr}", pytrace=False)

    def parse(queries: list[str]) -> list[dict[str, object]]:
        result = subprocess.run(
            [node, str(LOGQL_DIR / "parse.mjs")],
            input=json.dumps(queries),
            capture_output=True,
            text=True,
            timeout=PARSE_TIMEOUT_SECONDS,
            check=False,
        )
        assert result.returncode == 0, f"parse.mjs failed:\n{result.stderr}"
        verdicts: list[dict[str, object]] = json.loads(result.stdout)
        assert len(verdicts) == len(queries)
        return verdicts

    return parse


def _failures(queries: list[str], verdicts: list[dict[str, object]]) -> list[str]:
    pairs = zip(queries, verdicts, strict=True)
    return [f"{query}\n    {verdict['errors']}" for query, verdict in pairs if not verdict["ok"]]


def _dashboard_logql() -> list[tuple[str, str]]:
    """(panel title, expanded expr) of every Loki target of every provisioned dashboard."""
    found = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        for target in dashboard_targets(path):
            if target_datasource_type(target) == "loki":
                found.append((f"{path.name}: {target['_panel']}", expand_grafana_variables(target["expr"])))
    return found


def test_every_docs_query_parses(parse_logql: ParseFn) -> None:
    found = docs_queries()
    assert "queries.md" in found, "docs/queries.md has no ```logql blocks"
    queries = [query for blocks in found.values() for query in blocks]
    failures = _failures(queries, parse_logql(queries))
    assert not failures, "LogQL that Grafana's grammar rejects:\n" + "\n".join(failures)


def test_every_dashboard_expr_parses(parse_logql: ParseFn) -> None:
    found = _dashboard_logql()
    assert len(found) >= 10, f"expected the dashboard's LogQL panels, found {len(found)}"
    queries = [query for _, query in found]
    failures = _failures(queries, parse_logql(queries))
    assert not failures, "dashboard LogQL that Grafana's grammar rejects:\n" + "\n".join(failures)


@pytest.mark.parametrize(
    "broken",
    [
        'sum(rate({service_name="shop"}[5m]',  # unbalanced parenthesis
        '{service_name="shop"} | unwrap',  # unwrap without a name
        'rate({service_name="shop"})',  # range aggregation without a range
        '{service_name="shop"} | http_route=',  # filter without a value
        "{service_name=shop}",  # unquoted matcher value
        'sum by (http_route) rate({service_name="shop"}[5m])',  # aggregation without parentheses
        "",
    ],
)
def test_a_broken_query_is_reported(parse_logql: ParseFn, broken: str) -> None:
    (verdict,) = parse_logql([broken])
    assert verdict["ok"] is False, f"the check accepted a broken query: {broken!r}"
    assert verdict["errors"]


def test_queries_read_loki_names_without_parsing_the_line() -> None:
    queries = [query for blocks in docs_queries().values() for query in blocks]
    queries += [query for _, query in _dashboard_logql()]
    for query in queries:
        assert not re.search(r"\|\s*(json|logfmt)\b", query), f"structured metadata needs no parser: {query}"
        assert selector_label_names(query) <= INDEX_LABELS, f"selector on a non-index label: {query}"
        unknown = label_names(query) - INDEX_LABELS - STRUCTURED_METADATA
        assert not unknown, f"{query}\n    uses names Loki does not store: {sorted(unknown)}"
        if is_metric_query(query):
            assert re.search(r"\b(by|without)\s*\(", query), f"metric query not aggregated by (...): {query}"
        if "unwrap" in query:
            assert '__error__=""' in query, f'unwrap without | __error__="": {query}'


def test_queries_doc_covers_what_users_ask_for() -> None:
    queries = logql_blocks(QUERIES_DOC)
    wanted: dict[str, Callable[[str], bool]] = {
        "all requests of the service": lambda q: q == '{service_name="shop"}',
        "error requests": lambda q: not is_metric_query(q) and "http_response_status_code >= 500" in q,
        "average latency by route": lambda q: (
            q.startswith("avg_over_time(") and "unwrap duration_ms" in q and "by (http_route)" in q
        ),
        "p95 latency by route": lambda q: q.startswith("quantile_over_time(0.95,") and "by (http_route)" in q,
        "top-5 slowest routes": lambda q: q.startswith("topk(5,") and "unwrap duration_ms" in q,
        "error rate by route": lambda q: ">= 500" in q and " / " in q and "by (http_route)" in q,
        "requests by status code": lambda q: "by (http_response_status_code)" in q,
        "every line of one trace id": lambda q: not is_metric_query(q) and "trace_id=" in q,
        "requests per route weighted by sample_rate": lambda q: (
            q.startswith("sum by (http_route) (sum_over_time(") and "unwrap sample_rate" in q
        ),
        "error rate weighted by sample_rate": lambda q: ">= 500" in q and q.count("unwrap sample_rate") == 2,
    }
    missing = [name for name, matches in wanted.items() if not any(matches(q) for q in queries)]
    assert not missing, f"docs/queries.md lacks: {missing}"
