"""The shop demo: a small product API with the monitor attached (``python -m otel_flask_monitor.demo``)."""

from __future__ import annotations

from otel_flask_monitor.demo.app import create_app

__all__ = ["create_app"]
