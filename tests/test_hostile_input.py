"""Hostile and malformed input against the demo app (issue 7): property-based requests, a
cardinality attack, and the resource bounds of the monitoring routes.

Everything goes through Flask's test client (no socket, no network). The figures these tests
measure are reported in docs/reliability.md ("Hostile and malformed input").

Hypothesis runs ``derandomize=True`` by default: CI runs the same examples every time, so a red
build is never a lucky draw and can be reproduced by re-running the test. To explore new examples
locally, set ``HOSTILE_INPUT_RANDOM=1`` (and ``HOSTILE_INPUT_EXAMPLES=2000`` for a longer run).
"""

from __future__ import annotations

import gc
import ipaddress
import json
import os
import random
import re
import string
import sys
import threading
import time
import tracemalloc
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, quote_plus, unquote, unquote_plus

import pytest
from flask import Flask
from hypothesis import HealthCheck, assume, given, note, settings
from hypothesis import strategies as st
from werkzeug.test import EnvironBuilder

from otel_flask_monitor import get_state
from otel_flask_monitor.aggregates import OVERFLOW_METHOD, OVERFLOW_ROUTE
from otel_flask_monitor.aggregates.counts import SLOWEST_PER_SLOT, STATUS_CODES_PER_ROUTE
from otel_flask_monitor.demo.app import create_app
from otel_flask_monitor.demo.shop import Shop
from otel_flask_monitor.record import KNOWN_METHODS, OTHER_METHOD, UNMATCHED_ROUTE, RequestRecord
from tests.conftest import LOG_EXPORTER, SPAN_EXPORTER, Exported

ATTRIBUTE_LIMIT = 1024  # documented default of max_attribute_length (docs/configuration.md)
STACKTRACE_LIMIT = 8192  # documented default of max_stacktrace_length
METHOD_LIMIT = 32  # hooks.py cuts the method to 32 characters
# The body line is "<METHOD> <route or path> <status> <duration> ms": method and path are capped,
# the rest is a status code and a number.
BODY_LIMIT = METHOD_LIMIT + ATTRIBUTE_LIMIT + 48
RECENT_ERROR_TEXT_LIMIT = 300  # docs/dashboard.md: recent errors' path and user_agent cut to 300 characters
LOKI_STRUCTURED_METADATA_BYTES = 64 * 1024  # Loki's default per-line limit (docs/log-schema.md)

EXAMPLES = int(os.environ.get("HOSTILE_INPUT_EXAMPLES", "200"))
settings.register_profile(
    "hostile-input",
    max_examples=EXAMPLES,
    deadline=None,  # the first example pays for imports and the test client's warm-up
    derandomize=os.environ.get("HOSTILE_INPUT_RANDOM", "") != "1",
    database=None,  # derandomized runs need no example database; keeps the tree clean
    suppress_health_check=[HealthCheck.too_slow],
)
hostile = settings.get_profile("hostile-input")

# The secret values the monitor is configured to redact. Every secret the strategies send contains
# SECRET_CORE (alphanumeric, so its percent-encoded form is itself), followed by a drawn tail that
# may hold any character: '&', '=', '%', '+', non-ASCII...
SECRET_CORE = "Zk7sEcReTq4W"
SECRET_HEADERS = ("Authorization", "Proxy-Authorization", "Cookie", "X-Api-Key")
SECRET_HEADER_PREFIXES = ("Bearer ", "Basic ", "session=", "")
SECRET_QUERY_NAMES = (
    "token",
    "access_token",
    "password",
    "secret",
    "client_secret",
    "api_key",
    "apiKey",
    "key",
    "signature",
    "X-Amz-Signature",
)
CAPTURED_HEADERS = (*SECRET_HEADERS, "X-Request-Id", "Referer", "Accept")

DEMO_PATHS = (
    "/",
    "/api/products",
    "/api/products/",
    "/api/products/1",
    "/api/products/999999",
    "/api/products/featured",
    "/api/products/1/purchase",
    "/api/orders",
    "/simulate-error",
    "/static/",
)
STANDARD_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT")
TCHAR = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~"


# ---------------------------------------------------------------------------------------------------
# Apps
# ---------------------------------------------------------------------------------------------------


def demo_app(*, monitored: bool = True, **options: Any) -> Flask:
    # A seeded shop: the bare and the monitored app restock identically, so the same requests in the
    # same order get the same answers from both. No sleep in /api/products/featured.
    return create_app(
        shop=Shop(rng=random.Random(7)),
        featured_delay_seconds=(0.0, 0.0),
        monitored=monitored,
        **options,
    )


@dataclass
class AppPair:
    bare: Flask
    monitored: Flask


