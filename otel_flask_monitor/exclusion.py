"""Which requests make no record: the monitor's own routes, ``excluded_paths``, the OTel excluded URLs.

Each exclusion the user configured is counted on the app's diagnostics (``route_excluded``), so
that "why is there no data" has an answer; the monitor's own routes are never counted.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from flask import Request
from opentelemetry.util.http import ExcludeList, get_excluded_urls

from otel_flask_monitor.config import MonitorSettings
from otel_flask_monitor.diagnostics import EXCLUDED_PATHS, EXCLUDED_URLS
from otel_flask_monitor.instrumentation_guard import is_own_path, wsgi_prefix

if TYPE_CHECKING:
    from otel_flask_monitor.diagnostics import Diagnostics


class RequestExclusion:
    """The exclusion rules of one monitor, compiled once."""

    __slots__ = ("_diagnostics", "_excluded_paths", "_excluded_urls", "_own_prefix")

    def __init__(self, settings: MonitorSettings, diagnostics: Diagnostics) -> None:
        self._diagnostics = diagnostics
        self._excluded_paths = (
            re.compile("|".join(f"(?:{p})" for p in settings.excluded_paths))
            if settings.excluded_paths
            else None
        )
        self._excluded_urls: ExcludeList | None = (
            get_excluded_urls("FLASK")
            if os.environ.get("OTEL_PYTHON_FLASK_EXCLUDED_URLS")
            or os.environ.get("OTEL_PYTHON_EXCLUDED_URLS")
            else None
        )
        # The prefix is the monitor's only while its routes are mounted there.
        self._own_prefix = wsgi_prefix(settings.url_prefix) if settings.dashboard_enabled else None

    def is_excluded(self, current: Request) -> bool:
        prefix = self._own_prefix
        if prefix is not None and is_own_path(current.environ.get("PATH_INFO") or "", prefix):
            return True
        if self._excluded_paths is not None and self._excluded_paths.search(current.path):
            self._diagnostics.note_excluded(EXCLUDED_PATHS)
            return True
        if self._excluded_urls is None:
            return False  # the full URL is built only when OTEL_PYTHON_FLASK_EXCLUDED_URLS asks for it
        try:
            excluded = self._excluded_urls.url_disabled(current.url)
        except Exception:
            return False  # an untrusted Host (TRUSTED_HOSTS) makes the URL unreadable
        if excluded:
            self._diagnostics.note_excluded(EXCLUDED_URLS)
        return excluded
