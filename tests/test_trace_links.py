"""``trace_url_template``: only http(s) templates with ``{trace_id}`` are accepted, only real trace ids
are filled in (URL-encoded), and ``/monitoring/stats`` carries each link next to its trace id."""

from __future__ import annotations

import pytest
from flask import Flask

from otel_flask_monitor import FlaskMonitor
from otel_flask_monitor.config import ConfigError, resolve_settings
from otel_flask_monitor.trace_links import trace_url, with_trace_urls

TEMPLATE = "https://grafana.example:3000/explore?panes=%7B%22q%22%3A%22{trace_id}%22%7D&orgId=1"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.mark.parametrize(
    "template",
    [
        "javascript:alert(1)//{trace_id}",
        "JavaScript:alert('{trace_id}')",
        "data:text/html,<script>alert(1)</script>{trace_id}",
        "vbscript:msgbox('{trace_id}')",
        "ftp://files.example/{trace_id}",
        "//grafana.example/{trace_id}",
        "/explore/{trace_id}",
        "https:///{trace_id}",
        "https://{trace_id}.example/",
        "https://grafana.example/explore?trace=",
        "https://grafana.example/explore?trace={traceid}",
        "https://grafana.example/explore?a=1 b={trace_id}",
        "https://grafana.example/\nexplore?trace={trace_id}",
        "https://[::1/{trace_id}",
    ],
)
def test_a_template_that_cannot_make_a_safe_link_is_refused_naming_the_option(template: str) -> None:
    with pytest.raises(ConfigError, match="trace_url_template"):
        resolve_settings({"trace_url_template": template}, environ={})
    with pytest.raises(ConfigError, match="OTEL_FLASK_MONITOR_TRACE_URL_TEMPLATE"):
        resolve_settings({}, environ={"OTEL_FLASK_MONITOR_TRACE_URL_TEMPLATE": template})


def test_http_and_https_templates_are_accepted_and_empty_means_unset() -> None:
    assert resolve_settings({"trace_url_template": TEMPLATE}, environ={}).trace_url_template == TEMPLATE
    plain = "http://localhost:16686/trace/{trace_id}"
    environ = {"OTEL_FLASK_MONITOR_TRACE_URL_TEMPLATE": f"  {plain} "}
    assert resolve_settings({}, environ=environ).trace_url_template == plain
    assert (
        resolve_settings({}, environ={"OTEL_FLASK_MONITOR_TRACE_URL_TEMPLATE": ""}).trace_url_template is None
    )
    assert resolve_settings({}, environ={}).trace_url_template is None


def test_a_trace_id_is_filled_in_every_place_and_the_other_braces_stay() -> None:
    template = "https://g.example/{trace_id}?q={%22id%22:%22{trace_id}%22}"
    expected = f"https://g.example/{TRACE_ID}?q={{%22id%22:%22{TRACE_ID}%22}}"
    assert trace_url(template, TRACE_ID) == expected


@pytest.mark.parametrize(
    "trace_id",
    [
        None,
        "",
        "0" * 32,  # the invalid trace id
        TRACE_ID.upper(),
        TRACE_ID[:-1],
        TRACE_ID + "0",
        TRACE_ID + "\n",
        '"><img src=x onerror=alert(1)>' + TRACE_ID,
        "4bf92f3577b34da6a3ce929d0e0e47<b",
        "javascript:alert(1)//4bf92f3577b34da",
        "4bf92f3577b34da6%2Fce929d0e0e4736",
        int(TRACE_ID, 16),
    ],
)
def test_anything_but_a_trace_id_gets_no_link(trace_id: object) -> None:
    assert trace_url(TEMPLATE, trace_id) is None


def test_no_template_no_link_and_the_entries_are_left_alone() -> None:
    entries = [{"trace_id": TRACE_ID, "route": "/a"}, {"trace_id": None, "route": "/b"}]
    linked = with_trace_urls(entries, TEMPLATE)
    assert [entry["trace_url"] for entry in linked] == [TEMPLATE.replace("{trace_id}", TRACE_ID), None]
    assert [entry["route"] for entry in linked] == ["/a", "/b"]
    assert "trace_url" not in entries[0], "a cached document of other workers must not change"
    assert [entry["trace_url"] for entry in with_trace_urls(entries, None)] == [None, None]


def test_stats_links_every_error_to_its_trace() -> None:
    app = Flask("linked")

    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError("boom")

    FlaskMonitor(app, trace_url_template=TEMPLATE)
    client = app.test_client()
    server_error = client.get("/boom")
    client_error = client.get("/missing")
    stats = client.get("/monitoring/stats").get_json()
    for listed, response in (
        (stats["recent_errors"], server_error),
        (stats["recent_client_errors"], client_error),
    ):
        (entry,) = listed
        trace_id = response.headers["X-Trace-Id"]
        assert entry["trace_id"] == trace_id
        assert entry["trace_url"] == TEMPLATE.replace("{trace_id}", trace_id)
