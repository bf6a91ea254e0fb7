"""Links from a trace id to a trace viewer: ``trace_url_template`` checked once, filled in per id.

The template is the operator's; the ids are not (a worker file under ``multiprocess_dir`` can say
anything), so an id becomes part of a link only when it is a real trace id, and URL-encoded even
then. The page receives finished links and only ever sets them as an ``href``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Final, TypeGuard
from urllib.parse import quote, urlsplit

PLACEHOLDER: Final = "{trace_id}"
LINK_SCHEMES: Final = frozenset({"http", "https"})

_TRACE_ID: Final = re.compile(r"[0-9a-f]{32}")
_INVALID_TRACE_ID: Final = "0" * 32  # W3C Trace Context: all zeros is not a trace
# Whitespace and control characters: a browser drops or rewrites them in a URL, so the link the
# operator wrote would not be the link followed.
_NOT_IN_A_URL: Final = re.compile(r"[\x00-\x20\x7f]")


def check_trace_url_template(name: str, template: str, error: type[Exception] = ValueError) -> str:
    """``template`` when it makes safe links: http or https, a host, ``{trace_id}`` in path, query
    or fragment (string replacement, so a Grafana ``panes`` JSON keeps its other braces); else
    ``error`` naming the setting ``name``."""
    if PLACEHOLDER not in template:
        raise error(f"{name}: must contain {PLACEHOLDER}, got {template!r}")
    if _NOT_IN_A_URL.search(template):
        raise error(f"{name}: must not contain spaces or control characters, got {template!r}")
    try:
        parts = urlsplit(template)
    except ValueError as problem:
        raise error(f"{name}: is not a URL ({problem}): {template!r}") from None
    if parts.scheme.lower() not in LINK_SCHEMES or not parts.netloc:
        raise error(f"{name}: must be an http:// or https:// URL with a host, got {template!r}")
    if "{" in parts.netloc:
        raise error(f"{name}: {PLACEHOLDER} must not be in the host, got {template!r}")
    return template


def is_trace_id(value: object) -> TypeGuard[str]:
    """32 lowercase hex digits, not all zeros: how OpenTelemetry formats a valid trace id."""
    return isinstance(value, str) and _TRACE_ID.fullmatch(value) is not None and value != _INVALID_TRACE_ID


def trace_url(template: str | None, trace_id: object) -> str | None:
    """The link to ``trace_id``, or None without a template or a valid id."""
    if template is None or not is_trace_id(trace_id):
        return None
    return template.replace(PLACEHOLDER, quote(trace_id, safe=""))


def with_trace_urls(entries: Iterable[Mapping[str, Any]], template: str | None) -> list[dict[str, Any]]:
    """Copies of ``entries`` (each with a ``trace_id``) with ``trace_url`` next to it; the entries
    themselves are left alone (they may be a cached merge of other workers' files)."""
    return [{**entry, "trace_url": trace_url(template, entry.get("trace_id"))} for entry in entries]
