"""A stand-in for Loki's native OTLP endpoint, for end-to-end tests (a helper module, not a test file).

``LokiReceiver`` is a small threaded HTTP server on 127.0.0.1 (a free port) that accepts what an
OpenTelemetry Collector's ``otlphttp`` exporter sends when its endpoint is ``http://<host>/otlp``:

- ``POST /otlp/v1/logs``: an ``ExportLogsServiceRequest`` (protobuf, or OTLP/JSON; gzip accepted),
  turned into entries the way Loki 3.x maps OTLP by default (``pkg/loghttp/push/otlp.go``):

  * index labels: the resource attributes in :data:`DEFAULT_INDEX_LABEL_ATTRIBUTES` (``service.name``
    -> ``service_name``; ``service_name="unknown_service"`` when the resource has none);
  * structured metadata: every other resource attribute, the scope (``scope_name``,
    ``scope_version``, scope attributes), every log attribute, ``severity_text``,
    ``severity_number``, ``observed_timestamp``, ``flags``, ``trace_id`` and ``span_id`` (lowercase
    hex), plus ``detected_level`` derived as Loki's distributor does (:func:`detected_level`);
  * names sanitized as Loki 3.7 does (:func:`sanitize_label_name`: ``http.route`` ->
    ``http_route``), values stringified (``200`` -> ``"200"``, ``12.5`` -> ``"12.5"``); nested maps
    flattened with ``_``;
  * the line is the body as a string.

Checked against grafana/loki v3.7.6 (commit 5003600d7c78; the files are unchanged from v3.7.4, the
version docker-compose.yml runs): ``pkg/loghttp/push/otlp.go``, ``pkg/loghttp/push/otlp_config.go``,
``pkg/distributor/field_detection.go``, ``pkg/distributor/distributor.go``,
``pkg/validation/limits.go`` and the vendored ``github.com/prometheus/otlptranslator`` v1.0.0.

- ``POST /otlp/v1/traces`` and ``POST /otlp/v1/metrics``: decoded and kept as they are.

``LokiReceiver(path_prefix="")`` serves the plain OTLP/HTTP paths (``/v1/logs``...) an SDK's exporter
posts to; tests/support/otlp_sink.py uses it that way.

Usage::

    from tests.support.loki_receiver import LokiReceiver

    with LokiReceiver() as loki:
        ...  # point a Collector at loki.otlp_endpoint ("http://127.0.0.1:<port>/otlp")
        entries = loki.wait_for(lambda es: len(es) >= 3, timeout=10)
        assert entries[0].labels["service_name"] == "shop"
        assert entries[0].metadata["http_route"] == "/api/products"
"""

from __future__ import annotations

import base64
import gzip
import json
import math
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final, TypeVar

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

__all__ = [
    "DEFAULT_INDEX_LABEL_ATTRIBUTES",
    "LokiEntry",
    "LokiReceiver",
    "detected_level",
    "entries_from_request",
    "normalize_log_level",
    "running_loki_receiver",
    "sanitize_label_name",
]

# Loki's `distributor.otlp.default_resource_attributes_as_index_labels` (otlp_config.go).
DEFAULT_INDEX_LABEL_ATTRIBUTES: Final[frozenset[str]] = frozenset(
    {
        "cloud.availability_zone",
        "cloud.region",
        "container.name",
        "deployment.environment",
        "deployment.environment.name",
        "k8s.cluster.name",
        "k8s.container.name",
        "k8s.cronjob.name",
        "k8s.daemonset.name",
        "k8s.deployment.name",
        "k8s.job.name",
        "k8s.namespace.name",
        "k8s.pod.name",
        "k8s.replicaset.name",
        "k8s.statefulset.name",
        "service.instance.id",
        "service.name",
        "service.namespace",
    }
)

# `validation.discover_service_name` (limits.go): without a service.name, the first index label of
# the resource among these names becomes service_name; with none of them, "unknown_service".
DISCOVER_SERVICE_NAME: Final = (
    "service",
    "app",
    "application",
    "app_name",
    "name",
    "app_kubernetes_io_name",
    "container",
    "container_name",
    "k8s_container_name",
    "component",
    "workload",
    "job",
    "k8s_job_name",
)

