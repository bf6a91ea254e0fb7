# The shop demo app under gunicorn, exporting OTLP to the Collector (see docker-compose.yml).
# python 3.12.14 on Debian trixie: docker-library/official-images library/python ("3.12.14-slim-trixie").
FROM python:3.12.14-slim-trixie

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY otel_flask_monitor ./otel_flask_monitor
RUN pip install . "gunicorn>=22.0" \
    && useradd --system --uid 10001 --no-create-home shop

USER shop
EXPOSE 5001

# The Collector's OTLP/HTTP receiver; docker-compose.yml sets the same values.
# OTEL_FLASK_MONITOR_MULTIPROCESS_DIR=auto: the workers share their request windows through files in
# a private directory under the temp dir (/tmp here: TMPDIR is unset, and the image's /tmp is
# world-writable, so the unprivileged `shop` user can create it), so /monitoring/dashboard and
# /monitoring/stats show the whole server, not the one worker that answered (docs/dashboard.md).
ENV OTEL_SERVICE_NAME=shop \
    OTEL_EXPORTER_OTLP_ENDPOINT=http://otel-collector:4318 \
    OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf \
    OTEL_FLASK_MONITOR_MULTIPROCESS_DIR=auto

# Two worker processes (one per CPU of a 2-CPU host: CPU-bound Python work needs a process per core)
# with 4 threads each (gthread; gunicorn's settings reference puts threads at 2-4 x cores): a request
# waiting on a slow route (/api/products/featured sleeps 0.1-0.5 s) holds one thread, not the whole
# worker, so fast routes do not queue behind it (docs/performance.md, HighLoadTester).
# Telemetry providers and psutil gauges stay per worker (service.instance.id differs); Loki and
# Prometheus see the whole fleet. SIGTERM lets each worker finish its requests and flush queued
# telemetry at exit.
CMD ["gunicorn", "--bind", "0.0.0.0:5001", "--worker-class", "gthread", "--workers", "2", "--threads", "4", \
     "--graceful-timeout", "20", "--access-logfile", "-", "otel_flask_monitor.demo.app:create_app()"]
