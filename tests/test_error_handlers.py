"""The app's error handlers always win over the monitor's JSON 500.

Each case builds the same app twice, with and without the monitor, and asserts the client gets the
same status and body from both; the monitored one also carries the trace id header.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Blueprint, Flask, abort
from werkzeug.exceptions import HTTPException, InternalServerError
from werkzeug.test import TestResponse

from otel_flask_monitor import FlaskMonitor
from tests.support.apps import ShopError

HEX32 = re.compile(r"^[0-9a-f]{32}$")
HANDLED = ("500", "InternalServerError", "HTTPException", "Exception")
_KEYS: dict[str, int | type[Exception]] = {
    "500": 500,
    "InternalServerError": InternalServerError,
    "HTTPException": HTTPException,
    "Exception": Exception,
}


def _add_failing_routes(target: Flask | Blueprint) -> None:
    @target.get("/boom")
    def boom() -> Any:
        raise ShopError("the till is on fire")

    @target.get("/abort")
    def aborted() -> Any:
        abort(500, description="planned outage")

    @target.get("/raise")
    def raised() -> Any:
        raise InternalServerError("raised directly")


def _handler(owner: str) -> Any:
    def answer(error: Exception) -> tuple[str, int]:
        original = getattr(error, "original_exception", None)
        return f"{owner} handler: {type(error).__name__} / {type(original).__name__}", 503

    return answer


def build(
    *, handled: str | None, on: str = "app", order: str = "after", monitor: bool, **options: Any
) -> Flask:
    """``handled``: what the app registers a handler for (None: nothing); ``on``: the app or the
    blueprint; ``order``: before or after ``FlaskMonitor(app)``."""
    app = Flask("error-handlers")
    _add_failing_routes(app)
    blueprint = Blueprint("shop", __name__, url_prefix="/bp")
    _add_failing_routes(blueprint)

    def register_handler() -> None:
        if handled is None:
            return
        target: Flask | Blueprint = app if on == "app" else blueprint
        target.register_error_handler(_KEYS[handled], _handler(on))

    def attach_monitor() -> None:
        if monitor:
            FlaskMonitor(app, dashboard_enabled=False, **options)

    if order == "before":
        register_handler()
        app.register_blueprint(blueprint)
        attach_monitor()
    else:
        attach_monitor()
        register_handler()
        app.register_blueprint(blueprint)
    return app


def _answers(app: Flask, paths: tuple[str, ...]) -> dict[str, tuple[int, bytes]]:
    client = app.test_client()
    answers = {}
    for path in paths:
        response = client.get(path)
        answers[path] = (response.status_code, response.data)
    return answers


def _get(app: Flask, path: str) -> TestResponse:
    return app.test_client().get(path)


PATHS = ("/boom", "/abort", "/raise", "/bp/boom", "/bp/abort", "/bp/raise", "/missing")


@pytest.mark.parametrize("order", ["before", "after"])
@pytest.mark.parametrize("on", ["app", "blueprint"])
@pytest.mark.parametrize("handled", HANDLED)
def test_the_apps_handler_answers_as_without_the_monitor(handled: str, on: str, order: str) -> None:
    monitored = build(handled=handled, on=on, order=order, monitor=True)
    plain = build(handled=handled, on=on, order=order, monitor=False)

    # An app route with only a blueprint handler is the JSON 500's (tested below); all else is the app's.
    compared = PATHS if on == "app" else tuple(p for p in PATHS if p != "/boom")
    assert _answers(monitored, compared) == _answers(plain, compared)
    # The app's handler really was the one answering (not a coincidence of two default pages).
    owner = b"app handler" if on == "app" else b"blueprint handler"
    handled_path = "/boom" if on == "app" else "/bp/boom"
    assert _get(monitored, handled_path).data.startswith(owner)
    for path in PATHS:
        assert HEX32.match(_get(monitored, path).headers["X-Trace-Id"]), path


@pytest.mark.parametrize("handled", ["HTTPException", "Exception"])
def test_a_generic_handler_receives_what_flask_gives_it(handled: str) -> None:
    """Flask's contract: an ``HTTPException`` handler gets the 500 wrapping the unhandled error, an
    ``Exception`` handler gets the error itself; both get ``abort(500)`` directly."""
    app = build(handled=handled, monitor=True)

    wrapped = "InternalServerError / ShopError" if handled == "HTTPException" else "ShopError / NoneType"
    assert _get(app, "/boom").data == f"app handler: {wrapped}".encode()
    assert _get(app, "/abort").data == b"app handler: InternalServerError / NoneType"


def test_without_a_handler_an_unhandled_exception_gets_json_with_the_trace_id() -> None:
    response = _get(build(handled=None, monitor=True), "/boom")

    assert response.status_code == 500
    assert response.is_json
    body = response.get_json()
    assert body["error"] == "Internal Server Error"
    assert body["trace_id"] == response.headers["X-Trace-Id"]
    assert HEX32.match(body["trace_id"])


@pytest.mark.parametrize("path", ["/abort", "/raise", "/missing"])
def test_without_a_handler_http_errors_keep_their_own_body(path: str) -> None:
    monitored = _get(build(handled=None, monitor=True), path)
    plain = _get(build(handled=None, monitor=False), path)

    assert (monitored.status_code, monitored.data) == (plain.status_code, plain.data)
    assert HEX32.match(monitored.headers["X-Trace-Id"])


def test_a_blueprint_handler_leaves_the_apps_own_routes_to_the_json_500() -> None:
    app = build(handled="Exception", on="blueprint", monitor=True)

    assert _get(app, "/bp/boom").data == b"blueprint handler: ShopError / NoneType"
    assert _get(app, "/boom").get_json()["error"] == "Internal Server Error"


def test_json_errors_off_leaves_every_answer_to_flask() -> None:
    monitored = build(handled=None, monitor=True, json_errors=False)
    plain = build(handled=None, monitor=False)

    assert _answers(monitored, PATHS) == _answers(plain, PATHS)
