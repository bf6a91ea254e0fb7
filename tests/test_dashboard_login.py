"""Browser login for the monitoring routes: ``/monitoring/login`` with the access token, a signed
session cookie, rate-limited failures and ``/monitoring/logout``.

Every client here is remote (``REMOTE_ADDR`` 203.0.113.7 in the WSGI environ, no network traffic):
loopback clients never need to sign in.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from otel_flask_monitor import FlaskMonitor
from otel_flask_monitor.dashboard import access
from otel_flask_monitor.dashboard.access import (
    LOGIN_MAX_FAILURES,
    SESSION_COOKIE,
    LoginRateLimiter,
    client_address,
)
from tests.conftest import Exported

REMOTE = {"REMOTE_ADDR": "203.0.113.7"}
OTHER_REMOTE = {"REMOTE_ADDR": "198.51.100.9"}
TOKEN = "login-test-token-Zq8vN3x"
OTHER_TOKEN = "rotated-token-Hk27pLm0"
DATA_ROUTES = ("/monitoring/dashboard", "/monitoring/stats", "/monitoring/health")
BROWSER_ACCEPT = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
TWELVE_HOURS = 12 * 3600


def monitored_app(**options: Any) -> Flask:
    app = Flask("login-tests")

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> Any:
        return {"id": item_id}

    FlaskMonitor(app, **options)
    return app


def remote_client(app: Flask, environ: dict[str, str] | None = None) -> FlaskClient:
    client = app.test_client()
    client.environ_base.update(environ or REMOTE)
    return client


@pytest.fixture
def app() -> Flask:
    return monitored_app(access_token=TOKEN)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return remote_client(app)


def login(client: FlaskClient, token: str = TOKEN, **kwargs: Any) -> TestResponse:
    return client.post("/monitoring/login", data={"token": token}, **kwargs)


def session_cookie(client: FlaskClient, path: str = "/monitoring") -> str | None:
    cookie = client.get_cookie(SESSION_COOKIE, path=path)
    return None if cookie is None else cookie.value


def set_cookie_attributes(response: TestResponse) -> dict[str, str]:
    """The one Set-Cookie header of the response, as lower-case attribute -> value."""
    (header,) = response.headers.getlist("Set-Cookie")
    name_value, *attributes = (part.strip() for part in header.split(";"))
    name, _, value = name_value.partition("=")
    assert name == SESSION_COOKIE
    parsed = {"": value}
    for attribute in attributes:
        key, _, attribute_value = attribute.partition("=")
        parsed[key.lower()] = attribute_value
    return parsed


def assert_no_data(response: TestResponse) -> None:
    assert response.status_code in (401, 303), response.status_code
    assert b"routes" not in response.data
    assert b"system_metrics" not in response.data


# --- the page ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("environ", [REMOTE, {"REMOTE_ADDR": "127.0.0.1"}])
def test_no_login_routes_without_a_token(environ: dict[str, str]) -> None:
    client = remote_client(monitored_app(), environ)
    assert client.get("/monitoring/login").status_code == 404
    assert login(client).status_code == 404
    assert client.get("/monitoring/logout").status_code == 404
    assert client.get_cookie(SESSION_COOKIE, path="/monitoring") is None


def test_static_files_stay_closed_without_a_token() -> None:
    client = remote_client(monitored_app())
    assert client.get("/monitoring/static/login.css").status_code == 403
    assert client.get("/monitoring/static/dashboard.js").status_code == 403


def test_login_page_is_a_plain_form_under_a_strict_policy(client: FlaskClient) -> None:
    response = client.get("/monitoring/login")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert '<form method="post" action="/monitoring/login">' in page
    assert 'name="token"' in page
    assert 'type="password"' in page
    assert "<script" not in page
    assert "style=" not in page  # the policy allows no inline style either
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy
    assert "form-action 'self'" in policy
    assert "script-src" not in policy  # falls back to default-src 'none': no script at all
    assert "unsafe-inline" not in policy
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "Set-Cookie" not in response.headers
    # Its stylesheet is public; the dashboard's script and data are not.
    with client.get("/monitoring/static/login.css") as stylesheet:
        assert stylesheet.status_code == 200
        assert stylesheet.mimetype == "text/css"
    assert client.get("/monitoring/static/dashboard.js").status_code == 401


def test_browser_page_load_is_sent_to_the_login_form(client: FlaskClient) -> None:
    for route in ("/monitoring/dashboard", "/monitoring/"):
        response = client.get(route, headers=BROWSER_ACCEPT)
        assert response.status_code == 303, route
        assert response.headers["Location"] == "/monitoring/login"
    # Scripts and JSON clients keep the 401 with the Bearer challenge.
    for headers in ({"Accept": "*/*"}, {"Accept": "application/json"}, {}):
        response = client.get("/monitoring/dashboard", headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/monitoring/stats", headers=BROWSER_ACCEPT).status_code == 401


# --- signing in -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "wrong", ["", " ", "nope", TOKEN + "x", TOKEN[:-1], TOKEN.upper(), f"Bearer {TOKEN}"]
)
def test_wrong_token_is_401_with_the_form_and_no_cookie(client: FlaskClient, wrong: str) -> None:
    response = login(client, wrong)
    assert response.status_code == 401
    assert "Set-Cookie" not in response.headers
    page = response.get_data(as_text=True)
    assert 'name="token"' in page
    assert "Sign-in failed." in page
    assert session_cookie(client) is None
    assert client.get("/monitoring/stats").status_code == 401


def test_failure_gives_no_hint(client: FlaskClient) -> None:
    """Every wrong token, close or not, gets the same answer."""
    pages = {login(client, wrong).get_data() for wrong in ("a", TOKEN[:-1], TOKEN + TOKEN)}
    assert len(pages) == 1
    missing_field = client.post("/monitoring/login", data={})
    assert missing_field.status_code == 401
    assert missing_field.get_data() in pages


def test_right_token_sets_a_strict_cookie_and_redirects(client: FlaskClient) -> None:
    response = login(client)
    assert response.status_code == 303
    assert response.headers["Location"] == "/monitoring/dashboard"
    cookie = set_cookie_attributes(response)
    assert "httponly" in cookie
    assert cookie["samesite"] == "Strict"
    assert cookie["path"] == "/monitoring"
    assert cookie["max-age"] == str(TWELVE_HOURS)
    assert "secure" not in cookie  # plain http: a Secure cookie would never come back
    assert "domain" not in cookie  # host-only
    assert re.fullmatch(r"\d+\.[A-Za-z0-9_-]{43}", cookie[""]), cookie[""]
    assert TOKEN not in cookie[""]


def test_cookie_is_secure_over_https(app: Flask) -> None:
    client = remote_client(app)
    response = login(client, base_url="https://monitor.example")
    assert response.status_code == 303
    assert "secure" in set_cookie_attributes(response)


def test_surrounding_whitespace_is_ignored(client: FlaskClient) -> None:
    assert login(client, f"  {TOKEN}\n").status_code == 303


def test_cookie_opens_dashboard_stats_and_health(client: FlaskClient) -> None:
    client.get("/items/1")
    for route in DATA_ROUTES:
        assert client.get(route).status_code == 401, route
    login(client)
    for route in DATA_ROUTES:
        response = client.get(route, headers=BROWSER_ACCEPT)
        assert response.status_code == 200, route
    stats = client.get("/monitoring/stats").get_json()
    assert stats["totals"]["requests"] == 1
    assert client.get("/monitoring/health").get_json()["status"] in ("ok", "degraded")
    with client.get("/monitoring/static/dashboard.js") as script:
        assert script.status_code == 200
    page = client.get("/monitoring/dashboard").get_data(as_text=True)
    assert '<a id="logout" class="logout" href="/monitoring/logout">Log out</a>' in page


def test_no_logout_link_without_a_cookie() -> None:
    local = monitored_app(access_token=TOKEN).test_client()
    page = local.get("/monitoring/dashboard").get_data(as_text=True)  # loopback: no sign-in needed
    assert "Log out" not in page
    bearer = remote_client(monitored_app(access_token=TOKEN))
    headers = {"Authorization": f"Bearer {TOKEN}"}
    assert "Log out" not in bearer.get("/monitoring/dashboard", headers=headers).get_data(as_text=True)


def test_a_cookie_is_valid_in_every_worker_with_the_same_token(client: FlaskClient) -> None:
    login(client)
    value = session_cookie(client)
    assert value is not None
    other_worker = remote_client(monitored_app(access_token=TOKEN), OTHER_REMOTE)
    other_worker.set_cookie(SESSION_COOKIE, value, path="/monitoring")
    assert other_worker.get("/monitoring/stats").status_code == 200


def test_cookie_signed_with_an_old_token_is_refused(client: FlaskClient) -> None:
    login(client)
    value = session_cookie(client)
    assert value is not None
    rotated = remote_client(monitored_app(access_token=OTHER_TOKEN))
    rotated.set_cookie(SESSION_COOKIE, value, path="/monitoring")
    for route in DATA_ROUTES:
        assert_no_data(rotated.get(route))
    assert "Log out" not in rotated.get("/monitoring/login").get_data(as_text=True)


def test_expired_cookie_is_refused(client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    login(client)
    start = access._now()
    monkeypatch.setattr(access, "_now", lambda: start + TWELVE_HOURS - 60)
    assert client.get("/monitoring/stats").status_code == 200
    monkeypatch.setattr(access, "_now", lambda: start + TWELVE_HOURS + 1)
    for route in DATA_ROUTES:
        assert_no_data(client.get(route))
    # The browser is sent back to the form.
    response = client.get("/monitoring/dashboard", headers=BROWSER_ACCEPT)
    assert response.headers["Location"] == "/monitoring/login"


def test_short_session_setting_and_lowering_it_later(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    short = remote_client(monitored_app(access_token=TOKEN, login_session_seconds=30))
    response = login(short)
    assert set_cookie_attributes(response)["max-age"] == "30"
    start = access._now()
    monkeypatch.setattr(access, "_now", lambda: start + 31)
    assert short.get("/monitoring/stats").status_code == 401
    monkeypatch.undo()
    # A 12 h cookie issued before the lifetime was lowered is refused by the stricter setting.
    login(client)
    value = session_cookie(client)
    assert value is not None
    stricter = remote_client(monitored_app(access_token=TOKEN, login_session_seconds=30))
    stricter.set_cookie(SESSION_COOKIE, value, path="/monitoring")
    assert stricter.get("/monitoring/stats").status_code == 401


def _tampered(value: str) -> Iterator[str]:
    expires, _, signature = value.partition(".")
    yield f"{int(expires) + 3600}.{signature}"  # extended lifetime
    yield f"{int(expires) - 1}.{signature}"
    flipped = "A" if signature[0] != "A" else "B"
    yield f"{expires}.{flipped}{signature[1:]}"
    yield f"{expires}.{signature[:-1]}"
    yield f"{expires}.{signature}x"
    yield f"{expires}."
    yield f".{signature}"
    yield expires
    yield signature
    yield TOKEN
    yield f"{expires}.{TOKEN}"
    yield "9" * 40 + "." + signature
    yield f"{expires}.{signature}".replace("-", "+")
    yield "١٢٣." + signature  # non-ASCII digits
    yield "garbage"


def test_tampered_cookie_is_refused(client: FlaskClient) -> None:
    login(client)
    value = session_cookie(client)
    assert value is not None
    for tampered in _tampered(value):
        if tampered == value:
            continue
        forged = remote_client(monitored_app(access_token=TOKEN))
        forged.set_cookie(SESSION_COOKIE, tampered, path="/monitoring")
        response = forged.get("/monitoring/stats")
        assert response.status_code == 401, tampered
        assert b"routes" not in response.data


def test_bearer_token_and_loopback_are_unchanged(app: Flask) -> None:
    remote = remote_client(app)
    assert remote.get("/monitoring/stats", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert remote.get("/monitoring/stats", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert app.test_client().get("/monitoring/stats").status_code == 200  # loopback


def test_cookie_opens_the_routes_like_a_bearer_token_despite_access_check() -> None:
    client = remote_client(monitored_app(access_token=TOKEN, access_check=lambda request: False))
    assert client.get("/monitoring/stats").status_code == 401
    assert login(client).status_code == 303
    assert client.get("/monitoring/stats").status_code == 200


def test_cross_site_form_posts_are_refused(client: FlaskClient) -> None:
    for site in ("cross-site", "same-site"):
        response = login(client, headers={"Sec-Fetch-Site": site})
        assert response.status_code == 403, site
        assert "Set-Cookie" not in response.headers
    assert login(client, headers={"Sec-Fetch-Site": "same-origin"}).status_code == 303


def test_custom_prefix_scopes_the_cookie() -> None:
    client = remote_client(monitored_app(access_token=TOKEN, url_prefix="/ops/monitor"))
    assert client.get("/monitoring/login").status_code == 404
    response = client.post("/ops/monitor/login", data={"token": TOKEN})
    assert response.status_code == 303
    assert response.headers["Location"] == "/ops/monitor/dashboard"
    assert set_cookie_attributes(response)["path"] == "/ops/monitor"
    assert client.get("/ops/monitor/stats").status_code == 200


# --- rate limit -------------------------------------------------------------------------------------------


def test_failed_attempts_are_rate_limited_per_address(client: FlaskClient, app: Flask) -> None:
    for attempt in range(LOGIN_MAX_FAILURES):
        assert login(client, f"guess-{attempt}").status_code == 401
    limited = login(client, "guess-again")
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert "Too many failed attempts" in limited.get_data(as_text=True)
    # While limited even the right token is not tried, so guessing cannot go on.
    right = login(client)
    assert right.status_code == 429
    assert "Set-Cookie" not in right.headers
    # Another address is not affected.
    other = remote_client(app, OTHER_REMOTE)
    assert login(other).status_code == 303


def test_success_resets_the_failure_count(client: FlaskClient) -> None:
    for attempt in range(LOGIN_MAX_FAILURES - 1):
        assert login(client, f"typo-{attempt}").status_code == 401
    assert login(client).status_code == 303
    for attempt in range(LOGIN_MAX_FAILURES - 1):
        assert login(client, f"typo-{attempt}").status_code == 401


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_limiter_window_slides_and_memory_is_bounded() -> None:
    clock = FakeClock()
    limiter = LoginRateLimiter(max_failures=3, period_seconds=60, max_clients=100, clock=clock)
    for _ in range(3):
        assert limiter.retry_after("a") is None
        limiter.failure("a")
        clock.now += 10
    assert limiter.retry_after("a") == 30  # failures at 1000, 1010, 1020; now 1030; 1000 leaves at 1060
    clock.now += 30
    assert limiter.retry_after("a") is None
    limiter.failure("a")
    assert limiter.retry_after("a") is not None

    for number in range(1000):
        limiter.failure(f"10.0.{number // 256}.{number % 256}")
    assert limiter.tracked_clients() == 100
    clock.now += 61
    assert limiter.retry_after("a") is None
    limiter.success("10.0.3.231")
    assert limiter.tracked_clients() == 99


def test_clients_behind_a_local_proxy_are_counted_by_their_forwarded_address(app: Flask) -> None:
    with app.test_request_context(
        environ_base={"REMOTE_ADDR": "127.0.0.1"}, headers={"X-Forwarded-For": "127.0.0.1, 203.0.113.7"}
    ):
        from flask import request

        assert client_address(request) == "203.0.113.7"
    with app.test_request_context(environ_base=REMOTE, headers={"X-Forwarded-For": "10.9.9.9"}):
        from flask import request

        assert client_address(request) == "203.0.113.7"  # a remote peer cannot choose its own key


# --- logout, and the token never leaks --------------------------------------------------------------------


def test_logout_clears_the_cookie(client: FlaskClient) -> None:
    login(client)
    assert client.get("/monitoring/stats").status_code == 200
    response = client.get("/monitoring/logout")
    assert response.status_code == 303
    assert response.headers["Location"] == "/monitoring/login"
    cookie = set_cookie_attributes(response)
    assert cookie[""] == ""
    assert cookie["max-age"] == "0"
    assert cookie["path"] == "/monitoring"
    assert session_cookie(client) is None
    assert client.get("/monitoring/stats").status_code == 401
    # POST works too, and logging out without a session is harmless.
    assert client.post("/monitoring/logout").status_code == 303


def test_the_token_never_appears_in_a_response_or_in_telemetry(app: Flask, exported: Exported) -> None:
    client = remote_client(app)
    responses = [
        client.get("/monitoring/login"),
        login(client, "wrong"),
        login(client, TOKEN[:-2]),
        login(client),
        client.get("/monitoring/dashboard"),
        client.get("/monitoring/stats"),
        client.get("/monitoring/health"),
        client.get("/monitoring/logout"),
        client.get("/monitoring/dashboard", headers=BROWSER_ACCEPT),
        client.post("/monitoring/login?token=" + TOKEN, data={"token": TOKEN}),
    ]
    for _ in range(LOGIN_MAX_FAILURES):
        responses.append(login(client, "bad"))
    responses.append(login(client))
    assert {429, 401, 303, 200} <= {response.status_code for response in responses}
    for response in responses:
        assert TOKEN.encode() not in response.data
        for name, value in response.headers.items():
            assert TOKEN not in value, name
    # The monitor's own routes, sign-in included, produce no record, log or span.
    assert exported.request_logs() == []
    assert exported.server_spans() == []
    assert TOKEN not in repr([log.log_record.attributes for log in exported.logs()])
    assert (
        client.get("/monitoring/stats", headers={"Authorization": f"Bearer {TOKEN}"}).get_json()["totals"][
            "requests"
        ]
        == 0
    )
