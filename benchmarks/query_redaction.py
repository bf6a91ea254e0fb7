"""What a huge query string costs the monitor: its work is bounded by `max_attribute_length`.

The redactor parses at most 3 bytes per character of the limit, so a 60 KB query string costs about
what a 3 KB one does. Prints the median time of the redactor alone for each size and the ratio of
the largest to the one just over the bound; then one monitored request with each query, whose
remaining cost is the Flask instrumentation building `request.url` (stock behaviour, not the
monitor's). Usage: python benchmarks/query_redaction.py [--repeat N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from flask import Flask
from werkzeug.test import EnvironBuilder

from otel_flask_monitor import FlaskMonitor
from otel_flask_monitor.config import DEFAULT_REDACTED_QUERY_PARAMS
from otel_flask_monitor.redaction import Redactor

LIMIT = 1024
SIZES = (200, 3 * LIMIT, 60_000)


def query_of(size: int) -> bytes:
    parameters = []
    number = 0
    while sum(len(p) + 1 for p in parameters) < size:
        parameters.append(f"p{number}={'v' * 40}")
        number += 1
    return ("token=secret-value&" + "&".join(parameters)).encode()[:size]


def median_ms(work: Callable[[], object], repeat: int) -> float:
    timings = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200)
    arguments = parser.parse_args()
    redactor = Redactor([], DEFAULT_REDACTED_QUERY_PARAMS)
    app = Flask("query-bench")

    @app.get("/x")
    def x() -> str:
        return "ok"

    FlaskMonitor(app, setup_telemetry=False, emit_logs=False)
    redactor_ms: dict[int, float] = {}
    for size in SIZES:
        query = query_of(size)
        redactor_ms[size] = median_ms(lambda q=query: redactor.query(q, LIMIT), arguments.repeat)
        environ = EnvironBuilder(path="/x", query_string=query.decode()).get_environ()

        def request(environ: dict[str, object] = environ) -> None:
            body = app.wsgi_app(dict(environ), lambda status, headers, exc_info=None: None)
            body.close()  # type: ignore[attr-defined]

        request_ms = median_ms(request, max(arguments.repeat // 4, 5))
        print(f"query {size:>6} bytes: redactor {redactor_ms[size]:.3f} ms, ", end="")
        print(f"monitored request {request_ms:.2f} ms")
    ratio = redactor_ms[SIZES[-1]] / redactor_ms[SIZES[1]]
    print(f"ratio redactor 60 KB / 3 KB: {ratio:.2f} (bounded work: about 1)")


if __name__ == "__main__":
    main()