# `validation.log_level_fields` (limits.go, DefaultAllowedLevelFields), in the order Loki looks.
LEVEL_FIELDS: Final = (
    "level",
    "LEVEL",
    "Level",
    "log.level",
    "severity",
    "SEVERITY",
    "Severity",
    "SeverityText",
    "lvl",
    "LVL",
    "Lvl",
    "severity_text",
    "Severity_Text",
    "SEVERITY_TEXT",
)

# normalizeLogLevel (field_detection.go): these spellings, compared case-insensitively, become the
# level; any other text is kept exactly as sent ("notice", "crit", "Informational" stay as they are).
_LEVEL_SPELLINGS: Final = {
    "trace": ("trace", "trc"),
    "debug": ("debug", "dbg"),
    "info": ("info", "inf", "information"),
    "warn": ("warn", "wrn", "warning"),
    "error": ("error", "err"),
    "critical": ("critical",),
    "fatal": ("fatal",),
}
# detectLogLevelFromLogEntry: the upper bound of each OTLP severity-number range.
_SEVERITY_NUMBER_LEVELS: Final = (
    (4, "trace"),
    (8, "debug"),
    (12, "info"),
    (16, "warn"),
    (20, "error"),
    (24, "fatal"),
)
# levelPatterns + detectLevelFromLogLine: a level word in a plain-text line, earliest one wins.
_LINE_LEVEL_WORDS: Final = (
    ("trace", "trace"),
    ("debug", "debug"),
    ("fatal", "fatal"),
    ("critical", "critical"),
    ("error", "error"),
    ("err", "error"),
    ("warning", "warn"),
    ("warn", "warn"),
    ("info", "info"),
)
_LEFT_BOUNDARY: Final = frozenset(' \t\n[({"=')
_RIGHT_BOUNDARY: Final = frozenset(' \t\n[]{}():,!"=')
_ASCII_ALNUM: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")


def sanitize_label_name(name: str) -> str:
    """Loki 3.7's name normalisation (otlptranslator v1.0.0 ``LabelNamer{}.Build``).

    Every run of characters outside ``[a-zA-Z0-9]`` (underscores and non-ASCII letters included)
    becomes one ``_``; a leading digit gets ``key_``; ``__name__`` keeps its double underscores.
    Earlier Loki versions differ: 3.5-3.6 did not collapse runs and prefixed a leading ``_`` with
    ``key``; 3.0-3.4 also kept non-ASCII letters and digits.

    Raises ValueError for a name Loki rejects (empty, or nothing but underscores once sanitized).
    """
    if not name:
        raise ValueError("label name is empty")
    reserved = len(name) >= 4 and name.startswith("__") and name.endswith("__")
    characters: list[str] = []
    for character in name[2:-2] if reserved else name:
        if character in _ASCII_ALNUM:
            characters.append(character)
        elif not characters or characters[-1] != "_":
            characters.append("_")
    sanitized = "".join(characters)
    if reserved:
        sanitized = f"__{sanitized}__"
    if sanitized[0].isdigit():
        sanitized = "key_" + sanitized
    if not sanitized.strip("_"):
        raise ValueError(f"normalization for label name {name!r} resulted in invalid name {sanitized!r}")
    return sanitized


def normalize_log_level(text: str) -> str:
    """Loki's normalizeLogLevel: a known spelling -> its level, anything else unchanged."""
    for level, spellings in _LEVEL_SPELLINGS.items():
        if any(len(text) == len(word) and text.lower() == word for word in spellings):
            return level
    return text


def _level_from_line(line: str) -> str:
    lowered = line.lower()
    best, level = len(lowered), "unknown"
    for word, candidate in _LINE_LEVEL_WORDS:
        start = 0
        while (found := lowered.find(word, start)) != -1 and found < best:
            end = found + len(word)
            if (found == 0 or lowered[found - 1] in _LEFT_BOUNDARY) and (
                end == len(lowered) or lowered[end] in _RIGHT_BOUNDARY
            ):
                best, level = found, candidate
                break
            start = found + 1
    return level


