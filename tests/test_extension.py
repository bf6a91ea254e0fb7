"""The Flask extension contract, settings precedence, and failure isolation."""

from __future__ import annotations

import logging

import pytest
from flask import Flask

from otel_flask_monitor import AggregateStore, ConfigError, FlaskMonitor, RequestRecord, get_state
from otel_flask_monitor.config import OPTIONS, resolve_settings
from tests.conftest import Exported
from tests.support.apps import build_app
from tests.support.clock import FakeClock


def test_app_factory_pattern_and_several_apps_in_one_process(exported: Exported) -> None:
    monitor = FlaskMonitor(service_name="factory")
    apps = []
    for name in ("first", "second"):
        app = build_app(name, monitor=False)
        monitor.init_app(app)
        apps.append(app)

    for app in apps:
        assert app.test_client().get("/items/1").status_code == 200
    assert len(exported.request_logs()) == 2
    assert get_state(apps[0]) is not get_state(apps[1])
    assert all(value is not app for app in apps for value in vars(monitor).values())


def test_second_registration_is_refused() -> None:
    app = build_app()
    with pytest.raises(RuntimeError, match="already registered"):
        FlaskMonitor(app)


def test_get_state_explains_a_missing_registration() -> None:
    with pytest.raises(RuntimeError, match="not registered"):
        get_state(Flask("bare"))


def test_settings_precedence_keyword_over_app_config_over_environment() -> None:
    env = {"OTEL_FLASK_MONITOR_MAX_ROUTES": "30", "OTEL_FLASK_MONITOR_URL_PREFIX": "/env-ops"}
    config = {"OTEL_FLASK_MONITOR_MAX_ROUTES": 20}

    assert resolve_settings({}, {}, env).max_routes == 30
    assert resolve_settings({}, config, env).max_routes == 20
    assert resolve_settings({"max_routes": 10}, config, env).max_routes == 10
    assert resolve_settings({}, config, env).url_prefix == "/env-ops"
    assert resolve_settings({}, {}, {}).max_routes == 200


def test_app_config_is_read_at_init_app(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_FLASK_MONITOR_TRACE_ID_HEADER", "X-From-Env")
    app = build_app(monitor=False)
    app.config["OTEL_FLASK_MONITOR_JSON_ERRORS"] = "false"
    FlaskMonitor(app)

    settings = get_state(app).settings
    assert settings.trace_id_header == "X-From-Env"
    assert settings.json_errors is False
    assert app.test_client().get("/items/1").headers["X-From-Env"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"no_such_option": 1}, "unknown FlaskMonitor option"),
        ({"max_routes": "many"}, "max_routes: expected an integer"),
        ({"max_routes": 0}, "expected a positive integer"),
        ({"json_errors": "perhaps"}, "json_errors: expected a boolean"),
        ({"excluded_paths": ["("]}, "not a valid regular expression"),
        ({"url_prefix": "monitoring"}, "must start with '/'"),
        ({"window_seconds": 10, "slot_seconds": 60}, "must not exceed"),
        ({"access_check": "yes"}, "expected a callable"),
    ],
)
def test_bad_settings_fail_at_construction_with_a_clear_message(
    options: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        FlaskMonitor(**options)  # type: ignore[arg-type]


def test_bad_environment_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_FLASK_MONITOR_SLOT_SECONDS", "ten")
    with pytest.raises(ConfigError, match="OTEL_FLASK_MONITOR_SLOT_SECONDS"):
        FlaskMonitor(build_app(monitor=False))


def test_every_option_is_documented() -> None:
    with open("docs/configuration.md", encoding="utf-8") as handle:
        reference = handle.read()
    for option in OPTIONS:
        assert f"`{option.name}`" in reference, option.name
        if option.from_env:
            assert f"`{option.key}`" in reference, option.key


class ExplodingStore(AggregateStore):
    def record(self, record: RequestRecord) -> None:
        raise RuntimeError("aggregates consumer exploded")


def explode(record: RequestRecord) -> None:
    raise RuntimeError("audit consumer exploded")


@pytest.mark.parametrize("broken", ["aggregates", "audit"])
def test_a_failing_consumer_never_reaches_the_request_nor_the_other_consumers(
    broken: str, exported: Exported, caplog: pytest.LogCaptureFixture
) -> None:
    """The monitor's own store, or a consumer passed to ``init_app``, raises on every record.
    (A failing span or log write inside the signals consumer: tests/test_signals.py.)"""
    witnessed: list[RequestRecord] = []
    app = build_app(monitor=False)
    FlaskMonitor(enrich_spans=True).init_app(
        app,
        aggregates=ExplodingStore(window_seconds=900, slot_seconds=10, max_routes=200, recent_errors=50)
        if broken == "aggregates"
        else None,
        consumers=[*([("audit", explode)] if broken == "audit" else []), ("witness", witnessed.append)],
    )
    client = app.test_client()

    with caplog.at_level(logging.WARNING, logger="otel_flask_monitor"):
        responses = [client.get("/items/1") for _ in range(3)]

    assert [r.status_code for r in responses] == [200, 200, 200]
    assert [r.get_json() for r in responses] == [{"id": 1}] * 3
    warnings = [r for r in caplog.records if f"consumer {broken!r} failed" in r.getMessage()]
    assert len(warnings) == 1
    assert get_state(app).failures.counts() == {f"consumer {broken!r}": 3}
    # Every other consumer still got every record, whichever one raised before it.
    assert [record.route for record in witnessed] == ["/items/<int:item_id>"] * 3
    spans = exported.server_spans()
    assert len(spans) == 3
    assert all(s.attributes and "duration_ms" in s.attributes for s in spans)
    assert len(exported.request_logs()) == 3
    counted = get_state(app).stats_document()["totals"]["requests"]
    assert counted == (0 if broken == "aggregates" else 3)


def test_init_app_takes_a_store_and_a_clock() -> None:
    """The seams of docs/configuration.md: a store filled beforehand is the one /stats reads; a
    clock times the store the monitor builds."""
    clock = FakeClock()
    filled = AggregateStore(window_seconds=60, slot_seconds=10, max_routes=5, recent_errors=5, clock=clock)
    given = build_app(monitor=False)
    FlaskMonitor().init_app(given, aggregates=filled)
    built = build_app(monitor=False)
    FlaskMonitor(window_seconds=60, slot_seconds=10).init_app(built, clock=clock)

    assert get_state(given).aggregates is filled
    for app in (given, built):
        app.test_client().get("/items/1")
        clock.advance(61)  # the whole window later, by the given clock alone
        assert app.test_client().get("/monitoring/stats").get_json()["totals"]["requests"] == 0


@pytest.mark.parametrize(
    ("part", "hook"),
    [
        ("exclusion.RequestExclusion.is_excluded", "before_request hook"),
        ("hooks.RequestLifecycle._build_record", "teardown_request hook"),
    ],
)
def test_a_failing_hook_never_reaches_the_request(
    monkeypatch: pytest.MonkeyPatch, exported: Exported, part: str, hook: str
) -> None:
    def broken(*_: object) -> None:
        raise RuntimeError(f"{part} exploded")

    monkeypatch.setattr(f"otel_flask_monitor.{part}", broken)
    app = build_app()

    assert app.test_client().get("/items/1").get_json() == {"id": 1}
    assert app.test_client().get("/boom").status_code == 500
    assert get_state(app).failures.counts() == {hook: 2}
