"""Protobuf wire format for the OTLP encoder: varints, fields, AnyValue/KeyValue, and bounded caches.

The pieces :mod:`otel_flask_monitor.otlp_encoding` writes its messages with (proto3, as
``opentelemetry/proto/common/v1/common.proto`` defines them), and the caches that let it encode what
repeats across batches once. Anything these cannot write exactly as the SDK encoder would raises
:class:`UnsupportedValueError`, and the batch goes to the SDK encoder instead.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final

from opentelemetry.attributes import BoundedAttributes


class UnsupportedValueError(Exception):
    """Something the fast encoder leaves to the SDK encoder (raised inside, never escapes ``encode_*``)."""


# ---------------------------------------------------------------------------------------------------
# Wire-format primitives

pack_fixed64: Final = struct.Struct("<Q").pack
pack_fixed32: Final = struct.Struct("<I").pack
pack_double: Final = struct.Struct("<d").pack
_ONE_BYTE_VARINTS: Final = tuple(bytes((n,)) for n in range(128))
UINT32_END: Final = 1 << 32
UINT64_END: Final = 1 << 64
INT64_START: Final = -(1 << 63)
INT64_END: Final = 1 << 63
INT32_END: Final = 1 << 31
_MAX_CACHED_STR_LENGTH: Final = 256  # longer values are rarely repeated, and would cost memory


def varint(value: int) -> bytes:
    """Unsigned base-128 varint; callers guarantee 0 <= value < 2**64."""
    if value < 0x80:
        return _ONE_BYTE_VARINTS[value]
    if value < 0x4000:
        return bytes(((value & 0x7F) | 0x80, value >> 7))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def delimited(payload: bytes) -> bytes:
    """Length prefix + payload: the body of a length-delimited field after its tag."""
    return varint(len(payload)) + payload


def int64(value: int) -> bytes:
    if INT64_START <= value < INT64_END:
        return varint(value if value >= 0 else value + UINT64_END)
    raise UnsupportedValueError("int outside int64")  # the SDK logs and drops such an attribute


def uint32_field(tag: bytes, value: int) -> bytes:
    """A uint32 field (dropped counts): absent when zero, as proto3 writes it."""
    if type(value) is not int or not 0 <= value < UINT32_END:
        raise UnsupportedValueError("not a uint32")
    return tag + varint(value) if value else b""


def fixed64_field(tag: bytes, value: int | None) -> bytes:
    """A fixed64 timestamp: absent when None (the SDK's "unset") or zero."""
    if value is None:
        return b""
    if type(value) is not int:
        raise UnsupportedValueError("timestamp is not an int")
    return tag + pack_fixed64(value) if value else b""  # struct.error outside uint64


def string_field(tag: bytes, value: str | None) -> bytes:
    """A string field: absent when None (the SDK's "unset") or empty."""
    if value is None:
        return b""
    if type(value) is not str:
        raise UnsupportedValueError("not a str")
    return tag + delimited(value.encode()) if value else b""  # UnicodeEncodeError for surrogates


class StringFieldCache:
    """Encoded string fields whose values repeat (span names, severity texts, event names)."""

    __slots__ = ("_entries", "_tag")

    def __init__(self, tag: bytes) -> None:
        self._tag = tag
        self._entries: dict[str, bytes] = {}

    def field(self, value: str | None) -> bytes:
        if type(value) is not str:
            return string_field(self._tag, value)
        encoded = self._entries.get(value)
        if encoded is None:
            encoded = string_field(self._tag, value)
            if len(value) <= _MAX_CACHED_STR_LENGTH:
                if len(self._entries) >= 256:
                    self._entries.clear()
                self._entries[value] = encoded
        return encoded


# ---------------------------------------------------------------------------------------------------
# AnyValue and attributes
#
# AnyValue fields (opentelemetry/proto/common/v1/common.proto): string_value 1, bool_value 2,
# int_value 3, double_value 4, array_value 5, kvlist_value 6, bytes_value 7; all in one oneof, so a
# zero, empty or false value is still written. KeyValue: key 1, value 2 (always written, an empty
# AnyValue for None, as the SDK's ``_encode_key_value`` sets it).

_TRUE: Final = b"\x10\x01"
_FALSE: Final = b"\x10\x00"


def any_value(value: Any) -> bytes:  # noqa: PLR0911 - one return per AnyValue kind, as in the SDK
    """The AnyValue message (without its length) the SDK's ``_encode_value`` builds for ``value``."""
    kind = type(value)
    if kind is str:
        return b"\x0a" + delimited(value.encode())
    if kind is int:
        return b"\x18" + int64(value)
    if kind is bool:
        return _TRUE if value else _FALSE
    if kind is float:
        return b"\x21" + pack_double(value)
    if value is None:
        return b""
    if kind is bytes:
        return b"\x3a" + delimited(value)
    if kind is tuple or kind is list:
        array = b"".join([b"\x0a" + delimited(any_value(item)) for item in value])
        return b"\x2a" + delimited(array)
    if kind is dict:
        kvlist = b"".join([b"\x0a" + delimited(key_value(key, item)) for key, item in value.items()])
        return b"\x32" + delimited(kvlist)
    # Subclasses, other sequences and mappings, unsupported objects: the SDK decides (its isinstance
    # chain, str() of mapping keys, its error for what it cannot encode).
    raise UnsupportedValueError(f"value of type {kind.__name__}")


def key_value(key: Any, value: Any) -> bytes:
    if type(key) is not str:
        raise UnsupportedValueError("attribute key is not a str")
    return (b"\x0a" + delimited(key.encode()) if key else b"") + b"\x12" + delimited(any_value(value))


_CACHED_KINDS: Final = (str, int, bool)


class AttributeEncoder:
    """The ``KeyValue`` fields of attribute maps under one field tag, with a cache of recent pairs.

    A monitored service repeats most attribute values from request to request (method, route,
    scheme, status, host, user agent), so most attributes of a batch are one dict lookup. Only exact
    ``str`` (short ones), ``int`` and ``bool`` values are cached, each kind in its own table, so
    ``1`` and ``True`` (equal as dict keys) never share an entry. A table is emptied when full: a
    burst of unique values costs one rebuild, and memory stays bounded.
    """

    __slots__ = ("_max_entries", "_tables", "_tag")

    def __init__(self, tag: bytes, max_entries: int = 512) -> None:
        self._tag = tag
        self._max_entries = max_entries
        self._tables: dict[type, dict[tuple[Any, Any], bytes]] = {kind: {} for kind in _CACHED_KINDS}

    def encode(self, attributes: Mapping[str, Any] | None) -> bytes:
        """Every attribute as one KeyValue field, in the mapping's order."""
        if not attributes:
            return b""
        kind = type(attributes)
        # BoundedAttributes (and the read-only proxy spans hand out) iterate item by item through
        # Python-level __iter__/__getitem__; their public copy() is one C-level dict copy.
        items = (
            attributes.copy().items()  # type: ignore[attr-defined]
            if kind is MappingProxyType or kind is BoundedAttributes
            else attributes.items()
        )
        tables = self._tables
        tag = self._tag
        parts = []
        for item in items:
            key, value = item
            if type(key) is not str:
                raise UnsupportedValueError("attribute key is not a str")
            table = tables.get(type(value))
            if table is None:
                parts.append(tag + delimited(key_value(key, value)))
                continue
            encoded = table.get(item)
            if encoded is None:
                encoded = tag + delimited(key_value(key, value))
                if type(value) is not str or len(value) <= _MAX_CACHED_STR_LENGTH:
                    if len(table) >= self._max_entries:
                        table.clear()
                    table[item] = encoded
            parts.append(encoded)
        return b"".join(parts)


_ObjectCacheValue = tuple[object, bytes]


class IdentityCache:
    """Encodings of the few long-lived objects every item of a batch points at (resource, scope).

    Keyed by identity (the cached entry keeps its object alive, so its id cannot be reused); an
    SDK ``Resource``/``InstrumentationScope`` is immutable once built. Bounded: emptied when full.
    """

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        self._entries: dict[int, _ObjectCacheValue] = {}

    def get(self, obj: object, encode: Callable[[Any], bytes]) -> bytes:
        entry = self._entries.get(id(obj))
        if entry is not None and entry[0] is obj:
            return entry[1]
        encoded = encode(obj)
        if len(self._entries) >= 64:
            self._entries.clear()
        self._entries[id(obj)] = (obj, encoded)
        return encoded
