"""What never leaves the process: secret header and query parameter values, oversized strings.

Importable without Flask; every function is pure.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, quote

REDACTED = "[REDACTED]"
TRUNCATION_MARK = "..."


class Redactor:
    """Compiled redaction rules for one monitor's settings."""

    __slots__ = ("_header_names", "_query_pattern")

    def __init__(self, header_names: Iterable[str], query_param_patterns: Iterable[str]) -> None:
        self._header_names = frozenset(name.lower() for name in header_names)
        patterns = list(query_param_patterns)
        self._query_pattern = (
            re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE) if patterns else None
        )

    def is_secret_header(self, name: str) -> bool:
        return name.lower() in self._header_names

    def header_value(self, name: str, value: str) -> str:
        return REDACTED if self.is_secret_header(name) else value

    def is_secret_query_param(self, name: str) -> bool:
        return self._query_pattern is not None and self._query_pattern.search(name) is not None

    def query(self, raw_query: bytes | str) -> str:
        """The query string with secret values replaced, re-encoded; never raises on bad input."""
        text = raw_query.decode("latin-1") if isinstance(raw_query, bytes) else raw_query
        if not text:
            return ""
        pairs = parse_qsl(text, keep_blank_values=True, errors="replace")
        return "&".join(
            f"{quote(name, safe='[]')}={REDACTED if self.is_secret_query_param(name) else quote(value)}"
            for name, value in pairs
        )


def truncate(value: str, limit: int) -> str:
    """Cut ``value`` to at most ``limit`` characters, marking the cut."""
    if len(value) <= limit:
        return value
    keep = max(limit - len(TRUNCATION_MARK), 0)
    return value[:keep] + TRUNCATION_MARK


def truncate_middle(value: str, limit: int) -> str:
    """Keep the head and the tail of a long text (a traceback's most useful parts) within ``limit``."""
    if len(value) <= limit:
        return value
    marker = f"\n... [{len(value) - limit} characters cut] ...\n"
    room = limit - len(marker)
    if room <= 0:
        return truncate(value, limit)
    head = room // 3
    tail = room - head
    return value[:head] + marker + (value[-tail:] if tail else "")
