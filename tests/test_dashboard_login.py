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
from flask import request as flask_request
from flask.testing import FlaskClient
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.test import TestResponse

from otel_flask_monitor import FlaskMonitor
from otel_flask_monitor.dashboard.access import (
    LOGIN_MAX_FAILURES,
    DenialLog,
    LoginRateLimiter,
    client_address,
    limiter_key,
)
from otel_flask_monitor.dashboard.sessions import SESSION_COOKIE, RevokedSessions, Session
from tests.conftest import Exported
from tests.support.clock import FakeClock

REMOTE = {"REMOTE_ADDR": "203.0.113.7"}
OTHER_REMOTE = {"REMOTE_ADDR": "198.51.100.9"}
TOKEN = "login-test-token-Zq8vN3x"
OTHER_TOKEN = "rotated-token-Hk27pLm0"
DATA_ROUTES = ("/monitoring/dashboard", "/monitoring/stats", "/monitoring/health")
BROWSER_ACCEPT = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
TWELVE_HOURS = 12 * 3600


def monitored_app(clock: FakeClock | None = None, **options: Any) -> Flask:
    app = Flask("login-tests")

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> Any:
        return {"id": item_id}

    FlaskMonitor(**options).init_app(app, clock=clock or FakeClock())
    return app


def remote_client(app: Flask, environ: dict[str, str] | None = None) -> FlaskClient:
    client = app.test_client()
    client.environ_base.update(environ or REMOTE)
    return client


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def app(clock: FakeClock) -> Flask:
    return monitored_app(clock, access_token=TOKEN)


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
    assert client.post("/monitoring/logout").status_code == 404
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
    assert re.fullmatch(r"\d+\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}", cookie[""]), cookie[""]
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
    # Logging out is a POST from a form (a link would let any page log the operator out).
    assert '<form class="logout-form" method="post" action="/monitoring/logout">' in page
    assert '<button id="logout" class="logout" type="submit">Log out</button>' in page


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


def test_expired_cookie_is_refused(client: FlaskClient, clock: FakeClock) -> None:
    login(client)
    clock.advance(TWELVE_HOURS - 60)
    assert client.get("/monitoring/stats").status_code == 200
    clock.advance(61)
    for route in DATA_ROUTES:
        assert_no_data(client.get(route))
    # The browser is sent back to the form.
    response = client.get("/monitoring/dashboard", headers=BROWSER_ACCEPT)
    assert response.headers["Location"] == "/monitoring/login"


def test_short_session_setting_and_lowering_it_later(client: FlaskClient) -> None:
    short_clock = FakeClock()
    short = remote_client(monitored_app(short_clock, access_token=TOKEN, login_session_seconds=30))
    response = login(short)
    assert set_cookie_attributes(response)["max-age"] == "30"
    assert short.get("/monitoring/stats").status_code == 200
    short_clock.advance(31)
    assert short.get("/monitoring/stats").status_code == 401
    # A 12 h cookie issued before the lifetime was lowered is refused by the stricter setting.
    login(client)
    value = session_cookie(client)
    assert value is not None
    stricter = remote_client(monitored_app(access_token=TOKEN, login_session_seconds=30))
    stricter.set_cookie(SESSION_COOKIE, value, path="/monitoring")
    assert stricter.get("/monitoring/stats").status_code == 401


def _tampered(value: str) -> Iterator[str]:
    expires, nonce, signature = value.split(".")
    yield f"{int(expires) + 3600}.{nonce}.{signature}"  # extended lifetime
    yield f"{int(expires) - 1}.{nonce}.{signature}"
    flipped = "A" if signature[0] != "A" else "B"
    yield f"{expires}.{nonce}.{flipped}{signature[1:]}"
    yield f"{expires}.{flipped}{nonce[1:]}.{signature}"  # another session's nonce
    yield f"{expires}.{nonce}.{signature[:-1]}"
    yield f"{expires}.{nonce}.{signature}x"
    yield f"{expires}.{nonce}."
    yield f"{expires}..{signature}"
    yield f"{expires}.{signature}"  # the v1 layout
    yield f".{nonce}.{signature}"
    yield expires
    yield signature
    yield TOKEN
    yield f"{expires}.{nonce}.{TOKEN}"
    yield "9" * 40 + f".{nonce}.{signature}"
    yield f"{expires}.{nonce}.{signature}".replace("-", "+")
    yield f"١٢٣.{nonce}.{signature}"  # non-ASCII digits
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


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "http://localhost.evil.example"},
        {"Origin": "http://localhost:8080"},  # another port is another origin
        {"Origin": "null"},  # sandboxed frames, data: URLs, no-referrer pages
        {"Referer": "https://evil.example/guess.html"},
        {"Origin": "https://evil.example", "Referer": "http://localhost/monitoring/login"},
    ],
)
def test_cross_site_posts_are_refused_without_sec_fetch_site(
    client: FlaskClient, headers: dict[str, str]
) -> None:
    """Browsers that send no ``Sec-Fetch-Site`` still send ``Origin`` (or at least ``Referer``)."""
    response = login(client, headers=headers)
    assert response.status_code == 403
    assert "Set-Cookie" not in response.headers
    assert "Sign-in must be submitted from this page." in response.get_data(as_text=True)


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://localhost"},
        {"Origin": "http://LOCALHOST:80"},
        {"Origin": "https://localhost"},  # behind a TLS proxy the app sees http
        {"Referer": "http://localhost/monitoring/login"},
        {},  # curl and scripts send neither
    ],
)
def test_same_origin_posts_pass_without_sec_fetch_site(client: FlaskClient, headers: dict[str, str]) -> None:
    assert login(client, headers=headers).status_code == 303


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