@pytest.fixture(scope="module")
def app_pair() -> AppPair:
    """One bare and one monitored demo app, fed the same requests in lockstep."""
    return AppPair(demo_app(monitored=False), demo_app(captured_headers=list(CAPTURED_HEADERS)))


def clear_exporters() -> None:
    SPAN_EXPORTER.clear()
    LOG_EXPORTER.clear()


# ---------------------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------------------


def repeated(base: st.SearchStrategy[str], low: int, high: int) -> st.SearchStrategy[str]:
    """A short drawn text repeated into a very long one (cheap for hypothesis to generate)."""
    return st.tuples(base.filter(bool), st.integers(low, high)).map(
        lambda pair: (pair[0] * (pair[1] // len(pair[0]) + 1))[: pair[1]]
    )


percent_escape = st.one_of(
    st.integers(0, 255).map(lambda byte: f"%{byte:02X}"),
    st.integers(0, 255).map(lambda byte: f"%{byte:02x}"),
    st.sampled_from(["%", "%z", "%zz", "%E2%28%A1", "%C0%AF", "%00", "%2F", "%25", "%u2028", "%F0%9F"]),
)
any_text = st.text(max_size=40)  # any code point but surrogates: controls, NUL, RTL marks, emoji...
url_piece = st.lists(st.one_of(any_text, percent_escape), max_size=8).map("".join)


def _path_part(text: str) -> str:
    # '?' and '#' would end the path; everything else goes through as the client wrote it.
    return text.replace("?", "%3F").replace("#", "%23")


paths = st.one_of(
    url_piece.map(lambda text: "/" + text),
    st.tuples(st.sampled_from(DEMO_PATHS), url_piece).map(lambda pair: pair[0] + pair[1]),
    st.sampled_from(DEMO_PATHS),
    st.sampled_from(DEMO_PATHS),
    repeated(st.one_of(st.text(max_size=3), percent_escape), 1_000, 20_000).map(lambda text: "/" + text),
).map(_path_part)

methods = st.one_of(
    st.sampled_from(("GET", "GET", "POST", "HEAD")),  # most requests reach a view: 2xx, 400, 409...
    st.sampled_from(STANDARD_METHODS),
    st.sampled_from(STANDARD_METHODS).map(str.lower),
    st.text(alphabet=TCHAR, min_size=1, max_size=16),
    st.text(alphabet=TCHAR, min_size=33, max_size=300),
)

# Headers the monitor reads (Host, User-Agent, the captured ones) or the server interprets; each is
# sent or not, so that every example is likely to exercise several of them.
COMMON_HEADERS = ("Host", "User-Agent", "Accept", "Referer", "X-Request-Id", "Content-Length")
header_names = st.one_of(
    st.sampled_from(["X-Forwarded-For", "Forwarded", "Content-Type", "Transfer-Encoding", "Expect"]),
    st.text(alphabet=TCHAR, min_size=1, max_size=40),
)
_no_line_breaks = st.characters(exclude_characters="\r\n")
header_values = st.one_of(
    # What a real server hands over: the bytes on the wire (here UTF-8) decoded as latin-1.
    st.text(_no_line_breaks, max_size=60).map(
        lambda text: text.encode("utf-8", "surrogatepass").decode("latin-1")
    ),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=60),  # latin-1
    st.text(_no_line_breaks, max_size=60),  # code points no server sends: must not hurt either
    st.sampled_from(["-1", "0", "99999999999999999999", " 5 ", "1e3", "chunked", "gzip, chunked"]),
    repeated(st.text(_no_line_breaks, max_size=3), 1_000, 100_000),
)


@st.composite
def secret_values(draw: st.DrawFn) -> str:
    return SECRET_CORE + draw(st.text(max_size=12))


def _case_variant(draw: st.DrawFn, name: str) -> str:
    return draw(st.sampled_from([name, name.lower(), name.upper(), name.swapcase()]))


query_keys = st.one_of(st.text(max_size=12), st.sampled_from(["q", "page", "id", "", "a[]", "a.b"]))


@st.composite
def query_strings(draw: st.DrawFn) -> tuple[str, list[str], str]:
    """A query string (as the client sends it, after '?'), the secret values it carries, and its
    parameters that are not secret."""
    secrets: list[str] = []
    chunks: list[str] = []
    if draw(st.booleans()):
        # Well-formed: percent-encoded pairs, keys repeated from a small pool.
        pool = draw(st.lists(query_keys, min_size=1, max_size=6))
        pairs = draw(st.lists(st.tuples(st.sampled_from(pool), any_text), max_size=30))
        chunks.extend(f"{quote_plus(key)}={quote_plus(value)}" for key, value in pairs)
    else:
        # Malformed: raw text, bare '%', half escapes, '=' and '&' in odd places.
        pieces = st.one_of(any_text, percent_escape, st.sampled_from(["&", "=", "==", "&&", ";", "+"]))
        chunks.append(draw(st.lists(pieces, max_size=20).map("".join)))
    if draw(st.booleans()):
        chunks.append("big=" + draw(repeated(st.sampled_from(["x", "%41", "\u00e9", "+"]), 2_000, 60_000)))
    public = "&".join(chunks)
    for _ in range(draw(st.integers(0, 3))):
        name = _case_variant(draw, draw(st.sampled_from(SECRET_QUERY_NAMES)))
        if draw(st.booleans()):
            name = "".join(f"%{byte:02X}" for byte in name.encode())  # %74%6F%6B%65%6E = token
        secret = draw(secret_values())
        secrets.append(secret)
        encode = draw(st.sampled_from([quote, quote_plus]))
        chunk = f"{name}={encode(secret, safe='')}"
        chunks.insert(draw(st.integers(0, len(chunks))), chunk)
    query = "&".join(chunks)
    return query.replace("#", "%23"), secrets, public


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=20,
)
bodies = st.one_of(
    st.just(b""),
    st.binary(max_size=2_000),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.builds(
        lambda q: json.dumps({"quantity": q}).encode(), st.one_of(st.integers(-3, 15), st.text(max_size=3))
    ),
    json_values.map(lambda value: json.dumps(value).encode()[:-1]),  # cut short
    st.integers(10_000, 300_000).map(lambda size: b"\xff{" * (size // 2)),
)
content_types = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "application/json",
            "application/json; charset=latin-1",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=xyz",
            "multipart/form-data",
        ]
    ),
    st.text(_no_line_breaks, max_size=40),
)


