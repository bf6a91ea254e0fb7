"""``log_attributes``: the lean default keeps every name the shipped queries and dashboards read; the
rest is opt-in, one by one or as ``full``; an unknown name is a ConfigError naming the option."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, Final

import pytest

from otel_flask_monitor import FlaskMonitor
from otel_flask_monitor.config import ConfigError
from otel_flask_monitor.log_policy import (
    DEFAULT_LOG_ATTRIBUTES,
    FULL_LOG_ATTRIBUTES,
    OPTIONAL_LOG_ATTRIBUTES,
    parse_log_attributes,
)
from tests.conftest import Exported
from tests.support.apps import build_app
from tests.support.logql_queries import (
    DASHBOARDS,
    QUERIES_DOC,
    dashboard_targets,
    expand_grafana_variables,
    label_names,
    logql_blocks,
    target_datasource_type,
)

# What Loki adds itself or takes from the record's fields and resource, not from its attributes.
NOT_ATTRIBUTES: Final = frozenset(
    {
        "service_name",
        "service_instance_id",
        "service_namespace",
        "deployment_environment_name",
        "trace_id",
        "span_id",
        "severity_text",
        "severity_number",
        "detected_level",
        "scope_name",
        "scope_version",
        "sample_rate",
    }
)


def shipped_queries() -> list[str]:
    queries = logql_blocks(QUERIES_DOC)
    for path in sorted(DASHBOARDS.glob("*.json")):
        targets = dashboard_targets(path)
        queries += [
            expand_grafana_variables(t["expr"]) for t in targets if target_datasource_type(t) == "loki"
        ]
    return queries


@pytest.fixture(autouse=True)
def _the_real_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """tests/conftest.py asks every other test's monitor for the full set."""
    monkeypatch.delenv("OTEL_FLASK_MONITOR_LOG_ATTRIBUTES", raising=False)


def request_attributes(exported: Exported, **options: Any) -> list[dict[str, Any]]:
    client = build_app("attributes", **options).test_client()
    client.get("/items/7?page=2", headers={"User-Agent": "probe/1.0"})
    client.get("/boom")
    client.get("/stream").get_data()
    return [dict(r.log_record.attributes or {}) for r in exported.request_logs()]


def test_the_default_set_answers_every_shipped_query(exported: Exported) -> None:
    used = {name for query in shipped_queries() for name in label_names(query)} - NOT_ATTRIBUTES
    assert {"http_route", "duration_ms", "http_response_status_code"} <= used  # the queries were read
    sent = {name.replace(".", "_") for name in DEFAULT_LOG_ATTRIBUTES}
    assert used <= sent, f"queried but not in the default set: {used - sent}"
    arrived = {key.replace(".", "_") for a in request_attributes(exported) for key in a}
    assert used <= arrived


def test_the_default_record_leaves_the_opt_in_attributes_out(exported: Exported) -> None:
    for attributes in request_attributes(exported):
        assert not set(attributes) & set(OPTIONAL_LOG_ATTRIBUTES), attributes
        assert attributes["sample_rate"] == 1.0
        assert {"http.request.method", "url.path", "duration_ms", "cpu_ms"} <= set(attributes)


def test_full_adds_every_opt_in_attribute_a_request_has(exported: Exported) -> None:
    first = request_attributes(exported, log_attributes="full")[0]
    assert first["url.query"] == "page=2"
    assert first["user_agent.original"] == "probe/1.0"
    assert set(OPTIONAL_LOG_ATTRIBUTES) - {"http.request.body.size"} <= set(first)


def test_a_list_names_attributes_one_by_one(exported: Exported) -> None:
    records = request_attributes(exported, log_attributes="http.route,duration_ms,user_agent.original")
    assert set(records[0]) == {"http.route", "duration_ms", "user_agent.original", "sample_rate"}
    with_default = parse_log_attributes("log_attributes", ["default", "client.address"])
    assert with_default == DEFAULT_LOG_ATTRIBUTES | {"client.address"}
    assert parse_log_attributes("x", "full") is FULL_LOG_ATTRIBUTES
    assert parse_log_attributes("x", " default ") is DEFAULT_LOG_ATTRIBUTES


def test_the_span_still_gets_what_it_is_enriched_with(exported: Exported) -> None:
    client = build_app("enriched", enrich_spans=True).test_client()
    client.get("/items/3")
    (span,) = exported.server_spans()
    assert span.attributes is not None
    assert span.attributes["http.response.header.content-type"] == "application/json"
    (record,) = exported.request_logs()
    assert "http.response.header.content-type" not in (record.log_record.attributes or {})


@pytest.mark.parametrize("value", ["everything", "default,http.rout", ["url.path", 3]])
def test_an_unknown_name_is_a_config_error_naming_the_option(value: object) -> None:
    with pytest.raises(ConfigError, match="log_attributes"):
        FlaskMonitor(build_app("bad", monitor=False), log_attributes=value)


@pytest.mark.slow
def test_the_cost_benchmark_prints_every_selection() -> None:
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "log_attributes.py"
    done = subprocess.run(
        [sys.executable, str(script), "--rounds", "1", "--batch", "64"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for selection in ("default", "full", *(f"+{name}" for name in OPTIONAL_LOG_ATTRIBUTES)):
        assert f"\n{selection} " in done.stdout, done.stdout