def detected_level(labels: Mapping[str, str], metadata: Mapping[str, str], line: str) -> str:
    """The ``detected_level`` Loki's distributor stores with an entry (FieldDetector.extractLogLevel).

    A level field among the index labels, then among the structured metadata (``severity_text``
    for OTLP), normalised; else the OTLP severity number's range; else a level word in the line.
    (Loki also reads level fields inside JSON and logfmt lines first; such lines are not modelled
    here: they fall to the word search.)
    """
    for fields in (labels, metadata):
        for name in LEVEL_FIELDS:
            if name in fields:
                return normalize_log_level(fields[name])
    number_text = metadata.get("severity_number")
    if number_text is not None:
        try:
            number = int(number_text)
        except ValueError:
            return "info"
        if number == 0:
            return "unknown"
        for upper, level in _SEVERITY_NUMBER_LEVELS:
            if number <= upper:
                return level
        return "unknown"
    return _level_from_line(line)


def _format_double(value: float) -> str:
    # Go's strconv.FormatFloat(v, 'f', -1, 64), which pcommon.Value.AsString uses for doubles:
    # the shortest digits that round-trip, never an exponent, no trailing ".0".
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    text = format(Decimal(repr(value)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def _plain(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "kvlist_value":
        return {kv.key: _plain(kv.value) for kv in value.kvlist_value.values}
    if kind == "array_value":
        return [_plain(item) for item in value.array_value.values]
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    return getattr(value, kind)


def _as_string(value: AnyValue) -> str:
    """pcommon.Value.AsString: how Loki stringifies attribute values and non-string bodies."""
    kind = value.WhichOneof("value")
    if kind is None:
        return ""
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "int_value":
        return str(value.int_value)
    if kind == "double_value":
        return _format_double(value.double_value)
    return json.dumps(_plain(value), separators=(",", ":"))


def _attribute_to_labels(key: str, value: AnyValue, prefix: str = "") -> list[tuple[str, str]]:
    name = sanitize_label_name(f"{prefix}_{key}" if prefix else key)
    if value.WhichOneof("value") == "kvlist_value":
        flattened: list[tuple[str, str]] = []
        for kv in value.kvlist_value.values:
            flattened.extend(_attribute_to_labels(kv.key, kv.value, name))
        return flattened
    return [(name, _as_string(value))]


def _attributes_to_labels(attributes: Iterable[KeyValue]) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for kv in attributes:
        pairs.extend(_attribute_to_labels(kv.key, kv.value))
    return pairs


@dataclass(frozen=True, slots=True)
class LokiEntry:
    """One log line as Loki would store it: index labels, line, structured metadata."""

    labels: Mapping[str, str]
    line: str
    metadata: Mapping[str, str]
    timestamp_ns: int

    def get(self, name: str) -> str | None:
        """A label or structured-metadata value by its Loki name (what a LogQL filter sees)."""
        if name in self.labels:
            return self.labels[name]
        return self.metadata.get(name)

    def names(self) -> set[str]:
        return set(self.labels) | set(self.metadata)

    @property
    def trace_id(self) -> str | None:
        return self.metadata.get("trace_id")


def _record_metadata(record: LogRecord) -> dict[str, str]:
    """Structured metadata from one log record's own fields (otlpLogToPushEntry)."""
    metadata: dict[str, str] = dict(_attributes_to_labels(record.attributes))
    if record.time_unix_nano and record.observed_time_unix_nano:
        metadata["observed_timestamp"] = str(record.observed_time_unix_nano)
    if record.severity_number:
        metadata["severity_number"] = str(record.severity_number)
    if record.severity_text:
        metadata["severity_text"] = record.severity_text
    if record.dropped_attributes_count:
        metadata["dropped_attributes_count"] = str(record.dropped_attributes_count)
    if record.flags:
        metadata["flags"] = str(record.flags)
    if any(record.trace_id):
        metadata["trace_id"] = record.trace_id.hex()
    if any(record.span_id):
        metadata["span_id"] = record.span_id.hex()
    return metadata


def _resource_labels(attributes: Iterable[KeyValue]) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """(index labels, structured metadata) of a resource (otlpToLokiPushRequest)."""
    labels: dict[str, str] = {}
    metadata: list[tuple[str, str]] = []
    attributes = list(attributes)
    has_service_name = any(kv.key == "service.name" and _as_string(kv.value) for kv in attributes)
    for kv in attributes:
        pairs = _attribute_to_labels(kv.key, kv.value)
        if kv.key not in DEFAULT_INDEX_LABEL_ATTRIBUTES:
            metadata.extend(pairs)
            continue
        labels.update(pairs)
        for name, value in pairs:
            if not has_service_name and name in DISCOVER_SERVICE_NAME:
                labels["service_name"] = value
                has_service_name = True
    if not has_service_name:
        labels["service_name"] = "unknown_service"
    return labels, metadata


def entries_from_request(request: ExportLogsServiceRequest) -> list[LokiEntry]:
    """Apply Loki's default OTLP mapping to one decoded request."""
    entries: list[LokiEntry] = []
    for resource_logs in request.resource_logs:
        labels, resource_metadata = _resource_labels(resource_logs.resource.attributes)
        for scope_logs in resource_logs.scope_logs:
            scope = scope_logs.scope
            scope_metadata = _attributes_to_labels(scope.attributes)
            if scope.name:
                scope_metadata.append(("scope_name", scope.name))
            if scope.version:
                scope_metadata.append(("scope_version", scope.version))
            if scope.dropped_attributes_count:
                scope_metadata.append(("scope_dropped_attributes_count", str(scope.dropped_attributes_count)))
            for record in scope_logs.log_records:
                metadata = _record_metadata(record)
                metadata.update(resource_metadata)
                metadata.update(scope_metadata)
                line = _as_string(record.body)
                if "detected_level" in metadata:  # sent by the client: only normalised
                    metadata["detected_level"] = normalize_log_level(metadata["detected_level"])
                else:
                    metadata["detected_level"] = detected_level(labels, metadata, line)
                timestamp = record.time_unix_nano or record.observed_time_unix_nano
                entries.append(
                    LokiEntry(
                        labels=dict(labels),
                        line=line,
                        metadata=metadata,
                        timestamp_ns=timestamp,
                    )
                )
    return entries


_T = TypeVar("_T")

# OTLP/HTTP paths, after the receiver's path prefix.
OTLP_ROUTES: Final[dict[str, tuple[type[Message], type[Message]]]] = {
    "/v1/logs": (ExportLogsServiceRequest, ExportLogsServiceResponse),
    "/v1/traces": (ExportTraceServiceRequest, ExportTraceServiceResponse),
    "/v1/metrics": (ExportMetricsServiceRequest, ExportMetricsServiceResponse),
}


@dataclass
class _Store:
    condition: threading.Condition = field(default_factory=threading.Condition)
    entries: list[LokiEntry] = field(default_factory=list)
    log_requests: list[ExportLogsServiceRequest] = field(default_factory=list)
    trace_requests: list[ExportTraceServiceRequest] = field(default_factory=list)
    metric_requests: list[ExportMetricsServiceRequest] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return  # keep test output clean; errors are kept on the receiver instead

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/ready":
            self._reply(200, b"ready\n", "text/plain")
        else:
            self._reply(404, b"not found\n", "text/plain")

    def do_POST(self) -> None:
        store = self.server.store
        path = self.path.split("?", 1)[0]
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        route = self.server.routes.get(path)
        if route is None:
            self._reply(404, b"not found\n", "text/plain")
            return
        request_type, response_type = route
        try:
            payload = _decompress(raw, self.headers.get("Content-Encoding", ""))
            content_type = self.headers.get("Content-Type", "application/x-protobuf")
            is_json = content_type.split(";")[0].strip() == "application/json"
            message = request_type()
            if is_json:
                json_format.Parse(payload.decode("utf-8"), message)
            else:
                message.ParseFromString(payload)
        except (DecodeError, json_format.ParseError, OSError, zlib.error, UnicodeDecodeError) as error:
            with store.condition:
                store.errors.append(f"{path}: {error}")
            self._reply(400, str(error).encode(), "text/plain")
            return
        try:
            entries = entries_from_request(message) if isinstance(message, ExportLogsServiceRequest) else []
        except ValueError as error:  # a name Loki cannot sanitize: Loki refuses the request
            with store.condition:
                store.errors.append(f"{path}: {error}")
            self._reply(400, str(error).encode(), "text/plain")
            return
        with store.condition:
            if isinstance(message, ExportLogsServiceRequest):
                store.log_requests.append(message)
                store.entries.extend(entries)
            elif isinstance(message, ExportTraceServiceRequest):
                store.trace_requests.append(message)
            elif isinstance(message, ExportMetricsServiceRequest):
                store.metric_requests.append(message)
            store.condition.notify_all()
        if is_json:
            self._reply(200, json_format.MessageToJson(response_type()).encode(), "application/json")
        else:
            self._reply(200, response_type().SerializeToString(), "application/x-protobuf")


def _decompress(raw: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if encoding == "gzip":
        return gzip.decompress(raw)
    if encoding == "deflate":
        return zlib.decompress(raw)
    if encoding in ("", "identity"):
        return raw
    raise OSError(f"unsupported Content-Encoding {encoding!r}")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    store: _Store
    routes: dict[str, tuple[type[Message], type[Message]]]


class LokiReceiver:
    """A threaded OTLP/HTTP server on 127.0.0.1 that stores what Loki would store."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, path_prefix: str = "/otlp") -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the test receiver listens on the loopback interface only")
        self._server = _Server((host, port), _Handler)
        self._server.store = _Store()
        self._server.routes = {path_prefix + path: types for path, types in OTLP_ROUTES.items()}
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        self._closed = False

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def otlp_endpoint(self) -> str:
        """What a Collector's `otlphttp` exporter (or rotel's) takes as its endpoint."""
        return f"{self.base_url}/otlp"

    def entries(self) -> list[LokiEntry]:
        with self._server.store.condition:
            return list(self._server.store.entries)

    def log_requests(self) -> list[ExportLogsServiceRequest]:
        with self._server.store.condition:
            return list(self._server.store.log_requests)

    def trace_requests(self) -> list[ExportTraceServiceRequest]:
        with self._server.store.condition:
            return list(self._server.store.trace_requests)

    def metric_requests(self) -> list[ExportMetricsServiceRequest]:
        with self._server.store.condition:
            return list(self._server.store.metric_requests)

    def errors(self) -> list[str]:
        """Requests the receiver could not decode (a well-behaved pipeline leaves this empty)."""
        with self._server.store.condition:
            return list(self._server.store.errors)

    def clear(self) -> None:
        store = self._server.store
        with store.condition:
            store.entries.clear()
            store.log_requests.clear()
            store.trace_requests.clear()
            store.metric_requests.clear()
            store.errors.clear()

    def wait_for(
        self,
        predicate: Callable[[list[LokiEntry]], _T],
        timeout: float,
        description: str = "condition",
    ) -> list[LokiEntry]:
        """Block until ``predicate(entries)`` is truthy; raise TimeoutError (with a summary) after timeout."""
        store = self._server.store
        with store.condition:
            satisfied = store.condition.wait_for(lambda: bool(predicate(list(store.entries))), timeout)
            entries = list(store.entries)
        if not satisfied:
            raise TimeoutError(
                f"{description} not met within {timeout}s: {len(entries)} entries received "
                f"(lines: {[e.line for e in entries[:20]]}), decode errors: {self.errors()}"
            )
        return entries

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> LokiReceiver:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@contextmanager
def running_loki_receiver() -> Iterator[LokiReceiver]:
    """Start a receiver for the duration of a ``with`` block (or a pytest fixture: ``yield from``)."""
    receiver = LokiReceiver()
    try:
        yield receiver
    finally:
        receiver.close()