@dataclass(frozen=True)
class HostileRequest:
    kwargs: dict[str, Any]
    secrets: tuple[str, ...]
    public: str
    """Everything sent that is not a secret (to tell a leak from an echo of the input)."""


@st.composite
def hostile_requests(draw: st.DrawFn) -> HostileRequest:
    path = draw(paths)
    query, secrets, public_query = draw(query_strings()) if draw(st.booleans()) else ("", [], "")
    headers: list[tuple[str, str]] = [
        *draw(st.fixed_dictionaries({}, optional=dict.fromkeys(COMMON_HEADERS, header_values))).items(),
        *draw(st.lists(st.tuples(header_names, header_values), max_size=4)),
    ]
    method = draw(methods)
    public = [path, public_query, method]
    public.extend(f"{name}: {value}" for name, value in headers)
    for name in SECRET_HEADERS:
        if draw(st.booleans()):
            secret = draw(secret_values())
            value = draw(st.sampled_from(SECRET_HEADER_PREFIXES)) + secret
            headers.insert(draw(st.integers(0, len(headers))), (_case_variant(draw, name), value))
            secrets.append(secret)
    kwargs: dict[str, Any] = {
        "method": method,
        "headers": headers,
        "data": draw(bodies),
        "content_type": draw(content_types),
    }
    if draw(st.integers(0, 9)) == 0:
        # Raw PATH_INFO, as a server hands it over: the bytes of the path decoded as latin-1.
        kwargs["path"] = "/"
        kwargs["environ_overrides"] = {
            "PATH_INFO": path.encode().decode("latin-1"),
            # The test client parses a Content-Length header; a server may hand over anything.
            "CONTENT_LENGTH": draw(st.sampled_from(["", "-1", "abc", "1" * 30, " 7", "0x10", "3"])),
        }
        kwargs["query_string"] = query
    else:
        kwargs["path"] = path + ("?" + query if query else "")
    return HostileRequest(kwargs, tuple(secrets), "\n".join(public))


# ---------------------------------------------------------------------------------------------------
# What was exported
# ---------------------------------------------------------------------------------------------------


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)


def exported_texts() -> list[str]:
    """Every exported span and log record as JSON text, plus every string inside them decoded."""
    texts: list[str] = []
    for document in [span.to_json() for span in SPAN_EXPORTER.get_finished_spans()] + [
        record.to_json() for record in LOG_EXPORTER.get_finished_logs()
    ]:
        texts.append(document)
        texts.extend(_strings(json.loads(document)))
    for span in SPAN_EXPORTER.get_finished_spans():
        texts.append(span.name)
        texts.extend(_strings(dict(span.attributes or {})))
        for event in span.events:
            texts.extend(_strings(dict(event.attributes or {})))
    for record in LOG_EXPORTER.get_finished_logs():
        texts.extend(_strings(dict(record.log_record.attributes or {})))
        texts.append(str(record.log_record.body))
    return texts


def leaked(secret_core: str, texts: list[str]) -> list[str]:
    return [
        text
        for text in texts
        if secret_core in text or secret_core in unquote(text) or secret_core in unquote_plus(text)
    ]


