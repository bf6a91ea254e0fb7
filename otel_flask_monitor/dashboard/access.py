"""Who may open the monitoring routes (the threat model is in docs/dashboard.md).

Default: loopback clients only, asking for the app by a loopback name. The peer must be a
loopback address, no forwarding header may name anyone else (a reverse proxy on the same host makes
every peer look local), and the Host header must be ``localhost``, a loopback IP literal or one of
``loopback_hosts``: a web page whose own name an attacker pointed at 127.0.0.1 (DNS rebinding) is
same-origin with the app in the browser, but its requests carry the attacker's name. With
``ProxyFix`` applied, ``remote_addr`` is already the client's address and the same rules hold.

A valid bearer token (``access_token``) always opens the routes, and so does a valid login session
cookie (set by ``<prefix>/login`` for browsers, which cannot send the bearer header on a page load).
A user ``access_check`` callable, when configured, replaces the loopback default.

Wrong tokens, from the sign-in form or in an ``Authorization: Bearer`` header, count against one
limit per client address (:class:`LoginRateLimiter`), keyed on the peer address only, which the
client cannot choose (``ProxyFix`` rewrites it when the operator configured one); every burst of
failures from an address is logged once (:class:`DenialLog`).

The session cookie is never the token (:mod:`~otel_flask_monitor.dashboard.sessions`).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Final

from flask import Request

from otel_flask_monitor.config import MonitorSettings
from otel_flask_monitor.dashboard.sessions import (
    SESSION_COOKIE,
    RevokedSessions,
    Session,
    deployment_secret,
    issue_session,
    verified_session,
)
from otel_flask_monitor.hosts import host_name, split_host_port

_logger = logging.getLogger("otel_flask_monitor")

_FORWARDING_HEADERS: Final = ("X-Forwarded-For", "X-Real-IP")

LOGIN_MAX_FAILURES: Final = 5
"""Wrong tokens one client address may send per ``LOGIN_FAILURE_PERIOD_SECONDS`` (per process)."""
LOGIN_FAILURE_PERIOD_SECONDS: Final = 60.0
LOGIN_MAX_TRACKED_CLIENTS: Final = 10_000
DENIAL_LOG_LINES_PER_PERIOD: Final = 20
"""At most this many denial lines per ``LOGIN_FAILURE_PERIOD_SECONDS``, whatever the number of addresses."""


@dataclass(frozen=True, slots=True)
class Denial:
    status: int
    message: str
    challenge: bool
    """Send ``WWW-Authenticate: Bearer`` (a token would open the route)."""
    retry_after: int | None = None


# --- who is local -----------------------------------------------------------------------------------------


def is_loopback(address: str | None) -> bool:
    """A loopback IP address, with or without a port (``Forwarded: for="[::1]:8080"``)."""
    if not address:
        return False
    host, _ = split_host_port(address.strip().strip('"'))
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _forwarded_addresses(request: Request) -> list[str]:
    addresses: list[str] = []
    for header in _FORWARDING_HEADERS:
        for value in request.headers.getlist(header):
            addresses.extend(part.strip() for part in value.split(",") if part.strip())
    for value in request.headers.getlist("Forwarded"):
        for element in value.split(","):
            for pair in element.split(";"):
                name, _, address = pair.strip().partition("=")
                if name.strip().lower() == "for":
                    addresses.append(address.strip())
    return addresses


def is_loopback_host(host_header: str | None, extra_names: Collection[str] = ()) -> bool:
    """The Host header names this machine's loopback interface (or one of ``extra_names``).

    ``localhost`` and its subdomains (browsers resolve them to loopback themselves), loopback IP
    literals with any port, and the names configured in ``loopback_hosts``. A request without a
    Host header (HTTP/1.0) passes: browsers always send one, so it is no rebinding vector.
    """
    if host_header is None:
        return True
    name = host_name(host_header)
    if name == "localhost" or name.endswith(".localhost") or name in extra_names:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def is_local_request(request: Request, extra_host_names: Collection[str] = ()) -> bool:
    """Loopback peer, no forwarding header naming anyone else, and a loopback Host."""
    return (
        is_loopback(request.remote_addr)
        and all(is_loopback(address) for address in _forwarded_addresses(request))
        and is_loopback_host(request.environ.get("HTTP_HOST"), extra_host_names)
    )


# --- tokens and failed attempts ---------------------------------------------------------------------------


def _bearer_token(request: Request) -> str | None:
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, credentials = header.strip().partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else ""


def token_matches(supplied: str, token: str) -> bool:
    """Constant-time comparison of a supplied secret with the configured token."""
    return hmac.compare_digest(supplied.encode(), token.encode())


def client_address(request: Request) -> str:
    """The address wrong tokens are counted against: the peer of the connection.

    Never a forwarding header: a client adds any it likes. Behind a reverse proxy the peer is the
    proxy, so all its clients share one budget until ``ProxyFix`` makes ``remote_addr`` the client's
    own address (docs/dashboard.md, "Behind a reverse proxy").
    """
    return request.remote_addr or "unknown"


def limiter_key(address: str) -> str:
    """IPv6 clients are counted per /64 (one subscriber's prefix), or one host could try 2**64 times."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if parsed.version == 6 and not parsed.is_loopback and parsed.ipv4_mapped is None:
        return str(ipaddress.ip_network((parsed, 64), strict=False))
    return address


class LoginRateLimiter:
    """At most ``max_failures`` failed attempts per client key per ``period_seconds``.

    In memory and per process (each gunicorn worker counts for itself); at most ``max_clients``
    keys are tracked, the least recently failing ones are forgotten first.
    """

    def __init__(
        self,
        max_failures: int = LOGIN_MAX_FAILURES,
        period_seconds: float = LOGIN_FAILURE_PERIOD_SECONDS,
        max_clients: int = LOGIN_MAX_TRACKED_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_failures = max_failures
        self._period = period_seconds
        self._max_clients = max_clients
        self._clock = clock
        self._lock = threading.Lock()
        # key -> monotonic times of its recent failures, oldest first; least recently failing first.
        self._failures: OrderedDict[str, list[float]] = OrderedDict()

    def _recent(self, client: str, now: float) -> list[float]:
        times = [t for t in self._failures.get(client, ()) if t > now - self._period]
        if times:
            self._failures[client] = times
        else:
            self._failures.pop(client, None)
        return times

    def retry_after(self, client: str) -> int | None:
        """Seconds until ``client`` may try again, or None when it may try now."""
        with self._lock:
            now = self._clock()
            times = self._recent(client, now)
            if len(times) < self._max_failures:
                return None
            return max(1, int(times[0] + self._period - now + 0.999))

    def failure(self, client: str) -> bool:
        """Count a failure; True when it starts a burst (no other failure within the period)."""
        with self._lock:
            now = self._clock()
            times = self._recent(client, now)
            starts_burst = not times
            times.append(now)
            self._failures[client] = times[-self._max_failures :]
            self._failures.move_to_end(client)
            while len(self._failures) > self._max_clients:
                self._failures.popitem(last=False)
            return starts_burst

    def success(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)

    def tracked_clients(self) -> int:
        with self._lock:
            return len(self._failures)


class DenialLog:
    """One warning per burst of failed attempts from one address, and at most ``max_lines`` warnings
    per ``period_seconds`` in all: an attacker with many addresses cannot flood the log either. The
    lines left out are counted in the next one written."""

    def __init__(
        self,
        max_lines: int = DENIAL_LOG_LINES_PER_PERIOD,
        period_seconds: float = LOGIN_FAILURE_PERIOD_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_lines = max_lines
        self._period = period_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._window_start = float("-inf")
        self._lines_in_window = 0
        self._left_out = 0

    def burst_started(self, address: str, via: str) -> None:
        with self._lock:
            now = self._clock()
            if now - self._window_start >= self._period:
                self._window_start, self._lines_in_window = now, 0
            if self._lines_in_window >= self._max_lines:
                self._left_out += 1
                return
            self._lines_in_window += 1
            left_out, self._left_out = self._left_out, 0
        _logger.warning(
            "otel_flask_monitor: wrong access token for the monitoring routes from %s (%s); further "
            "failures from this address are not logged until it has been quiet for %d s, and after %d "
            "it gets 429%s",
            address,
            via,
            self._period,
            LOGIN_MAX_FAILURES,
            f" ({left_out} burst(s) from other addresses were not logged)" if left_out else "",
        )


class CredentialGuard:
    """The one budget for wrong tokens, shared by the sign-in form and the bearer header."""

    def __init__(self, limiter: LoginRateLimiter | None = None, log: DenialLog | None = None) -> None:
        self.limiter = limiter or LoginRateLimiter()
        self.log = log or DenialLog()

    def retry_after(self, request: Request) -> int | None:
        return self.limiter.retry_after(limiter_key(client_address(request)))

    def failure(self, request: Request, via: str) -> None:
        address = client_address(request)
        if self.limiter.failure(limiter_key(address)):
            self.log.burst_started(address, via)

    def success(self, request: Request) -> None:
        self.limiter.success(limiter_key(client_address(request)))


class DashboardAccess:
    """Per-app access state: the wrong-token budget and the revoked sessions."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        """``clock``: Unix seconds, for session expiry."""
        self.credentials = CredentialGuard()
        self.revoked = RevokedSessions(clock=clock)
        self._clock = clock

    def session(self, settings: MonitorSettings, request: Request) -> Session | None:
        """The request's login session: signed with the current token and secret, live, not revoked."""
        token = settings.access_token
        value = request.cookies.get(SESSION_COOKIE)
        if not token or not value:
            return None
        session = verified_session(
            token, deployment_secret(settings), value, settings.login_session_seconds, now=self._clock()
        )
        if session is None or session in self.revoked:
            return None
        return session

    def issue(self, settings: MonitorSettings) -> str:
        token = settings.access_token
        if not token:
            raise RuntimeError("no access_token configured")
        return issue_session(
            token, settings.login_session_seconds, deployment_secret(settings), now=self._clock()
        )

    def check(self, settings: MonitorSettings, request: Request) -> Denial | None:
        """None when the request may see monitoring data, else why not."""
        token = settings.access_token
        supplied = _bearer_token(request)
        limited = self.credentials.retry_after(request) if token and supplied else None
        if token and supplied and limited is None and token_matches(supplied, token):
            return None
        if self._allowed_without_token(settings, request):
            return None
        return self._denial(settings, request, supplied, limited)

    def _allowed_without_token(self, settings: MonitorSettings, request: Request) -> bool:
        if settings.access_token and self.session(settings, request) is not None:
            return True
        if settings.access_check is not None:
            return bool(settings.access_check(request))
        return is_local_request(request, settings.loopback_hosts)

    def _denial(
        self, settings: MonitorSettings, request: Request, supplied: str | None, limited: int | None
    ) -> Denial:
        token = settings.access_token
        if limited is not None:
            return Denial(429, "too many failed attempts", challenge=False, retry_after=limited)
        # Counted only once denied, so that clients let in anyway never use up the budget.
        if token and supplied:
            self.credentials.failure(request, "bearer token")
        if supplied is not None:
            return Denial(401, "invalid credentials", challenge=bool(token))
        if token:
            return Denial(401, "authentication required", challenge=True)
        return Denial(403, "forbidden", challenge=False)