def test_forwarding_headers_cannot_buy_fresh_guesses(app: Flask) -> None:
    """#16 hole 1: once locked out, a new ``Forwarded: for=`` per try got every guess checked again."""
    through_local_proxy = remote_client(app, {"REMOTE_ADDR": "127.0.0.1"})
    spoofed = {"X-Forwarded-For": "9.9.9.9"}
    for attempt in range(LOGIN_MAX_FAILURES):
        assert login(through_local_proxy, f"guess-{attempt}", headers=spoofed).status_code == 401
    assert login(through_local_proxy, "guess", headers=spoofed).status_code == 429
    for number in range(20):
        headers = {**spoofed, "Forwarded": f"for=10.0.0.{number}", "X-Real-IP": f"10.1.0.{number}"}
        assert login(through_local_proxy, f"guess-{number}", headers=headers).status_code == 429
    assert login(through_local_proxy, headers={"X-Forwarded-For": "10.9.9.9"}).status_code == 429


def test_an_attacker_cannot_lock_out_a_chosen_person() -> None:
    """#16 hole 1: five wrong tries naming the victim in a forwarding header locked the victim out."""
    # Behind a proxy with ProxyFix: the proxy appends the address it saw, ProxyFix takes that one.
    proxied = monitored_app(access_token=TOKEN)
    proxied.wsgi_app = ProxyFix(proxied.wsgi_app, x_for=1)  # type: ignore[method-assign]
    attacker = remote_client(proxied, {"REMOTE_ADDR": "127.0.0.1"})
    naming_the_victim = {"X-Forwarded-For": "198.51.100.7, 203.0.113.66", "Forwarded": "for=198.51.100.7"}
    for attempt in range(LOGIN_MAX_FAILURES):
        assert login(attacker, f"guess-{attempt}", headers=naming_the_victim).status_code == 401
    assert login(attacker, headers=naming_the_victim).status_code == 429  # the attacker is the one limited
    victim = remote_client(proxied, {"REMOTE_ADDR": "127.0.0.1"})
    assert login(victim, headers={"X-Forwarded-For": "198.51.100.7"}).status_code == 303

    # The set-up: the attacker reaches the app through a proxy on the same host (no ProxyFix)
    # and names the victim, who connects directly. The victim's address used to be the key.
    direct = monitored_app(access_token=TOKEN)
    attacker = remote_client(direct, {"REMOTE_ADDR": "127.0.0.1"})
    naming_the_victim_last = {"X-Forwarded-For": "203.0.113.66", "Forwarded": "for=198.51.100.7"}
    for attempt in range(LOGIN_MAX_FAILURES):
        assert login(attacker, f"guess-{attempt}", headers=naming_the_victim_last).status_code == 401
    assert login(remote_client(direct, {"REMOTE_ADDR": "198.51.100.7"})).status_code == 303
    # What it costs without ProxyFix: the proxy's clients cannot be told apart, so they share one
    # budget (docs/dashboard.md says to apply ProxyFix).
    behind_the_same_proxy = remote_client(direct, {"REMOTE_ADDR": "127.0.0.1"})
    assert login(behind_the_same_proxy, headers={"X-Forwarded-For": "192.0.2.10"}).status_code == 429