def check_attribute_limits(owner: str, attributes: dict[str, Any]) -> None:
    for key, value in attributes.items():
        if not isinstance(value, str):
            continue
        limit = STACKTRACE_LIMIT if key == "exception.stacktrace" else ATTRIBUTE_LIMIT
        assert len(value) <= limit, f"{owner} attribute {key!r} is {len(value)} characters"


def structured_metadata_bytes(attributes: dict[str, Any]) -> int:
    return sum(len(key.encode()) + len(str(value).encode()) for key, value in attributes.items())


# ---------------------------------------------------------------------------------------------------
# 1. Property-based requests
# ---------------------------------------------------------------------------------------------------


def _is_monitoring_route(path_info: str) -> bool:
    # The bare app has no /monitoring routes, so their answers differ by design (and the monitored
    # app may redirect //monitoring to /monitoring). Requests there are tested in part 3.
    return re.sub("/+", "/", path_info).startswith("/monitoring")


def assume_sendable(kwargs: dict[str, Any]) -> None:
    """Discard the example unless a server could hand the request to the app, outside /monitoring."""
    try:
        environ = EnvironBuilder(**kwargs).get_environ()
    except (ValueError, TypeError, UnicodeError):
        assume(False)  # the test client itself refuses it: no server could hand it to the app
        raise  # unreachable; keeps type checkers and readers sure the name is bound below
    assume(not _is_monitoring_route(environ["PATH_INFO"]))


@hostile
@given(hostile_requests())
def test_hostile_requests_get_the_bare_apps_answer_and_leak_nothing(
    app_pair: AppPair, hostile_request: HostileRequest
) -> None:
    kwargs = hostile_request.kwargs
    assume_sendable(kwargs)
    note(f"request: {kwargs['method']!r} {kwargs['path'][:300]!r} {kwargs.get('environ_overrides')}")

    bare = app_pair.bare.test_client(use_cookies=False).open(**kwargs)
    clear_exporters()
    state = get_state(app_pair.monitored)
    failures_before = state.failures.counts()
    monitored = app_pair.monitored.test_client(use_cookies=False).open(**kwargs)  # must not raise

    # The monitor never changes the answer, and never swallows a failure of its own.
    assert monitored.status_code == bare.status_code
    assert state.failures.counts() == failures_before
    records = [
        r for r in LOG_EXPORTER.get_finished_logs() if r.log_record.event_name == "http.server.request"
    ]
    assert len(records) == 1, "one log record per request"
    attributes = dict(records[0].log_record.attributes or {})
    if monitored.status_code == 500:
        assert attributes.get("http.route") == "/simulate-error", "only /simulate-error may answer 500"

    # Every exported attribute within the documented limits; the body line bounded.
    check_attribute_limits("log", attributes)
    assert len(str(records[0].log_record.body)) <= BODY_LIMIT
    assert len(str(attributes["http.request.method"])) <= METHOD_LIMIT
    assert structured_metadata_bytes(attributes) < LOKI_STRUCTURED_METADATA_BYTES // 2
    spans = SPAN_EXPORTER.get_finished_spans()
    assert spans, "the server span was exported"
    for span in spans:
        check_attribute_limits(f"span {span.name[:40]!r}", dict(span.attributes or {}))
        for event in span.events:
            check_attribute_limits(f"span event {event.name!r}", dict(event.attributes or {}))

    # No configured secret anywhere: spans, log records, attributes, nor the dashboard's data.
    if SECRET_CORE not in hostile_request.public:  # hypothesis may reuse the constant elsewhere
        texts = exported_texts()
        texts.append(json.dumps(state.aggregates.snapshot()))
        assert not leaked(SECRET_CORE, texts)


def test_span_attributes_the_instrumentation_copies_from_the_request_are_cut_too(exported: Exported) -> None:
    """Regression, found by the property test: the Flask instrumentation puts the raw target, user
    agent and host on the server span, and the monitor's own rewrite of ``http.target`` (path +
    redacted query) was not cut either. Falsifying example: ``GET /000...0`` (1,025 characters)."""
    app = demo_app()
    client = app.test_client()
    client.get("/" + "0" * 1024)
    client.get("/" + "0" * 2000 + "?token=abc&q=" + "x" * 5000, headers={"User-Agent": "U" * 5000})

    first, second = (dict(span.attributes or {}) for span in exported.server_spans())
    assert first["http.target"] == "/" + "0" * 1020 + "..."
    assert second["http.target"] == "/" + "0" * 1020 + "..."
    assert second["http.user_agent"] == "U" * 1021 + "..."
    assert second["url.query"].startswith("token=[REDACTED]&q=xxx")
    assert len(second["url.query"]) == ATTRIBUTE_LIMIT
    assert second["http.method"] == "GET"  # short values are left alone


