"""Who may open the monitoring routes.

Default: loopback clients only. A request that reached the app through a reverse proxy on the same
host looks local (``remote_addr`` is the proxy's), so a loopback request that carries forwarding
headers naming any non-loopback address is treated as remote. With ``ProxyFix`` applied,
``remote_addr`` is already the client's address and the same rule holds.

A valid bearer token (``access_token``) always opens the routes, and so does a valid login session
cookie (set by ``<prefix>/login`` for browsers, which cannot send the bearer header on a page load).
A user ``access_check`` callable, when configured, replaces the loopback default (so it can also
require a login locally).

The session cookie is never the token: it is ``<expiry>.<HMAC-SHA256(key, label|expiry)>`` where the
key is derived from the token with PBKDF2, so changing the token invalidates every cookie, a cookie
cannot be extended or forged without the token, and a stolen cookie is an expensive start for an
offline guess of the token.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import ipaddress
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from flask import Request

from otel_flask_monitor.config import MonitorSettings

_FORWARDING_HEADERS: Final = ("X-Forwarded-For", "X-Real-IP")

SESSION_COOKIE: Final = "otel_flask_monitor_session"
_SESSION_LABEL: Final = b"otel-flask-monitor dashboard session v1|"
_SESSION_KEY_SALT: Final = b"otel-flask-monitor/dashboard-session-key/v1"
_SESSION_KEY_ITERATIONS: Final = 200_000
_MAX_EXPIRY_DIGITS: Final = 12

LOGIN_MAX_FAILURES: Final = 5
"""Failed logins one client address may make per ``LOGIN_FAILURE_PERIOD_SECONDS`` (per process)."""
LOGIN_FAILURE_PERIOD_SECONDS: Final = 60.0
LOGIN_MAX_TRACKED_CLIENTS: Final = 10_000


@dataclass(frozen=True, slots=True)
class Denial:
    status: int
    message: str
    challenge: bool
    """Send ``WWW-Authenticate: Bearer`` (a token would open the route)."""


def is_loopback(address: str | None) -> bool:
    if not address:
        return False
    text = address.strip().strip('"')
    if text.startswith("["):  # Forwarded: for="[::1]:8080"
        text = text[1:].split("]", 1)[0]
    elif text.count(":") == 1:  # IPv4 with a port
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text.split("%", 1)[0]).is_loopback
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


def is_local_request(request: Request) -> bool:
    """Loopback peer, and no forwarding header naming anyone else."""
    return is_loopback(request.remote_addr) and all(
        is_loopback(address) for address in _forwarded_addresses(request)
    )


def _bearer_token(request: Request) -> str | None:
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, credentials = header.strip().partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else ""


def token_matches(supplied: str, token: str) -> bool:
    """Constant-time comparison of a supplied secret with the configured token."""
    return hmac.compare_digest(supplied.encode(), token.encode())


def _now() -> float:
    """Wall clock for session expiry (a function so that tests can move time)."""
    return time.time()


@functools.lru_cache(maxsize=8)
def _session_key(token: str) -> bytes:
    # Slow once per token and process, so that a leaked cookie is a poor oracle for guessing a weak token.
    return hashlib.pbkdf2_hmac("sha256", token.encode(), _SESSION_KEY_SALT, _SESSION_KEY_ITERATIONS)


def _session_signature(token: str, expires: int) -> str:
    mac = hmac.new(_session_key(token), _SESSION_LABEL + str(expires).encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode("ascii")


def issue_session(token: str, max_age_seconds: int) -> str:
    """A session cookie value valid for ``max_age_seconds``: expiry and signature, never the token."""
    expires = int(_now()) + max_age_seconds
    return f"{expires}.{_session_signature(token, expires)}"


def has_valid_session(settings: MonitorSettings, request: Request) -> bool:
    """The request carries a login cookie signed with the current token and not expired."""
    token = settings.access_token
    value = request.cookies.get(SESSION_COOKIE)
    if not token or not value:
        return False
    expires_text, dot, signature = value.partition(".")
    if not dot or not expires_text.isdigit() or not expires_text.isascii():
        return False
    if len(expires_text) > _MAX_EXPIRY_DIGITS:
        return False
    expires = int(expires_text)
    if not hmac.compare_digest(signature.encode(), _session_signature(token, expires).encode()):
        return False
    now = _now()
    # The upper bound refuses cookies issued under a longer lifetime once the setting is lowered.
    return now < expires <= now + settings.login_session_seconds


def client_address(request: Request) -> str:
    """The address failed logins are counted against.

    Behind a reverse proxy on the same host every peer is loopback: use the last forwarded address
    (the one that proxy appended, which the client cannot choose) instead.
    """
    peer = request.remote_addr or "unknown"
    if is_loopback(peer):
        forwarded = _forwarded_addresses(request)
        if forwarded:
            return forwarded[-1]
    return peer


class LoginRateLimiter:
    """At most ``max_failures`` failed logins per client address per ``period_seconds``.

    In memory and per process (each gunicorn worker counts for itself); at most ``max_clients``
    addresses are tracked, the least recently failing ones are forgotten first.
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
        # address -> monotonic times of its recent failures, oldest first; least recently failing first.
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

    def failure(self, client: str) -> None:
        with self._lock:
            now = self._clock()
            times = self._recent(client, now)
            times.append(now)
            self._failures[client] = times[-self._max_failures :]
            self._failures.move_to_end(client)
            while len(self._failures) > self._max_clients:
                self._failures.popitem(last=False)

    def success(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)

    def tracked_clients(self) -> int:
        with self._lock:
            return len(self._failures)


def check_access(settings: MonitorSettings, request: Request) -> Denial | None:
    """None when the request may see monitoring data, else why not."""
    supplied = _bearer_token(request)
    token = settings.access_token
    if token and ((supplied and token_matches(supplied, token)) or has_valid_session(settings, request)):
        return None
    if settings.access_check is not None:
        if settings.access_check(request):
            return None
    elif is_local_request(request):
        return None
    if supplied is not None:
        return Denial(401, "invalid credentials", challenge=bool(token))
    if token:
        return Denial(401, "authentication required", challenge=True)
    return Denial(403, "forbidden", challenge=False)
