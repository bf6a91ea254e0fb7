"""Where the monitor's request hooks sit among the app's: right behind the Flask instrumentation's.

Flask stops at the first ``before_request`` function that answers (an auth check's 401): the Flask
instrumentation's (which opens the span) goes first, the monitor's right after it, ahead of the
app's own, even when the app registered its hooks before being instrumented. ``teardown_request``
functions run in reverse: the monitor's goes after the instrumentation's, so it runs before the one
that ends the span.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask

from otel_flask_monitor._otel_compat import is_flask_instrumentation_hook


def place_behind_instrumentation(
    app: Flask, before_request: Callable[[], Any], teardown_request: Callable[[BaseException | None], Any]
) -> bool:
    """Put ``before_request`` right after the instrumentation's and ``teardown_request`` after its;
    True when something moved. Each list is replaced, not changed in place, so a request iterating
    the old one on another thread is not disturbed."""
    moved = False
    before = app.before_request_funcs.get(None, [])
    instrumentation = [f for f in before if is_flask_instrumentation_hook(f)]
    placed = [
        *instrumentation,
        before_request,
        *(f for f in before if f not in instrumentation and f != before_request),
    ]
    if placed != before:
        app.before_request_funcs[None] = placed
        moved = True
    teardown = app.teardown_request_funcs.get(None, [])
    theirs = [i for i, f in enumerate(teardown) if is_flask_instrumentation_hook(f)]
    mine = teardown.index(teardown_request) if teardown_request in teardown else None
    if theirs and mine is not None and mine < theirs[-1]:
        others = [f for f in teardown if f != teardown_request]
        at = others.index(teardown[theirs[-1]]) + 1
        app.teardown_request_funcs[None] = [*others[:at], teardown_request, *others[at:]]
        moved = True
    return moved
