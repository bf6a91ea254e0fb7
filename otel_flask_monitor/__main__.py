"""``python -m otel_flask_monitor``: see :mod:`otel_flask_monitor.cli`."""

from __future__ import annotations

import sys

from otel_flask_monitor.cli import main

if __name__ == "__main__":
    sys.exit(main())