def test_the_request_strategy_draws_varied_traffic() -> None:
    """Guards the generator: a strategy that degenerates to one kind of request tests nothing. It
    draws as many examples as the property test, from the same strategy with the same settings, and
    sends them to the bare demo app (the answers are the app's: the monitor never changes them)."""
    app = demo_app(monitored=False)
    statuses: Counter[int] = Counter()

    @hostile
    @given(hostile_requests())
    def send(hostile_request: HostileRequest) -> None:
        assume_sendable(hostile_request.kwargs)
        statuses[app.test_client(use_cookies=False).open(**hostile_request.kwargs).status_code] += 1

    send()
    print(f"\nstrategy: {statuses.total()} requests, statuses {dict(sorted(statuses.items()))}")
    assert statuses.total() >= EXAMPLES // 2
    assert len(statuses) >= 4, statuses  # e.g. 200, 400, 404, 405, 500


# ---------------------------------------------------------------------------------------------------
# 2. Cardinality attack
# ---------------------------------------------------------------------------------------------------

ATTACK_REQUESTS = 5_000
ATTACK_TRACED = 1_500
"""The last requests of the attack run under tracemalloc (it triples the cost of a request)."""
ATTACK_SECONDS = 240.0  # a bound on the loop, far above the 15-35 s it takes
ATTACK_MAX_ROUTES = 4  # small on purpose: the demo's routes and methods overflow it
ATTACK_MEMORY_BOUND = 1024 * 1024
"""Live memory the traced requests may add (measured: 0.2-0.4 MiB: the store's newest slot, bounded
caches of urllib, werkzeug and the metrics SDK). Their paths are about 1,200 characters long:
keeping each of them alone would cost more than 1.7 MiB."""
ATTACK_METHODS = ("GET",) * 6 + (
    "POST",
    "PUT",
    "DELETE",
    "HEAD",
    "OPTIONS",
    "PATCH",
    "BREW",
    "X-SCAN",
    "M-SEARCH",
)
KNOWN_PATHS = ("/", "/api/products", "/api/orders", "/api/products/3", "/api/products/featured")


