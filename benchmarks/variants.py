"""The apps the overhead benchmarks compare: one builder per variant, one variant per process.

``overhead.py`` (CPU time) and ``overhead_instructions.py`` (callgrind) serve ``GET
/api/products/<id>`` from these apps; ``http_throughput.py`` serves the shop demo with the same
stock-OTel set-up (``otel_only_demo``). Global OTel providers can be set once per process, so a
process builds exactly one variant, from the environment the harness gives it: the OTLP endpoint
(``OTEL_EXPORTER_OTLP_ENDPOINT``), the article's Loki URL (``ARTICLE_LOKI_URL``) and each variant's
own ``env`` below.

Variants:
  bare             Flask alone.
  otel             What any OTel user pays: FlaskInstrumentor, tracer/logger/meter providers with
                   batch OTLP/HTTP exporters, one 3-attribute log record per request (Logs API).
  monitor          FlaskMonitor(app), default settings: it sets up the providers itself from the
                   same OTEL_* variables.
  article          The source article's approach, no OpenTelemetry at all: a psutil snapshot before
                   and after each request, a JSON line per request into a queue.Queue(maxsize=1000),
                   a thread POSTing each line on its own to Loki's /loki/api/v1/push with requests.
  otel-sampled     otel with OTEL_TRACES_SAMPLER=parentbased_traceidratio, ratio 0.1; still one log
                   record per request, as stock code does.
  monitor-sampled  monitor with the same sampler and OTEL_FLASK_MONITOR_LOG_SAMPLE_RATIO=0.1.
Opt-in (to see where the monitor's cost goes): monitor-no-logs, monitor-no-span-enrich,
monitor-span-enrich, monitor-hooks-only, monitor-objectives, monitor-full-attributes.

Both OTel variants leave the sampler to ``TracerProvider()``, which reads OTEL_TRACES_SAMPLER(_ARG)
through ``opentelemetry.sdk.trace.sampling._get_from_env_or_default``; for
``parentbased_traceidratio`` that is ``ParentBasedTraceIdRatio(0.1)``, the sampler
``opentelemetry-instrument`` builds too (``sdk._configuration._import_sampler`` loads it from the
``opentelemetry_traces_sampler`` entry point of that name). Checked in opentelemetry-sdk 1.45.1;
each child reports its provider's sampler, and the harnesses print it.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from otlp_sink import LOKI_PUSH_PATH

SAMPLED_TRACES = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}
LOG_SAMPLE_RATIO_ENV = "OTEL_FLASK_MONITOR_LOG_SAMPLE_RATIO"
ARTICLE_LOKI_URL_ENV = "ARTICLE_LOKI_URL"


@dataclass
class BuiltApp:
    """An app under test, how to flush what it has queued, and facts for the harness to print."""

    app: Any
    flush: Callable[[], None]
    report: Callable[[], dict[str, Any]] = dict


def build_bare_app() -> Any:
    from flask import Flask

    app = Flask("bench")

    @app.get("/api/products/<int:product_id>")
    def product(product_id: int) -> dict[str, Any]:
        return {"id": product_id, "name": "Mechanical keyboard", "price": 89.99, "stock": 12}

    return app


def setup_otel_providers() -> None:
    """The set-up ``opentelemetry-instrument`` makes from the same variables: three providers."""
    from opentelemetry import metrics, trace
    from opentelemetry._logs import set_logger_provider
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create()
    tracer_provider = TracerProvider(resource=resource)  # sampler from OTEL_TRACES_SAMPLER(_ARG)
    tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(tracer_provider)
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter()))
    set_logger_provider(logger_provider)
    reader = PeriodicExportingMetricReader(OTLPMetricExporter())
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=[reader]))


def instrument_like_stock_otel(app: Any) -> Any:
    """Providers, FlaskInstrumentor and one plain 3-attribute log record per request."""
    from flask import Response, request
    from opentelemetry._logs import SeverityNumber, get_logger
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    setup_otel_providers()
    FlaskInstrumentor().instrument_app(app)
    otel_logger = get_logger("bench")

    @app.after_request
    def log_request(response: Response) -> Response:
        # Inside the server span (registered after the instrumentation), so trace ids are filled in.
        otel_logger.emit(
            severity_number=SeverityNumber.INFO,
            severity_text="INFO",
            body=f"{request.method} {request.path} {response.status_code}",
            attributes={
                "http.request.method": request.method,
                "http.route": request.url_rule.rule if request.url_rule else "",
                "http.response.status_code": response.status_code,
            },
        )
        return response

    return app


def otel_only_demo() -> Any:
    """The shop demo without the monitor, with stock OTel instead (gunicorn: http_throughput.py)."""
    from otel_flask_monitor.demo.app import create_app

    return instrument_like_stock_otel(create_app(monitored=False))


def flush_otel() -> None:
    from opentelemetry import trace
    from opentelemetry._logs import get_logger_provider

    for provider in (trace.get_tracer_provider(), get_logger_provider()):
        flush = getattr(provider, "force_flush", None)
        if flush is not None:
            flush()


def otel_report() -> dict[str, Any]:
    from opentelemetry import trace

    sampler = getattr(trace.get_tracer_provider(), "sampler", None)
    if sampler is None:
        return {"sampler": "none"}
    # ParentBased{root:...,remoteParentSampled:...}: the root sampler is what decides here.
    return {"sampler": sampler.get_description().split(",remoteParent")[0] + ",...}"}


def build_otel() -> BuiltApp:
    return BuiltApp(instrument_like_stock_otel(build_bare_app()), flush_otel, otel_report)


def build_monitor(**options: Any) -> BuiltApp:
    from otel_flask_monitor import FlaskMonitor

    app = build_bare_app()
    FlaskMonitor(app, **options)
    settings = app.extensions["otel_flask_monitor"].settings

    def report() -> dict[str, Any]:
        return otel_report() | {"log_sample_ratio": getattr(settings, "log_sample_ratio", "unknown option")}

    return BuiltApp(app, flush_otel, report)


class ArticleMonitor:
    """The source article's middleware (https://ithelp.ithome.com.tw/articles/10377986, as issue 11
    describes it: request hooks, a psutil snapshot, a queue, one Loki push per line).

    Per request: a psutil snapshot before and after (``cpu_percent()``, ``memory_info()``,
    ``memory_percent()``, ``num_threads()``), a dict of request and response, ``json.dumps`` of it
    into a ``queue.Queue(maxsize=1000)`` (dropped when full, so the request never waits); a daemon
    thread POSTs each line on its own to Loki's push API (labels ``service`` and ``level``) with
    ``requests``. Where the article is silent the cheaper reading is taken, so the reference is not
    inflated: one ``psutil.Process()`` and one keep-alive ``requests.Session`` for the whole process.
    """

    def __init__(self, app: Any, loki_url: str, service: str = "bench") -> None:
        import psutil
        import requests

        self._process = psutil.Process()
        self._session = requests.Session()
        self._push_url = loki_url.rstrip("/") + LOKI_PUSH_PATH
        self._service = service
        self.lines: queue.Queue[tuple[str, str, str]] = queue.Queue(maxsize=1000)
        self.pushed = 0
        self.failed = 0
        self.dropped = 0
        app.before_request(self._before_request)
        app.after_request(self._after_request)
        threading.Thread(target=self._push_forever, name="article-loki-push", daemon=True).start()

    def _system_metrics(self) -> dict[str, Any]:
        memory = self._process.memory_info()
        return {
            "cpu_percent": self._process.cpu_percent(),
            "memory_rss_bytes": memory.rss,
            "memory_vms_bytes": memory.vms,
            "memory_percent": self._process.memory_percent(),
            "num_threads": self._process.num_threads(),
        }

    def _before_request(self) -> None:
        from flask import g

        g.article_started = time.time()
        g.article_start_metrics = self._system_metrics()

    def _after_request(self, response: Any) -> Any:
        from flask import g, request

        duration = time.time() - g.article_started
        status = response.status_code
        level = "error" if status >= 500 else "warning" if status >= 400 else "info"
        entry = {
            "timestamp": time.time(),
            "service": self._service,
            "level": level,
            "request": {
                "method": request.method,
                "path": request.path,
                "url": request.url,
                "remote_addr": request.remote_addr,
                "user_agent": request.headers.get("User-Agent", ""),
                "query_params": dict(request.args),
            },
            "response": {
                "status_code": status,
                "content_length": response.content_length,
                "content_type": response.content_type,
            },
            "performance": {
                "duration_ms": round(duration * 1000, 2),
                "start_metrics": g.article_start_metrics,
                "end_metrics": self._system_metrics(),
            },
        }
        try:
            self.lines.put_nowait((str(time.time_ns()), level, json.dumps(entry)))
        except queue.Full:
            self.dropped += 1
        return response

    def _push_forever(self) -> None:
        import requests

        while True:
            timestamp_ns, level, line = self.lines.get()
            payload = {
                "streams": [
                    {"stream": {"service": self._service, "level": level}, "values": [[timestamp_ns, line]]}
                ]
            }
            try:
                response = self._session.post(self._push_url, json=payload, timeout=5)
                if response.ok:
                    self.pushed += 1
                else:
                    self.failed += 1
            except requests.RequestException:
                self.failed += 1
            finally:
                self.lines.task_done()

    def flush(self) -> None:
        self.lines.join()

    def report(self) -> dict[str, Any]:
        return {"pushed": self.pushed, "failed": self.failed, "dropped": self.dropped}


def build_article() -> BuiltApp:
    app = build_bare_app()
    article = ArticleMonitor(app, os.environ[ARTICLE_LOKI_URL_ENV])
    return BuiltApp(app, article.flush, article.report)


OBJECTIVES = {"default": {"availability": 99.9, "latency": {"threshold_ms": 300, "target": 99}}}


@dataclass(frozen=True)
class Variant:
    build: Callable[[], BuiltApp]
    env: Mapping[str, str] = field(default_factory=dict)
    uses_monitor: bool = False


VARIANTS: dict[str, Variant] = {
    "bare": Variant(lambda: BuiltApp(build_bare_app(), lambda: None)),
    "otel": Variant(build_otel),
    "monitor": Variant(build_monitor, uses_monitor=True),
    "article": Variant(build_article),
    "otel-sampled": Variant(build_otel, SAMPLED_TRACES),
    "monitor-sampled": Variant(build_monitor, SAMPLED_TRACES | {LOG_SAMPLE_RATIO_ENV: "0.1"}, True),
    # Opt-in: the monitor with one consumer switched off or on, to see where its cost goes, or with
    # a latency and an availability objective on the route (docs/objectives.md; needs a monitor that
    # has the `objectives` option).
    "monitor-no-logs": Variant(lambda: build_monitor(emit_logs=False), uses_monitor=True),
    "monitor-no-span-enrich": Variant(lambda: build_monitor(enrich_spans=False), uses_monitor=True),
    "monitor-span-enrich": Variant(lambda: build_monitor(enrich_spans=True), uses_monitor=True),
    "monitor-hooks-only": Variant(
        lambda: build_monitor(emit_logs=False, enrich_spans=False), uses_monitor=True
    ),
    "monitor-objectives": Variant(lambda: build_monitor(objectives=OBJECTIVES), uses_monitor=True),
    # Every log attribute (the record before issue 11's lean default), to see what the default saves.
    "monitor-full-attributes": Variant(lambda: build_monitor(log_attributes="full"), uses_monitor=True),
}
DEFAULT_VARIANTS = ("bare", "otel", "monitor", "article", "otel-sampled", "monitor-sampled")
# numerator, denominator, bound: ratio <= bound passes.
TARGETS = (
    ("monitor", "otel", 1.10),
    ("monitor-sampled", "otel-sampled", 0.90),
    ("monitor", "article", 0.60),
)


def parse_variants(text: str) -> list[str]:
    """Comma-separated names, checked; ValueError naming the unknown ones."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown or not names:
        raise ValueError(
            f"unknown variant(s): {', '.join(unknown) or '(none given)'}; from {', '.join(VARIANTS)}"
        )
    return names


