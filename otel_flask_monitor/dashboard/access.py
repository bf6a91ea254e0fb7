"""Who may open the monitoring routes.

Default: loopback clients only. A request that reached the app through a reverse proxy on the same
host looks local (``remote_addr`` is the proxy's), so a loopback request that carries forwarding
headers naming any non-loopback address is treated as remote. With ``ProxyFix`` applied,
``remote_addr`` is already the client's address and the same rule holds.

A valid bearer token (``access_token``) always opens the routes. A user ``access_check`` callable,
when configured, replaces the loopback default (so it can also require a login locally).
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass
from typing import Final

from flask import Request

from otel_flask_monitor.config import MonitorSettings

_FORWARDING_HEADERS: Final = ("X-Forwarded-For", "X-Real-IP")


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


def check_access(settings: MonitorSettings, request: Request) -> Denial | None:
    """None when the request may see monitoring data, else why not."""
    supplied = _bearer_token(request)
    token = settings.access_token
    if token and supplied and hmac.compare_digest(supplied.encode(), token.encode()):
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