def test_client_address_is_the_peer_never_a_header(app: Flask) -> None:
    for headers in (
        {"X-Forwarded-For": "10.9.9.9"},
        {"Forwarded": "for=10.9.9.9"},
        {"X-Real-IP": "10.9.9.9"},
    ):
        with app.test_request_context(environ_base=REMOTE, headers=headers):
            assert client_address(flask_request) == "203.0.113.7"
    # IPv6 clients are counted per /64: one host holds a whole prefix.
    assert limiter_key("2001:db8:1:2:aaaa::1") == limiter_key("2001:db8:1:2:bbbb::2") == "2001:db8:1:2::/64"
    assert limiter_key("2001:db8:1:3::1") != limiter_key("2001:db8:1:2::1")
    assert limiter_key("203.0.113.7") == "203.0.113.7"


def test_wrong_bearer_tokens_are_limited_and_logged(app: Flask, caplog: pytest.LogCaptureFixture) -> None:
    """#16 hole 2: 500 wrong bearer tokens were all checked, and the right one right after got 200."""
    client = remote_client(app)
    with caplog.at_level("WARNING", logger="otel_flask_monitor"):
        statuses = [
            client.get("/monitoring/stats", headers={"Authorization": f"Bearer guess-{n}"}).status_code
            for n in range(100)
        ]
        right = client.get("/monitoring/stats", headers={"Authorization": f"Bearer {TOKEN}"})
    assert statuses[:LOGIN_MAX_FAILURES] == [401] * LOGIN_MAX_FAILURES
    assert set(statuses[LOGIN_MAX_FAILURES:]) == {429}
    assert right.status_code == 429  # no oracle: while limited not even the right token is tried
    assert 1 <= int(right.headers["Retry-After"]) <= 60
    assert b"routes" not in right.data
    denials = [
        record.getMessage() for record in caplog.records if "wrong access token" in record.getMessage()
    ]
    assert len(denials) == 1, denials  # one line for the whole burst
    assert "203.0.113.7" in denials[0]
    assert "bearer token" in denials[0]
    assert TOKEN not in caplog.text
    # Other addresses, loopback clients and signed-in browsers are not affected.
    assert (
        remote_client(app, OTHER_REMOTE)
        .get("/monitoring/stats", headers={"Authorization": f"Bearer {TOKEN}"})
        .status_code
        == 200
    )
    assert (
        app.test_client().get("/monitoring/stats", headers={"Authorization": "Bearer x"}).status_code == 200
    )