def attack_request(rng: random.Random, number: int, length: int) -> tuple[str, str]:
    """A random unknown path of about ``length`` characters (sometimes under a real route,
    sometimes a real route) with random query keys."""
    alphabet = string.ascii_letters + string.digits + "-._~"
    segments = ["".join(rng.choices(alphabet, k=rng.randint(20, 40))) for _ in range(length // 30)]
    prefix = rng.choice(["", "", "/api/products", "/api/products/" + str(rng.randint(0, 10**9))])
    path = f"{prefix}/atk{number}-" + "/".join(segments)
    if rng.random() < 0.1:
        path = rng.choice(KNOWN_PATHS)
    keys = [
        "".join(rng.choices(string.ascii_lowercase, k=rng.randint(1, 12))) for _ in range(rng.randint(0, 5))
    ]
    query = "&".join(f"{key}{number}={rng.randint(0, 10**6)}" for key in keys)
    return rng.choice(ATTACK_METHODS), path + ("?" + query if query else "")


_OPAQUE = (type, type(len), type(lambda: None), type(threading.Lock()), type(random.Random().random))


def reachable(root: object) -> Iterator[object]:
    """``root`` and every object it references (functions, locks and types aside), once each."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, _OPAQUE):
            continue
        seen.add(id(obj))
        yield obj
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset, deque)):
            stack.extend(obj)
        elif not isinstance(obj, (str, bytes, int, float, bool)) and obj is not None:
            names = list(getattr(obj, "__dict__", {}))
            for cls in type(obj).__mro__:
                slots = cls.__dict__.get("__slots__", ())
                names.extend([slots] if isinstance(slots, str) else slots)
            stack.extend(getattr(obj, name) for name in names if hasattr(obj, name))


def deep_size(root: object) -> int:
    return sum(sys.getsizeof(obj) for obj in reachable(root))


def test_cardinality_attack_leaves_aggregates_memory_and_index_labels_bounded() -> None:
    app = demo_app(max_routes=ATTACK_MAX_ROUTES)
    client = app.test_client()
    store = get_state(app).aggregates
    templates = {rule.rule for rule in app.url_map.iter_rules()}
    rng = random.Random(20240607)
    clear_exporters()
    resources: set[tuple[tuple[str, Any], ...]] = set()
    records = 0
    paths_in_attributes = 0
    statuses: dict[int, int] = {}

    def drain() -> None:
        nonlocal records, paths_in_attributes
        for record in LOG_EXPORTER.get_finished_logs():
            records += 1
            resources.add(tuple(sorted(dict(record.resource.attributes or {}).items())))
            if "/atk" in str((record.log_record.attributes or {}).get("url.path", "")):
                paths_in_attributes += 1
        clear_exporters()

    deadline = time.monotonic() + ATTACK_SECONDS
    started = time.monotonic()
    sent = 0
    attack_paths = 0
    store_before = memory_before = memory_growth = 0
    try:
        while sent < ATTACK_REQUESTS and time.monotonic() < deadline:
            if sent == ATTACK_REQUESTS - ATTACK_TRACED:
                drain()
                store_before = deep_size(store)
                gc.collect()  # 404s leave reference cycles (exception -> traceback -> frames)
                tracemalloc.start()
                memory_before = tracemalloc.get_traced_memory()[0]
            length = 1_200 if tracemalloc.is_tracing() else 150
            method, url = attack_request(rng, sent, length)
            attack_paths += "/atk" in url
            status = client.open(url, method=method).status_code
            statuses[status] = statuses.get(status, 0) + 1
            sent += 1
            if sent % 500 == 0:
                drain()
        drain()
        gc.collect()
        memory_growth = tracemalloc.get_traced_memory()[0] - memory_before
    finally:
        tracemalloc.stop()
    elapsed = time.monotonic() - started
    store_after = deep_size(store)
    snapshot = store.snapshot()
    keys = {(row["method"], row["route"]) for row in snapshot["routes"]}
    print(  # the figures docs/reliability.md reports (pytest -s shows them)
        f"\ncardinality attack: {sent} requests in {elapsed:.1f} s, "
        f"statuses {dict(sorted(statuses.items()))}, "
        f"{records} log records, {snapshot['tracked_routes']} tracked keys, {len(keys)} route rows, "
        f"store {store_before / 1024:.1f} -> {store_after / 1024:.1f} KiB over "
        f"{len(store.window_state().slots())} slots, live memory growth over the "
        f"last {ATTACK_TRACED} requests {memory_growth / 1024:.1f} KiB, distinct resources {len(resources)}"
    )

    assert sent == ATTACK_REQUESTS, f"only {sent} requests in {ATTACK_SECONDS} s"
    assert 500 not in statuses
    # Aggregates: at most max_routes keys plus the shared overflow key, whatever the paths were...
    assert snapshot["tracked_routes"] <= ATTACK_MAX_ROUTES
    assert len(keys) <= ATTACK_MAX_ROUTES + 1
    assert (OVERFLOW_METHOD, OVERFLOW_ROUTE) in keys  # the bound was reached, not merely respected
    # ...every key a route template of the app or a shared key, never a raw path or an odd method...
    for method, route in keys:
        assert route in templates | {UNMATCHED_ROUTE, OVERFLOW_ROUTE}, route
        assert method in KNOWN_METHODS | {OTHER_METHOD, OVERFLOW_METHOD}, method
    # ...and no request lost on the way.
    assert snapshot["totals"]["requests"] == sent
    assert sum(row["requests"] for row in snapshot["routes"]) == sent
    # Memory: the store keeps no path but those of its recent-error lists (recent_errors each,
    # clipped) and of each key's slowest requests per slot (SLOWEST_PER_SLOT each, clipped); every
    # status-code breakdown is capped; nothing in the process grows with the number of distinct paths.
    window = store.window_state()
    slots = window.slots()
    for slot in slots:
        assert all(len(heap) <= SLOWEST_PER_SLOT for heap in slot.slowest.values())
        assert set(slot.slowest) <= set(slot.routes)
        for counts in [slot.total, *slot.routes.values()]:
            assert len(counts.statuses) <= STATUS_CODES_PER_ROUTE + 1
    slowest_kept = sum(len(heap) for slot in slots for heap in slot.slowest.values())
    assert slowest_kept <= len(slots) * (ATTACK_MAX_ROUTES + 1) * SLOWEST_PER_SLOT
    kept = [obj for obj in reachable(store) if isinstance(obj, str) and "/atk" in obj]
    assert len(kept) <= 2 * get_state(app).settings.recent_errors + slowest_kept
    assert all(len(text) <= RECENT_ERROR_TEXT_LIMIT for text in kept)
    assert memory_growth < ATTACK_MEMORY_BOUND
    # Loki: one record per request; paths only in the attributes (structured metadata), the
    # resource (where the index labels come from) the same on every record and free of paths.
    assert records == sent
    assert paths_in_attributes == attack_paths
    assert len(resources) == 1
    (resource,) = resources
    assert not [value for _, value in resource if "atk" in str(value) or "/" in str(value)]


# ---------------------------------------------------------------------------------------------------
# 3. The monitoring routes: closed to remote callers, bounded answers
# ---------------------------------------------------------------------------------------------------

TOKEN = "route-token-Vb3q9"
MONITORING = "/monitoring"
DATA_MARKERS = ("routes", "recent_errors", "system_metrics", "telemetry", "internal_failures", "timeline")
REMOTE_PATHS = ("/stats", "/health", "/dashboard", "/", "", "/static/dashboard.js", "/static/dashboard.css")
# Bytes of JSON per element of /monitoring/stats beside its texts (measured: 252, 170 and 121).
STATS_ROUTE_ROW_BYTES = 400  # counters, rates, three latencies; plus the route (max_attribute_length)
RECENT_ERROR_BYTES = 300  # plus the route, and path and user agent clipped to RECENT_ERROR_TEXT_LIMIT
TIMELINE_ENTRY_BYTES = 200
OBJECTIVE_ENTRY_BYTES = 500  # measured: 305, plus the route and the declaration's pattern


@pytest.fixture(scope="module")
def guarded_apps() -> dict[str, Flask]:
    apps = {"no token": demo_app(), "token": demo_app(access_token=TOKEN)}
    for app in apps.values():  # something to leak, if the guard let anything through
        client = app.test_client()
        client.get("/api/products?marker=route-data-marker")
        client.get("/route-data-marker/unknown")
    return apps


def _is_loopback(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    # ::ffff:127.0.0.1 is how a dual-stack socket shows a local IPv4 client; Python 3.13 calls it
    # loopback, older versions do not. Neither kind of address is drawn as "remote".
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


non_loopback = st.one_of(
    st.just("203.0.113.9"),
    st.ip_addresses().filter(lambda address: not _is_loopback(address)).map(str),
    st.sampled_from(["::ffff:203.0.113.9", "127.0.0.1.evil", "localhost", "0.0.0.0", "", "127.1"]),
)
spoofing_headers = st.lists(
    st.tuples(
        st.sampled_from(["X-Forwarded-For", "X-Real-IP", "Forwarded", "X-Forwarded-Host", "Host"]),
        st.sampled_from(["127.0.0.1", "::1", "for=127.0.0.1", 'for="[::1]"', "localhost", "127.0.0.1, ::1"]),
    ),
    max_size=3,
)
wrong_authorizations = st.one_of(
    st.sampled_from(
        [f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", f"Bearer {TOKEN.upper()}", f"Basic {TOKEN}", TOKEN]
    ),
    st.sampled_from(["Bearer", "Bearer ", "bearer  ", "Bearer \u00e9", "Bearer " + "A" * 50_000]),
    st.text(_no_line_breaks, max_size=40)
    .map(lambda text: "Bearer " + text)
    .filter(lambda header: header.partition(" ")[2].strip() != TOKEN),
)


@settings(hostile, max_examples=max(EXAMPLES // 2, 50))
@given(
    which=st.sampled_from(["no token", "token"]),
    remote_addr=non_loopback,
    sub_path=st.one_of(st.sampled_from(REMOTE_PATHS), url_piece.map(lambda text: "/" + _path_part(text))),
    method=st.sampled_from(["GET", "HEAD", "OPTIONS", "POST"]),
    headers=spoofing_headers,
    authorization=st.one_of(st.none(), wrong_authorizations),
    query=st.one_of(st.just(""), st.sampled_from(["limit=" + "9" * 5000, "limit=-1", "window=0&route=*"])),
)
def test_remote_callers_without_the_token_get_no_monitoring_data(
    guarded_apps: dict[str, Flask],
    *,
    which: str,
    remote_addr: str,
    sub_path: str,
    method: str,
    headers: list[tuple[str, str]],
    authorization: str | None,
    query: str,
) -> None:
    if authorization is not None:
        headers = [*headers, ("Authorization", authorization)]
    app = guarded_apps[which]
    path = MONITORING + sub_path
    response = app.test_client(use_cookies=False).open(
        path + ("?" + query if query else ""),
        method=method,
        headers=headers,
        environ_base={"REMOTE_ADDR": remote_addr},
    )
    body = response.get_data()

    assert not 200 <= response.status_code < 300, (path, response.status_code)
    assert b"route-data-marker" not in body
    for marker in DATA_MARKERS:
        assert f'"{marker}"'.encode() not in body
    if sub_path in REMOTE_PATHS[:4] and method in ("GET", "HEAD"):
        # The routes themselves: a short denial, a challenge when a token would open them; an
        # address that sent too many wrong bearer tokens gets 429 (its guesses are not checked).
        if response.status_code == 429:
            assert which == "token"
            assert authorization is not None
            assert "Retry-After" in response.headers
        else:
            assert response.status_code == (401 if which == "token" or authorization is not None else 403)
            assert ("WWW-Authenticate" in response.headers) == (which == "token")
        assert len(body) <= 64


def fill_store(app: Flask) -> int:
    """Feed the app's store the worst case an attacker cannot even reach: more (method, route) keys
    than ``max_routes``, the longest routes, and full recent-error lists with long paths and agents."""
    state = get_state(app)
    limit = state.settings.max_attribute_length
    long_text = ("x" * limit)[:limit]
    now_ns = time.time_ns()
    fed = 0
    for number in range(state.settings.max_routes + 50):
        route = f"/r{number}/" + long_text[: limit - 10]
        for status in (200, 404, 500):
            state.aggregates.record(
                RequestRecord(
                    method="GET",
                    route=route,
                    path="/" + long_text,
                    query="",
                    scheme="http",
                    status_code=status,
                    request_size=10,
                    response_size=100,
                    content_type="application/json",
                    client_address="203.0.113.9",
                    user_agent=long_text,
                    server_address="localhost",
                    duration_ms=0.5 + number,
                    cpu_ms=0.1,
                    end_time_ns=now_ns,
                    trace_id="0" * 31 + "1",
                )
            )
            fed += 1
    return fed


def stats_bound(app: Flask) -> int:
    state = get_state(app)
    settings_ = state.settings
    return (
        4096
        + (settings_.max_routes + 1) * (STATS_ROUTE_ROW_BYTES + settings_.max_attribute_length)
        + 2
        * settings_.recent_errors
        * (RECENT_ERROR_BYTES + settings_.max_attribute_length + 2 * RECENT_ERROR_TEXT_LIMIT)
        + state.aggregates.slot_count * TIMELINE_ENTRY_BYTES
        # With objectives declared: an entry per (method, route) pair and objective kind.
        + 2 * settings_.max_routes * (OBJECTIVE_ENTRY_BYTES + settings_.max_attribute_length)
    )


HEALTH_BOUND = 8 * 1024  # measured: under 1 KiB


def test_monitoring_answers_stay_bounded_with_the_store_full() -> None:
    app = demo_app()
    client = app.test_client()
    empty_dashboard = client.get("/monitoring/dashboard").get_data()
    fed = fill_store(app)
    started = time.perf_counter()
    stats = client.get("/monitoring/stats")
    stats_seconds = time.perf_counter() - started
    health = client.get("/monitoring/health")
    document = stats.get_json()
    print(
        f"\nfull store: {fed} records, {document['tracked_routes']} tracked keys, "
        f"{len(document['routes'])} route rows; /stats {len(stats.get_data()) / 1024:.0f} KiB in "
        f"{stats_seconds * 1000:.0f} ms (bound {stats_bound(app) / 1024:.0f} KiB), "
        f"/health {len(health.get_data())} B"
    )

    assert stats.status_code == 200
    assert document["tracked_routes"] == get_state(app).settings.max_routes
    assert len(document["routes"]) == get_state(app).settings.max_routes + 1  # + <other>
    assert len(document["recent_errors"]) == len(document["recent_client_errors"]) == 50
    assert len(stats.get_data()) <= stats_bound(app)
    assert health.status_code == 200
    assert len(health.get_data()) <= HEALTH_BOUND
    # The page carries no data (the script fetches the JSON): its size does not depend on the store.
    assert client.get("/monitoring/dashboard").get_data() == empty_dashboard


def _stable(document: dict[str, Any]) -> dict[str, Any]:
    return {
        "keys": sorted(document),
        "routes": [(row["method"], row["route"], row["requests"]) for row in document.get("routes", [])],
        "errors": [(error["path"], error["status_code"]) for error in document.get("recent_errors", [])],
    }


@pytest.mark.parametrize(
    "query",
    [
        "limit=" + "9" * 10_000,
        "limit=-1&limit=0&limit=1e309",
        "window=999999999&slot=0&route=%2F&format=csv&pretty=1&callback=alert",
        "&".join(f"p{number}={number}" for number in range(2_000)),
        "x=" + "%zz%ff" * 20_000,
    ],
    ids=["huge-limit", "odd-limits", "unknown-options", "2000-params", "120KB-malformed"],
)
def test_query_parameters_on_the_monitoring_routes_change_nothing(query: str) -> None:
    app = demo_app()
    client = app.test_client()
    fill_store(app)
    for path, bound in (("/monitoring/stats", stats_bound(app)), ("/monitoring/health", HEALTH_BOUND)):
        plain = client.get(path)
        started = time.perf_counter()
        queried = client.get(f"{path}?{query}")
        seconds = time.perf_counter() - started

        assert queried.status_code == plain.status_code == 200
        assert _stable(queried.get_json()) == _stable(plain.get_json())
        assert len(queried.get_data()) <= bound
        # A deadline, not a speed target (those live in benchmarks/): 4-35 ms measured, 0.4 s for
        # 120 KB (werkzeug decoding the URL); work growing with the square of the query would take
        # minutes.
        assert seconds < 30.0
    # Only a JSONP-style callback could turn the JSON into script; none is honoured.
    assert client.get("/monitoring/stats?callback=alert").mimetype == "application/json"
