"""Secrets in headers and query strings never leave the process."""

from __future__ import annotations

import pytest

from otel_flask_monitor.redaction import REDACTED, Redactor, truncate, truncate_middle
from tests.apps import build_app
from tests.conftest import Exported

SECRET = "s3cr3t-VALUE-8f1e2d"

SECRET_HEADERS = [
    ("Authorization", f"Bearer {SECRET}"),
    ("Proxy-Authorization", f"Basic {SECRET}"),
    ("Cookie", f"session={SECRET}"),
    ("X-Api-Key", SECRET),
    ("Api-Key", SECRET),
    ("X-Auth-Token", SECRET),
]

SECRET_QUERY_PARAMS = [
    "token",
    "access_token",
    "password",
    "client_secret",
    "api_key",
    "apikey",
    "key",
    "signature",
    "X-Amz-Signature",
    "sig",
]


def everything_exported(exported: Exported) -> str:
    """Every exported span and log record, attributes, events and bodies included, as text."""
    parts: list[str] = []
    for span in exported.spans():
        parts.append(span.to_json())
    for record in exported.logs():
        parts.append(record.to_json())
    return "\n".join(parts)


@pytest.mark.parametrize(("header", "value"), SECRET_HEADERS)
def test_secret_headers_never_appear_in_exported_telemetry(
    exported: Exported, header: str, value: str
) -> None:
    app = build_app(captured_headers=[header, "X-Request-Id"])
    # use_cookies=False: werkzeug's cookie jar would replace a hand-written Cookie header
    response = app.test_client(use_cookies=False).get(
        "/items/1", headers={header: value, "X-Request-Id": "req-42"}
    )

    assert response.status_code == 200
    text = everything_exported(exported)
    assert SECRET not in text
    attributes = dict(exported.request_logs()[0].log_record.attributes or {})
    assert attributes[f"http.request.header.{header.lower()}"] == REDACTED
    assert attributes["http.request.header.x-request-id"] == "req-42"


@pytest.mark.parametrize("name", SECRET_QUERY_PARAMS)
def test_secret_query_parameters_never_appear_in_exported_telemetry(exported: Exported, name: str) -> None:
    app = build_app()
    response = app.test_client().get(f"/items/1?{name}={SECRET}&page=2")

    assert response.status_code == 200
    assert SECRET not in everything_exported(exported)
    attributes = dict(exported.request_logs()[0].log_record.attributes or {})
    assert attributes["url.query"] == f"{name}={REDACTED}&page=2"
    span_attributes = dict(exported.server_spans()[0].attributes or {})
    assert span_attributes["url.query"] == f"{name}={REDACTED}&page=2"


def test_secrets_in_a_failing_request_do_not_leak(exported: Exported) -> None:
    app = build_app(captured_headers=["Authorization"])
    app.test_client().get(f"/boom?token={SECRET}", headers={"Authorization": f"Bearer {SECRET}"})

    assert SECRET not in everything_exported(exported)


def test_headers_are_not_captured_unless_asked(exported: Exported) -> None:
    build_app().test_client().get("/items/1", headers={"X-Request-Id": "req-42"})

    attributes = dict(exported.request_logs()[0].log_record.attributes or {})
    assert not [key for key in attributes if key.startswith("http.request.header.")]


def test_redaction_lists_are_configurable(exported: Exported) -> None:
    app = build_app(
        redacted_query_params=["^tenant$"], redacted_headers=["x-tenant"], captured_headers=["X-Tenant"]
    )
    app.test_client().get("/items/1?tenant=acme&token=visible", headers={"X-Tenant": "acme"})

    attributes = dict(exported.request_logs()[0].log_record.attributes or {})
    assert attributes["url.query"] == f"tenant={REDACTED}&token=visible"
    assert attributes["http.request.header.x-tenant"] == REDACTED


def test_redactor_keeps_harmless_parameters_and_survives_bad_encoding() -> None:
    redactor = Redactor(["authorization"], ["token"])

    assert redactor.query(b"a=1&b=two+words&token=x") == f"a=1&b=two%20words&token={REDACTED}"
    assert redactor.query(b"flag&token") == f"flag=&token={REDACTED}"
    assert redactor.query(b"bad=%ff%fe&token=%zz") == f"bad=%EF%BF%BD%EF%BF%BD&token={REDACTED}"
    assert redactor.query(b"") == ""
    assert redactor.header_value("AUTHORIZATION", "Bearer x") == REDACTED
    assert redactor.header_value("Accept", "text/html") == "text/html"


def test_truncation_keeps_within_the_limit() -> None:
    assert truncate("abcdef", 10) == "abcdef"
    assert truncate("a" * 100, 10) == "a" * 7 + "..."
    long_trace = "Traceback (most recent call last):\n" + "  frame\n" * 5000 + "ValueError: last line"
    cut = truncate_middle(long_trace, 1000)
    assert len(cut) <= 1000
    assert cut.startswith("Traceback (most recent call last):")
    assert cut.endswith("ValueError: last line")
    assert "characters cut" in cut


def test_excluded_paths_still_get_a_redacted_span(exported: Exported) -> None:
    app = build_app(excluded_paths=["^/items/"])
    app.test_client().get(f"/items/1?code=abc&access_token={SECRET}")

    assert exported.request_logs() == []  # excluded: no record
    assert SECRET not in everything_exported(exported)
    span_attributes = dict(exported.server_spans()[0].attributes or {})
    assert span_attributes["url.query"] == f"code=abc&access_token={REDACTED}"


def test_an_app_instrumented_after_the_monitor_still_leaks_nothing(
    exported: Exported, caplog: pytest.LogCaptureFixture
) -> None:
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    app = build_app(instrument_flask=False)
    FlaskInstrumentor().instrument_app(app)  # type: ignore[no-untyped-call]
    client = app.test_client()
    with caplog.at_level("INFO", logger="otel_flask_monitor"):
        for _ in range(2):
            assert client.get(f"/items/1?token={SECRET}").status_code == 200

    assert SECRET not in everything_exported(exported)
    assert len([r for r in caplog.records if "moved its request hooks" in r.getMessage()]) == 1
    FlaskInstrumentor().uninstrument_app(app)  # type: ignore[no-untyped-call]