def test_bearer_and_sign_in_failures_share_one_budget(app: Flask) -> None:
    client = remote_client(app)
    for attempt in range(LOGIN_MAX_FAILURES - 2):
        assert (
            client.get("/monitoring/stats", headers={"Authorization": f"Bearer g{attempt}"}).status_code
            == 401
        )
    assert login(client, "form-guess-1").status_code == 401
    assert login(client, "form-guess-2").status_code == 401
    assert login(client).status_code == 429
    assert client.get("/monitoring/stats", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 429


def test_each_burst_of_denials_is_logged_once_per_address(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="otel_flask_monitor"):
        for environ in (REMOTE, OTHER_REMOTE):
            client = remote_client(app, environ)
            for attempt in range(3):
                login(client, f"guess-{attempt}")
                client.get("/monitoring/health", headers={"Authorization": f"Bearer g{attempt}"})
            login(client)  # limited by now
    lines = [record.getMessage() for record in caplog.records if "wrong access token" in record.getMessage()]
    assert len(lines) == 2, lines
    assert "203.0.113.7" in lines[0]
    assert "sign-in form" in lines[0]
    assert "198.51.100.9" in lines[1]


def test_denial_log_is_bounded_however_many_addresses_fail(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    log = DenialLog(max_lines=20, period_seconds=60, clock=clock)
    with caplog.at_level("WARNING", logger="otel_flask_monitor"):
        for number in range(1000):
            log.burst_started(f"10.0.{number // 256}.{number % 256}", "bearer token")
        assert len(caplog.records) == 20
        clock.now += 61
        log.burst_started("10.9.9.9", "bearer token")
    assert len(caplog.records) == 21
    assert "980 burst(s) from other addresses were not logged" in caplog.records[-1].getMessage()


# --- sessions --------------------------------------------------------------------------------------------


def test_every_sign_in_gets_its_own_cookie(app: Flask) -> None:
    """#16: two sign-ins in the same second got identical cookies."""
    values = set()
    for _ in range(3):
        client = remote_client(app)
        assert login(client).status_code == 303
        values.add(session_cookie(client))
    assert len(values) == 3


def _cookie_from(app: Flask) -> str:
    client = remote_client(app)
    assert login(client).status_code == 303
    value = session_cookie(client)
    assert value is not None
    return value


def _opens_stats(app: Flask, cookie: str) -> bool:
    client = remote_client(app)
    client.set_cookie(SESSION_COOKIE, cookie, path="/monitoring")
    return client.get("/monitoring/stats").status_code == 200


def test_the_cookie_key_is_salted_per_deployment() -> None:
    """#16: one fixed salt for every deployment; now the key also depends on the deployment's secret."""
    first = monitored_app(access_token=TOKEN)
    first.secret_key = "deployment-one-secret"
    cookie = _cookie_from(first)
    replica = monitored_app(access_token=TOKEN)
    replica.secret_key = "deployment-one-secret"
    other = monitored_app(access_token=TOKEN)
    other.secret_key = "deployment-two-secret"
    unsalted = monitored_app(access_token=TOKEN)
    assert _opens_stats(replica, cookie)  # workers and replicas of one deployment share it
    assert not _opens_stats(other, cookie)  # same token, another deployment
    assert not _opens_stats(unsalted, cookie)
    # session_secret takes precedence over SECRET_KEY.
    explicit = monitored_app(access_token=TOKEN, session_secret="monitor-only-secret")
    explicit.secret_key = "deployment-one-secret"
    assert not _opens_stats(explicit, cookie)
    explicit_replica = monitored_app(access_token=TOKEN, session_secret="monitor-only-secret")
    assert _opens_stats(explicit_replica, _cookie_from(explicit))


def test_changing_the_secret_key_signs_everyone_out(app: Flask) -> None:
    app.secret_key = "before"
    client = remote_client(app)
    login(client)
    assert client.get("/monitoring/stats").status_code == 200
    app.secret_key = "after"  # read at each request: apps set it after the extensions
    assert client.get("/monitoring/stats").status_code == 401


def test_logout_revokes_the_session_in_this_process(client: FlaskClient, app: Flask) -> None:
    login(client)
    copied = session_cookie(client)
    assert copied is not None
    other_browser = remote_client(app, OTHER_REMOTE)
    other_browser.set_cookie(SESSION_COOKIE, copied, path="/monitoring")
    assert other_browser.get("/monitoring/stats").status_code == 200
    assert client.post("/monitoring/logout").status_code == 303
    # A copy of the cookie (another tab, a stolen one) no longer opens anything here.
    assert other_browser.get("/monitoring/stats").status_code == 401
    assert other_browser.get("/monitoring/dashboard", headers=BROWSER_ACCEPT).status_code == 303
    # Signing in again gives a fresh, valid session.
    login(client)
    assert client.get("/monitoring/stats").status_code == 200


def test_revoked_sessions_are_bounded_and_forgotten_when_expired() -> None:
    clock = FakeClock()
    revoked = RevokedSessions(max_entries=3, clock=clock)
    now = clock()
    issued = [Session(int(now) + 100 * (number + 1), f"{number:022d}") for number in range(5)]
    for session in issued:
        revoked.revoke(session)
    assert len([session for session in issued if session in revoked]) == 3
    assert issued[-1] in revoked  # the ones closest to expiry were dropped first
    assert issued[0] not in revoked
    clock.advance(1000)
    revoked.revoke(Session(int(now) + 2000, "x" * 22))
    assert [session for session in issued if session in revoked] == []


def test_a_cross_site_post_cannot_log_the_operator_out(client: FlaskClient) -> None:
    login(client)
    for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Origin": "https://evil.example"}, {"Origin": "null"}):
        assert client.post("/monitoring/logout", headers=headers).status_code == 403, headers
        assert client.get("/monitoring/stats").status_code == 200
    assert client.post("/monitoring/logout", headers={"Sec-Fetch-Site": "same-origin"}).status_code == 303
    assert client.get("/monitoring/stats").status_code == 401


# --- logout, and the token never leaks --------------------------------------------------------------------


def test_logout_clears_the_cookie(client: FlaskClient) -> None:
    login(client)
    assert client.get("/monitoring/stats").status_code == 200
    assert client.get("/monitoring/logout").status_code == 405  # a link or a navigation cannot log out
    assert client.get("/monitoring/stats").status_code == 200
    response = client.post("/monitoring/logout")
    assert response.status_code == 303
    assert response.headers["Location"] == "/monitoring/login"
    cookie = set_cookie_attributes(response)
    assert cookie[""] == ""
    assert cookie["max-age"] == "0"
    assert cookie["path"] == "/monitoring"
    assert session_cookie(client) is None
    assert client.get("/monitoring/stats").status_code == 401
    # Logging out without a session is harmless.
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
        client.post("/monitoring/logout"),
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
