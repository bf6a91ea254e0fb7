"""A monitored app that serves requests while it is imported: under ``gunicorn --preload`` that is the
master, before it forks its workers (tests/test_aggregates_fork.py sets the two variables)."""

from __future__ import annotations

import os

from otel_flask_monitor import get_state
from tests.support.apps import build_app

WARM_UP_ROUTE = os.environ["WARM_UP_ROUTE"]
WARM_UP_REQUESTS = int(os.environ["WARM_UP_REQUESTS"])

app = build_app("preload-warm-up", setup_telemetry=False)
_client = app.test_client()
for _ in range(WARM_UP_REQUESTS):
    _client.get(WARM_UP_ROUTE)
# The master's own store counted them: what its workers must not inherit.
if get_state(app).aggregates.snapshot()["totals"]["requests"] != WARM_UP_REQUESTS:
    raise RuntimeError("the warm-up requests were not recorded in the master")
