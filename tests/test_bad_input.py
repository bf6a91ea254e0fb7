"""Malformed and oversized requests: the monitor changes no answer and keeps attributes bounded."""

from __future__ import annotations

from typing import Any

import pytest
from werkzeug.test import Client

from tests.conftest import Exported
from tests.support.apps import build_app

ATTRIBUTE_LIMIT = 1024  # the documented default of max_attribute_length
STACKTRACE_LIMIT = 8192


def answers(client: Client, method: str, path: str, **kwargs: Any) -> tuple[int, bytes]:
    response = client.open(path, method=method, **kwargs)
    return response.status_code, response.get_data()


BAD_REQUESTS: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", "/items/%ff%fe", {}),
    ("GET", "/%E2%28%A1/%00", {}),
    ("GET", "/", {"environ_overrides": {"PATH_INFO": "/\xff\xfe\x80", "QUERY_STRING": "a=\xff"}}),
    ("GET", "/items/1?" + "q=" + "x" * 65536, {}),
    ("GET", "/items/1?" + "&".join(f"k{n}=v" for n in range(5000)), {}),
    ("GET", "/items/1?%zz=%zz&=&&==", {}),
    ("POST", "/items", {"data": b"\xff\xfe{]", "content_type": "application/json"}),
    ("POST", "/items", {"data": b"x" * 200_000, "content_type": "application/octet-stream"}),
    ("GET", "/items/1", {"headers": {"User-Agent": "A" * 100_000}}),
    ("GET", "/items/1", {"headers": {"Host": "h" * 5000}}),
    ("GET", "/items/1", {"headers": {"Content-Length": "not-a-number"}}),
    ("BREW", "/items/1", {}),
    ("HEAD", "/no/route", {}),
    ("OPTIONS", "/items", {}),
]


@pytest.mark.parametrize(("method", "path", "kwargs"), BAD_REQUESTS)
def test_bad_requests_get_the_same_answer_as_without_the_monitor(
    exported: Exported, method: str, path: str, kwargs: dict[str, Any]
) -> None:
    bare = answers(build_app(monitor=False).test_client(), method, path, **kwargs)
    monitored = answers(build_app().test_client(), method, path, **kwargs)

    assert monitored[0] == bare[0]
    assert monitored[0] != 500
    assert monitored[1] == bare[1]
    records = exported.request_logs()
    assert len(records) == 1
    for key, value in (records[0].log_record.attributes or {}).items():
        if isinstance(value, str):
            assert len(value) <= ATTRIBUTE_LIMIT, key
    assert len(str(records[0].log_record.body)) <= ATTRIBUTE_LIMIT + 64


def test_long_exception_messages_and_stack_traces_are_capped(exported: Exported) -> None:
    app = build_app(monitor=False)

    @app.get("/deep/<int:depth>")
    def deep(depth: int) -> str:
        if depth == 0:
            raise ValueError("m" * 50_000)
        return deep(depth - 1)

    from otel_flask_monitor import FlaskMonitor

    FlaskMonitor(app)
    response = app.test_client().get("/deep/200")

    assert response.status_code == 500
    attributes = dict(exported.request_logs()[0].log_record.attributes or {})
    assert len(str(attributes["exception.message"])) <= ATTRIBUTE_LIMIT
    stacktrace = str(attributes["exception.stacktrace"])
    assert len(stacktrace) <= STACKTRACE_LIMIT
    assert stacktrace.startswith("Traceback")
    assert "bytes cut" in stacktrace
    assert stacktrace.endswith("mmmm\n")  # the tail, where the exception line is, is kept


def test_limits_are_configurable(exported: Exported) -> None:
    app = build_app(max_attribute_length=64)
    app.test_client().get("/items/1", headers={"User-Agent": "B" * 500})

    attributes = dict(exported.request_logs()[0].log_record.attributes or {})
    assert attributes["user_agent.original"] == "B" * 61 + "..."
