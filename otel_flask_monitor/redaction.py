"""What never leaves the process: secret values, credentials in endpoint URLs, oversized strings.

Secret values are those of headers and query parameters the settings name. Importable without Flask,
and pure. Sizes are UTF-8 bytes, as the OTLP encoding and Loki count them:
a limit of 1024 keeps 1024 ASCII characters or 256 four-byte ones, and a cut never splits a character.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final
from urllib.parse import quote, unquote_plus

from opentelemetry.util.types import AttributeValue

REDACTED = "[REDACTED]"
TRUNCATION_MARK = "..."

DEFAULT_REDACTED_HEADERS: Final = (
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "api-key",
    "x-auth-token",
    "x-access-token",
    "x-csrf-token",
    "x-xsrf-token",
    "x-amz-security-token",
)

# Matched with re.search, case-insensitively, against each decoded query parameter name; over-redaction
# (`key$` matches `monkey`, `auth` matches `author`) is the safe failure. Where each comes from is in
# docs/configuration.md ("What is redacted by default").
DEFAULT_REDACTED_QUERY_PARAMS: Final = (
    # Apitally's default query masks (apitally-py, apitally/client/request_logging.py).
    "auth",
    "api[-_]?key",
    "secret",
    "token",
    "passw",
    "pwd",
    # Sentry's default denylist (sentry-python, sentry_sdk/scrubber.py, from Relay's defaults).
    "credential",
    "key$",
    "session",
    "sessid",
    "^sid$",
    "csrf",
    "xsrf",
    # OWASP Logging Cheat Sheet, "Data to exclude": access tokens, session identifiers, passwords.
    "^access$",
    "bearer",
    "jwt",
    "otp",
    "^pass$",
    "passphrase",
    # Pre-signed URLs: AWS X-Amz-Signature, Azure SAS `sig`.
    "signature",
    "^sig$",
    # OAuth 2.0 redirects (RFC 6749 4.1.2, 10.5, 10.12): the authorization code and state, and PKCE.
    "^code$",
    "^state$",
    "verifier",
)

# A query string is parsed only this many bytes per byte of the limit its re-encoded (ASCII) form is
# cut to: enough to fill the limit whatever the client sent (a three-byte escape may come out as one
# byte), and a 60 KB query costs what a 3 KB one does.
_QUERY_INPUT_BYTES_PER_BYTE: Final = 3
# `;` separates parameters for some frameworks and proxies (and for HTML 4); treating it as one here
# means a secret written after it is found whichever way the app reads it.
_PARAMETER_SEPARATOR: Final = re.compile(r"([&;])")
_HEADER_ATTRIBUTE_PREFIXES: Final = ("http.request.header.", "http.response.header.")
INSTRUMENTATION_HEADER_VARIABLES: Final = (
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST",
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE",
)
"""The instrumentation's own header capture."""


def _header_key(name: str) -> str:
    # The instrumentation names attributes with '_' for '-' (http.request.header.x_api_key).
    return name.lower().replace("_", "-")


class Redactor:
    """Compiled redaction rules for one monitor's settings."""

    __slots__ = ("_header_names", "_query_pattern", "instrumentation_captures_headers")

    def __init__(
        self,
        header_names: Iterable[str],
        query_param_patterns: Iterable[str],
        *,
        instrumentation_captures_headers: bool = False,
    ) -> None:
        self.instrumentation_captures_headers = instrumentation_captures_headers
        """Whether spans may carry headers the instrumentation captured (see :func:`redact_span_headers`)."""
        self._header_names = frozenset(_header_key(name) for name in header_names)
        patterns = list(query_param_patterns)
        self._query_pattern = (
            re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE) if patterns else None
        )

    def is_secret_header(self, name: str) -> bool:
        return _header_key(name) in self._header_names

    def header_value(self, name: str, value: str) -> str:
        return REDACTED if self.is_secret_header(name) else value

    def header_attributes(self, attributes: Mapping[str, Any]) -> dict[str, AttributeValue]:
        """Replacements for the ``http.request.header.*``/``http.response.header.*`` attributes of
        secret headers among ``attributes``, whoever captured them (values are strings or sequences
        of strings; a sequence keeps its length)."""
        replaced: dict[str, AttributeValue] = {}
        for key, value in attributes.items():
            for prefix in _HEADER_ATTRIBUTE_PREFIXES:
                if key.startswith(prefix) and self.is_secret_header(key[len(prefix) :]):
                    replaced[key] = REDACTED if isinstance(value, str) else tuple(REDACTED for _ in value)
        return replaced

    def is_secret_query_param(self, name: str) -> bool:
        return self._query_pattern is not None and self._query_pattern.search(name) is not None

    def query(self, raw_query: bytes | str, limit: int | None = None) -> str:
        """The query string with secret values replaced, re-encoded (ASCII), at most ``limit`` bytes.

        Only the first ``3 x limit`` bytes are parsed (cut at a UTF-8 character boundary): the work
        is bounded by the limit, not by what the client sent. Never raises on bad input.
        """
        cut = False
        if isinstance(raw_query, bytes):
            if limit is not None and len(raw_query) > limit * _QUERY_INPUT_BYTES_PER_BYTE:
                raw_query, cut = _utf8_prefix(raw_query, limit * _QUERY_INPUT_BYTES_PER_BYTE), True
            text = raw_query.decode("utf-8", errors="replace")
        else:
            text = raw_query
            if limit is not None and len(text) > limit * _QUERY_INPUT_BYTES_PER_BYTE:
                text, cut = text[: limit * _QUERY_INPUT_BYTES_PER_BYTE], True
        if not text:
            return ""
        redacted = self._redacted(text)
        if limit is None:
            return redacted
        if cut and len(redacted) <= limit - len(TRUNCATION_MARK):
            return redacted + TRUNCATION_MARK
        return truncate(redacted, limit)

    def _redacted(self, text: str) -> str:
        pieces: list[str] = []
        separator = ""
        for index, part in enumerate(_PARAMETER_SEPARATOR.split(text)):
            if index % 2:
                separator = part
                continue
            if not part:
                continue  # empty parameters ("a=1&&b=2") are dropped, as parse_qsl drops them
            raw_name, _, raw_value = part.partition("=")
            name = unquote_plus(raw_name, errors="replace")
            value = (
                REDACTED
                if self.is_secret_query_param(name)
                else quote(unquote_plus(raw_value, errors="replace"))
            )
            pieces.append(f"{separator if pieces else ''}{quote(name, safe='[]')}={value}")
        return "".join(pieces)


