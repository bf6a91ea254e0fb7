"""Host and port as HTTP writes them (``host``, ``host:port``, ``[v6]``, ``[v6]:port``): one parser.

Used for the ``Host`` header (``server.address``, the loopback-Host check) and for peer addresses in
forwarding headers. Pure and forgiving: malformed input comes back as a host name that matches
nothing, never as an exception.
"""

from __future__ import annotations


def split_host_port(authority: str) -> tuple[str, str | None]:
    """``(host, port)`` of ``authority``; an IPv6 literal loses its brackets, and an unbracketed IPv6
    address (more than one colon) is all host. The port is None when there is none."""
    if authority.startswith("["):
        end = authority.find("]")
        if end == -1:
            return authority[1:], None
        rest = authority[end + 1 :]
        return authority[1:end], rest[1:] if rest.startswith(":") else None
    if authority.count(":") == 1:
        host, _, port = authority.partition(":")
        return host, port
    return authority, None


def host_name(authority: str) -> str:
    """The host of ``authority`` in lower case, without port, brackets or a trailing dot."""
    return split_host_port(authority.strip().lower())[0].rstrip(".")
