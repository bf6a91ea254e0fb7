"""Instructions per request under valgrind's callgrind: the overhead ratio without the noise.

CPU time on a shared 2-core VM swings by +-30 % from one round to the next, so the ratio of two
variants of ``overhead.py`` moves by several hundredths between runs. Callgrind counts the
instructions the whole process executes (every thread: the batch exporters' encoding included),
which repeats to the instruction for the same inputs. Each variant runs twice, with a short and a
long series of ``GET /api/products/<id>`` after the same warm-up, each followed by a flush of spans
and logs to a local OTLP/HTTP sink; the difference divided by the extra requests is the cost of one
request, start-up and warm-up cancelled out. Work driven by the clock rather than by requests (the
metric reader's collection, the monitor's psutil sampler) is switched off: valgrind stretches the
long run by a minute, which would charge that work to requests.

    python benchmarks/overhead_instructions.py                      # otel,monitor; 100 and 400 requests
    python benchmarks/overhead_instructions.py --variants bare,otel,monitor,article --short 50 --long 200

Needs ``valgrind`` (Debian package). Slow: about 30 s plus 0.2 s per request per run.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
WARMUP_REQUESTS = 50


def run_child(variant: str, requests: int) -> None:
    sys.path.insert(0, str(HERE))
    import overhead

    from otel_flask_monitor.system_metrics import process_sampler

    # Time-driven work (the monitor's psutil sample every 5 s) would be charged to the long run,
    # which valgrind stretches by minutes: it is per second, not per request, so it is kept out.
    process_sampler().interval_seconds = 10**6
    app = overhead.build(variant)
    client = app.test_client()
    for index in range(WARMUP_REQUESTS):
        client.get(f"/api/products/{index % 8 + 1}")
    overhead.flush_spans_and_logs()
    for index in range(requests):
        client.get(f"/api/products/{index % 8 + 1}")
    overhead.flush_spans_and_logs()


def count_instructions(variant: str, requests: int, env: dict[str, str]) -> int:
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        variant,
        str(requests),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False, timeout=1800)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"{variant}: callgrind run failed:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variants", default="otel,monitor")
    parser.add_argument("--short", type=int, default=100, help="requests of the short run")
    parser.add_argument("--long", type=int, default=400, help="requests of the long run")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        run_child(arguments.child[0], int(arguments.child[1]))
        return
    if shutil.which("valgrind") is None:
        parser.error("valgrind is not installed (Debian: apt-get install valgrind)")
    if not 0 <= arguments.short < arguments.long:
        parser.error("--short must be smaller than --long")

    sys.path.insert(0, str(HERE))
    from otlp_sink import OtlpSink

    per_request: dict[str, float] = {}
    with OtlpSink() as sink:
        env = {name: value for name, value in os.environ.items() if not name.startswith("OTEL_")}
        env |= {
            "OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_SERVICE_NAME": "bench",
            "OTEL_METRIC_EXPORT_INTERVAL": str(3_600_000),  # no periodic collection inside a run
            "PYTHONHASHSEED": "0",
        }
        for variant in (name.strip() for name in arguments.variants.split(",") if name.strip()):
            short = count_instructions(variant, arguments.short, env)
            long = count_instructions(variant, arguments.long, env)
            per_request[variant] = (long - short) / (arguments.long - arguments.short)
            print(
                f"{variant}: {short} / {long} instructions -> {per_request[variant]:,.0f} per request",
                flush=True,
            )

    base = per_request.get("otel")
    print(f"\ninstructions per request ({arguments.short} vs {arguments.long} requests)")
    print(f"{'variant':<12}{'per request':>14}{'x otel':>9}")
    for variant, value in per_request.items():
        ratio = f"{value / base:.3f}" if base else "-"
        print(f"{variant:<12}{value:>14,.0f}{ratio:>9}")
    if base and "monitor" in per_request:
        ratio = per_request["monitor"] / base
        verdict = "met" if ratio <= 1.10 else "MISSED"
        print(f"target monitor / otel = {ratio:.3f} (<= 1.10): {verdict}")
    if "article" in per_request and "monitor" in per_request:
        ratio = per_request["monitor"] / per_request["article"]
        verdict = "met" if ratio <= 0.60 else "MISSED"
        print(f"target monitor / article = {ratio:.3f} (<= 0.60): {verdict}")


if __name__ == "__main__":
    main()
