# The shop demo app under gunicorn, exporting OTLP to the Collector (see docker-compose.yml).
FROM python:3.12-slim

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
ENV OTEL_SERVICE_NAME=shop \
    OTEL_EXPORTER_OTLP_ENDPOINT=http://otel-collector:4318 \
    OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf

# Two workers, each its own process: telemetry providers, psutil gauges and the in-memory aggregates
# are per worker (service.instance.id differs); Loki and Prometheus see the whole fleet.
# SIGTERM lets each worker finish its requests and flush queued telemetry at exit.
CMD ["gunicorn", "--bind", "0.0.0.0:5001", "--workers", "2", "--graceful-timeout", "20", \
     "--access-logfile", "-", "otel_flask_monitor.demo.app:create_app()"]
