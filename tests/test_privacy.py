"""Secrets in headers and query strings never leave the process."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask, jsonify

from otel_flask_monitor import FlaskMonitor
from otel_flask_monitor.config import DEFAULT_REDACTED_QUERY_PARAMS
from otel_flask_monitor.redaction import REDACTED, Redactor, truncate, truncate_middle
from tests.conftest import Exported
from tests.support.apps import build_app

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
    # The names #16 found unredacted, then the long-standing ones.
    "code",
    "state",
    "jwt",
    "otp",
    "totp",
    "access",
    "bearer",
    "code_verifier",
    "PHPSESSID",
    "csrfmiddlewaretoken",
    "pass",
    "X-Amz-Credential",
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
    assert "bytes cut" in cut


def test_excluded_paths_still_get_a_redacted_span(exported: Exported) -> None:
    app = build_app(excluded_paths=["^/items/"])
    app.test_client().get(f"/items/1?page=abc&access_token={SECRET}")

    assert exported.request_logs() == []  # excluded: no record
    assert SECRET not in everything_exported(exported)
    span_attributes = dict(exported.server_spans()[0].attributes or {})
    assert span_attributes["url.query"] == f"page=abc&access_token={REDACTED}"


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


def test_semicolon_separated_parameters_are_redacted(exported: Exported) -> None:
    """#16: ``?a=1;token=SECRET`` went out as ``a=1%3Btoken%3DSECRET``."""
    build_app().test_client().get(f"/items/1?a=1;token={SECRET};b=2&api_key={SECRET}")

    assert SECRET not in everything_exported(exported)
    expected = f"a=1;token={REDACTED};b=2&api_key={REDACTED}"
    assert dict(exported.request_logs()[0].log_record.attributes or {})["url.query"] == expected
    assert dict(exported.server_spans()[0].attributes or {})["url.query"] == expected


def test_harmless_parameters_are_kept_by_the_default_list() -> None:
    redactor = Redactor([], DEFAULT_REDACTED_QUERY_PARAMS)
    harmless = "page=2&sort=price&q=blue+shoes&country=DE&zipcode=10115&status=open&lang=de&limit=50"
    assert redactor.query(harmless.encode()) == harmless.replace("+", "%20")


def test_the_query_string_is_cut_before_it_is_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    """#16: a 60 KB query string was redacted whole before being cut to the limit (4 ms -> 28 ms per
    request). Now only 3 bytes per character of the limit are parsed, whatever the client sends."""
    parsed_lengths: list[int] = []
    original = Redactor._redacted

    def spy(self: Redactor, text: str) -> str:
        parsed_lengths.append(len(text))
        return original(self, text)

    monkeypatch.setattr(Redactor, "_redacted", spy)
    redactor = Redactor([], DEFAULT_REDACTED_QUERY_PARAMS)
    huge = b"token=" + SECRET.encode() + b"&" + b"&".join(b"p%d=%s" % (n, b"v" * 50) for n in range(1100))
    assert len(huge) > 60_000
    result = redactor.query(huge, 1024)
    assert parsed_lengths == [3 * 1024]
    assert len(result) == 1024
    assert result.startswith(f"token={REDACTED}&p0=")
    assert result.endswith("...")
    # Short ones are parsed whole and not marked.
    assert redactor.query(b"a=1", 1024) == "a=1"


def test_cutting_the_query_never_splits_a_character_or_leaks_a_secret() -> None:
    redactor = Redactor([], DEFAULT_REDACTED_QUERY_PARAMS)
    multibyte = ("q=" + "\u00e9" * 100).encode()  # 2 bytes each
    for limit in range(5, 40):
        result = redactor.query(multibyte, limit)
        assert len(result) <= limit
        assert "%EF%BF%BD" not in result  # no replacement character from a split sequence
    # A secret value cut in the middle is still a secret's value.
    assert redactor.query(b"token=" + b"S" * 300, 20) == f"token={REDACTED}..."
    # A raw UTF-8 byte sequence is read as UTF-8, not re-encoded as Latin-1 characters.
    assert redactor.query("q=caf\u00e9".encode(), 100) == "q=caf%C3%A9"


CAPTURE_REQUEST = "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST"
CAPTURE_RESPONSE = "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE"


