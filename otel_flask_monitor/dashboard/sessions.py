"""Login sessions for the monitoring routes: the signed, expiring cookie a browser gets for the token.

The cookie is never the token: it is ``<expiry>.<nonce>.<HMAC-SHA256(key, label|expiry|nonce)>``
where the nonce is fresh for every sign-in and the key is derived with PBKDF2 from the token and a
per-deployment salt (``session_secret``, else the app's ``SECRET_KEY``). Changing the token or that
secret invalidates every cookie; a cookie cannot be extended or forged without both; a stolen cookie
is an expensive start for an offline guess of the token, and no table computed for one deployment
serves another. Logging out revokes the cookie in the process that answered (bounded memory).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from flask import current_app

from otel_flask_monitor.config import MonitorSettings

SESSION_COOKIE: Final = "otel_flask_monitor_session"
_SESSION_LABEL: Final = b"otel-flask-monitor dashboard session v2|"
_SESSION_SALT_LABEL: Final = b"otel-flask-monitor/dashboard-session-salt/v2|"
_SESSION_KEY_ITERATIONS: Final = 200_000
_MAX_EXPIRY_DIGITS: Final = 12
_NONCE_BYTES: Final = 16
_NONCE_PATTERN: Final = re.compile(r"[A-Za-z0-9_-]{22}")
_MAX_REVOKED_SESSIONS: Final = 10_000


def deployment_secret(settings: MonitorSettings) -> bytes:
    """What the deployment owns besides the token: ``session_secret``, else the app's ``SECRET_KEY``.

    Read at each use: apps often load ``SECRET_KEY`` after the extensions are set up.
    """
    if settings.session_secret:
        return settings.session_secret.encode()
    secret = current_app.secret_key
    if isinstance(secret, str):
        return secret.encode()
    return bytes(secret) if secret else b""


@functools.lru_cache(maxsize=8)
def _session_key(token: str, secret: bytes) -> bytes:
    # Slow once per (token, secret) and process, so that a leaked cookie is a poor oracle for guessing
    # a weak token; the salt makes a table precomputed for one deployment useless for another.
    salt = hashlib.sha256(_SESSION_SALT_LABEL + secret).digest()
    return hashlib.pbkdf2_hmac("sha256", token.encode(), salt, _SESSION_KEY_ITERATIONS)


def _session_signature(key: bytes, expires: int, nonce: str) -> str:
    message = _SESSION_LABEL + f"{expires}.{nonce}".encode()
    mac = hmac.new(key, message, hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode("ascii")


def issue_session(token: str, max_age_seconds: int, secret: bytes = b"", *, now: float) -> str:
    """A session cookie value valid for ``max_age_seconds`` from ``now`` (Unix seconds): expiry, nonce
    and signature, never the token."""
    expires = int(now) + max_age_seconds
    nonce = secrets.token_urlsafe(_NONCE_BYTES)
    return f"{expires}.{nonce}.{_session_signature(_session_key(token, secret), expires, nonce)}"


@dataclass(frozen=True, slots=True)
class Session:
    expires: int
    nonce: str


def verified_session(
    token: str, secret: bytes, value: str, lifetime_seconds: int, *, now: float
) -> Session | None:
    expires_text, nonce, signature = [*value.split(".", 2), "", ""][:3]
    if not (expires_text.isascii() and expires_text.isdigit()) or len(expires_text) > _MAX_EXPIRY_DIGITS:
        return None
    if not _NONCE_PATTERN.fullmatch(nonce) or not signature:
        return None
    expires = int(expires_text)
    expected = _session_signature(_session_key(token, secret), expires, nonce)
    if not hmac.compare_digest(signature.encode(), expected.encode()):
        return None
    # The upper bound refuses cookies issued under a longer lifetime once the setting is lowered.
    if not now < expires <= now + lifetime_seconds:
        return None
    return Session(expires, nonce)


class RevokedSessions:
    """Nonces of logged-out sessions until they expire; at most ``max_entries`` (per process).

    Only a signed-in browser can add one (logout needs a valid cookie), so the bound is never reached
    by an attacker without the token; if it is, the revocations closest to expiry are dropped first.
    """

    def __init__(
        self, max_entries: int = _MAX_REVOKED_SESSIONS, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._expiry_by_nonce: dict[str, int] = {}

    def revoke(self, session: Session) -> None:
        with self._lock:
            now = self._clock()
            for nonce in [n for n, expires in self._expiry_by_nonce.items() if expires <= now]:
                del self._expiry_by_nonce[nonce]
            self._expiry_by_nonce[session.nonce] = session.expires
            while len(self._expiry_by_nonce) > self._max_entries:
                soonest = min(self._expiry_by_nonce, key=self._expiry_by_nonce.__getitem__)
                del self._expiry_by_nonce[soonest]

    def __contains__(self, session: Session) -> bool:
        with self._lock:
            return session.nonce in self._expiry_by_nonce