def variant_environment(base: Mapping[str, str], name: str, endpoint: str) -> dict[str, str]:
    """The child's environment: no inherited OTEL_*, the sink as OTLP endpoint and Loki, the variant's own."""
    env = {key: value for key, value in base.items() if not key.startswith("OTEL_")}
    env |= {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_SERVICE_NAME": "bench",
        ARTICLE_LOKI_URL_ENV: endpoint,
    }
    return env | dict(VARIANTS[name].env)


def log_sampling_note(variants: list[str]) -> str | None:
    """A note when a variant asks for log sampling the installed monitor does not have yet."""
    if not any(LOG_SAMPLE_RATIO_ENV in VARIANTS[name].env for name in variants):
        return None
    from otel_flask_monitor.config import OPTIONS

    if any(option.name == "log_sample_ratio" for option in OPTIONS):
        return None
    return (
        "note: the installed otel_flask_monitor has no log_sample_ratio option yet: "
        f"{LOG_SAMPLE_RATIO_ENV} is ignored, monitor-sampled logs every request"
    )


def verdict(label: str, ratio: float, bound: float, *, at_least: bool = False) -> str:
    """``target <label> = <ratio> (<= <bound>): PASS`` or ``MISS``."""
    met = ratio >= bound if at_least else ratio <= bound
    relation = ">=" if at_least else "<="
    return f"target {label} = {ratio:.3f} ({relation} {bound:.2f}): {'PASS' if met else 'MISS'}"


def print_targets(per_variant: Mapping[str, float]) -> None:
    for numerator, denominator, bound in TARGETS:
        if numerator in per_variant and denominator in per_variant:
            ratio = per_variant[numerator] / per_variant[denominator]
            print(verdict(f"{numerator} / {denominator}", ratio, bound))


def print_run_facts(reports: Mapping[str, Mapping[str, Any]], sink_summary: str, note: str | None) -> None:
    """What each variant reported (sampler, pushes), what the sink received, the log-sampling note."""
    print()
    for name, report in reports.items():
        if report:
            print(f"{name}: " + ", ".join(f"{key} {value}" for key, value in report.items()))
    print(f"sink received: {sink_summary}")
    if note:
        print(note)