def header_app(instrumented_by: str) -> Flask:
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    app = build_app(monitor=False)

    @app.get("/session")
    def session() -> Any:
        response = jsonify(ok=True)
        response.headers["Set-Cookie"] = f"sid={SECRET}; HttpOnly"
        response.headers["X-Served-By"] = "node-7"
        return response

    if instrumented_by == "user":
        FlaskInstrumentor().instrument_app(app)  # type: ignore[no-untyped-call]
        FlaskMonitor(app, instrument_flask=False)
    else:
        FlaskMonitor(app)
    return app


@pytest.mark.parametrize("instrumented_by", ["monitor", "user"])
@pytest.mark.parametrize("capture", ["Authorization,X-Api-Key,Cookie,X-Request-Id", ".*"])
def test_headers_captured_by_the_instrumentation_are_redacted(
    monkeypatch: pytest.MonkeyPatch, exported: Exported, instrumented_by: str, capture: str
) -> None:
    """#16 hole 4: with the instrumentation's own header capture, the span carried
    ``http.request.header.authorization: ('Bearer SUPERSECRET',)``."""
    monkeypatch.setenv(CAPTURE_REQUEST, capture)
    monkeypatch.setenv(CAPTURE_RESPONSE, "Set-Cookie,X-Served-By" if capture != ".*" else ".*")
    app = header_app(instrumented_by)
    headers = {
        "Authorization": f"Bearer {SECRET}",
        "X-Api-Key": SECRET,
        "Cookie": f"session={SECRET}",
        "X-Request-Id": "req-42",
    }
    for path in ("/session", "/health-check?x=1"):
        assert app.test_client(use_cookies=False).get(path, headers=headers).status_code == 200

    assert SECRET not in everything_exported(exported)
    spans = exported.server_spans()
    assert len(spans) == 2
    attributes = dict(spans[0].attributes or {})
    for key in (
        "http.request.header.authorization",
        "http.request.header.x_api_key",
        "http.request.header.cookie",
        "http.response.header.set_cookie",
    ):
        assert attributes[key] == (REDACTED,), key
    assert attributes["http.request.header.x_request_id"] == ("req-42",)
    assert attributes["http.response.header.x_served_by"] == ("node-7",)
    if instrumented_by == "user":
        from opentelemetry.instrumentation.flask import FlaskInstrumentor

        FlaskInstrumentor().uninstrument_app(app)  # type: ignore[no-untyped-call]


def test_excluded_paths_get_their_captured_headers_redacted_too(
    monkeypatch: pytest.MonkeyPatch, exported: Exported
) -> None:
    monkeypatch.setenv(CAPTURE_REQUEST, "Authorization")
    app = build_app(excluded_paths=["^/health-check$"])
    app.test_client().get("/health-check", headers={"Authorization": f"Bearer {SECRET}"})
    assert exported.request_logs() == []
    assert dict(exported.server_spans()[0].attributes or {})["http.request.header.authorization"] == (
        REDACTED,
    )


def test_header_attribute_redaction_keeps_the_value_shape() -> None:
    redactor = Redactor(["authorization", "x-api-key"], [])
    replaced = redactor.header_attributes(
        {
            "http.request.header.authorization": ("Bearer a", "Bearer b"),
            "http.request.header.x_api_key": ["k"],
            "http.request.header.x-api-key": "k",
            "http.response.header.x_api_key": ("k",),
            "http.request.header.accept": ("*/*",),
            "http.route": "/x",
        }
    )
    assert replaced == {
        "http.request.header.authorization": (REDACTED, REDACTED),
        "http.request.header.x_api_key": (REDACTED,),
        "http.request.header.x-api-key": REDACTED,
        "http.response.header.x_api_key": (REDACTED,),
    }


@pytest.mark.parametrize(
    ("configured", "shown"),
    [
        ("http://apiuser:S3CRETPW@collector:4318", "http://collector:4318/v1/logs"),
        ("https://token@otlp.example.com/otlp/", "https://otlp.example.com/otlp/v1/logs"),
        ("http://user:p%40ss@[::1]:4318", "http://[::1]:4318/v1/logs"),
        ("http://collector:4318/path@v1", "http://collector:4318/path@v1/v1/logs"),  # not in the authority
    ],
)
def test_endpoints_are_shown_without_credentials(
    monkeypatch: pytest.MonkeyPatch, configured: str, shown: str
) -> None:
    from otel_flask_monitor.otel_env import otlp_endpoint

    for name in (
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL",
        "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", configured)
    assert otlp_endpoint("logs") == shown
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "user:pw@collector:4317")
    assert otlp_endpoint("logs") == "collector:4317"
