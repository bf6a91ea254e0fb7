"""``python serve_monitored_app.py PORT [reloader]``: a monitored app on Werkzeug's development server
at 127.0.0.1:PORT, the way a user runs one with ``app.run()``; ``reloader`` turns on Flask's debug
mode with its reloader (``app.run(debug=True)``), otherwise ``debug=False``.
"""

from __future__ import annotations

import sys

from flask import Flask

from otel_flask_monitor import FlaskMonitor

app = Flask("served")


@app.get("/work")
def work() -> dict[str, bool]:
    return {"ok": True}


FlaskMonitor(app)

if __name__ == "__main__":
    reloader = sys.argv[2:] == ["reloader"]
    app.run(host="127.0.0.1", port=int(sys.argv[1]), debug=reloader, use_reloader=reloader)