def _utf8_prefix(data: bytes, size: int) -> bytes:
    """``data`` cut to at most ``size`` bytes without splitting a UTF-8 sequence."""
    if size >= len(data):
        return data
    end = size
    while end > 0 and data[end] & 0xC0 == 0x80:  # a continuation byte: the character started earlier
        end -= 1
    return data[:end]


def _utf8_suffix(data: bytes, size: int) -> bytes:
    """The last at most ``size`` bytes of ``data``, starting on a character."""
    if size <= 0:
        return b""
    start = max(len(data) - size, 0)
    while start < len(data) and data[start] & 0xC0 == 0x80:
        start += 1
    return data[start:]


def instrumentation_captures_headers(environ: Mapping[str, str] = os.environ) -> bool:
    """The user asked the Flask instrumentation to copy request or response headers onto spans."""
    return any(environ.get(name) for name in INSTRUMENTATION_HEADER_VARIABLES)


def without_userinfo(url: str) -> str:
    """``url`` without the ``user:password@`` part of its authority (also without a scheme, as gRPC
    endpoints are often written), for every place an endpoint is shown or logged."""
    scheme_end = url.find("://")
    start = scheme_end + 3 if scheme_end != -1 else 0
    end = len(url)
    for delimiter in "/?#":
        found = url.find(delimiter, start)
        if found != -1:
            end = min(end, found)
    at = url.rfind("@", start, end)
    return url if at == -1 else url[:start] + url[at + 1 :]


def utf8_length(value: str) -> int:
    """Bytes ``value`` takes in UTF-8 (a lone surrogate counts the three bytes it would take)."""
    if value.isascii():  # a flag of the string object: no scan
        return len(value)
    return len(_utf8(value))


def _utf8(value: str) -> bytes:
    return value.encode("utf-8", "surrogatepass")


def _text(data: bytes) -> str:
    return data.decode("utf-8", "surrogatepass")


def truncate(value: str, limit: int) -> str:
    """Cut ``value`` to at most ``limit`` UTF-8 bytes, marking the cut; never splits a character."""
    if value.isascii():
        if len(value) <= limit:
            return value
        return value[: max(limit - len(TRUNCATION_MARK), 0)] + TRUNCATION_MARK
    if len(value) * 4 <= limit:  # even four bytes a character fit
        return value
    data = _utf8(value)
    if len(data) <= limit:
        return value
    return _text(_utf8_prefix(data, max(limit - len(TRUNCATION_MARK), 0))) + TRUNCATION_MARK


def truncate_middle(value: str, limit: int) -> str:
    """Keep the head and the tail of a long text (a traceback's most useful parts) within ``limit``
    UTF-8 bytes, around a marker saying how many bytes were cut."""
    data = value.encode("ascii") if value.isascii() else _utf8(value)
    if len(data) <= limit:
        return value
    marker = f"\n... [{len(data) - limit} bytes cut] ...\n"
    room = limit - len(marker)
    if room <= 0:
        return truncate(value, limit)
    head = _utf8_prefix(data, room // 3)
    tail = _utf8_suffix(data, room - len(head))
    return _text(head) + marker + _text(tail)
