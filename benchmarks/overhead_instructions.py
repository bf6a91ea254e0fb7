"""Instructions per request under valgrind's callgrind: the overhead ratios without the noise.

CPU time on a shared 2-core VM swings by +-30 % from one round to the next, so the ratio of two
variants of ``overhead.py`` moves by several hundredths between runs. Callgrind counts the
instructions the whole process executes in user space (every thread: the batch exporters' encoding
and the article's push thread included; not the kernel's work for its syscalls), which repeats to
within 0.1 % for the same inputs, whatever else runs on the machine. Each variant (the apps of
variants.py) runs twice, with a short and a long series of ``GET /api/products/<id>`` after the
same warm-up, each followed by a flush to a local sink (OTLP/HTTP, Loki push); the difference
divided by the extra requests is the cost of one request, start-up and warm-up cancelled out.
Work driven by the clock rather than by requests is switched off: the batch processors' timed
posts (they post when 512 records are queued and at the flush instead), the metric reader's
collection, the monitor's psutil sampler. Valgrind stretches the long run by minutes, the more the
busier the machine, which would charge that work to requests and make the figure depend on the
load. Python's ``random`` is seeded, so trace ids, and with them the 0.1 trace (and log) sampling
decisions, are the same in every run and every variant; the sampled variants' figures carry the
luck of the same 200 draws at 0.1.

    python benchmarks/overhead_instructions.py          # the six default variants, 100 and 300 requests
    python benchmarks/overhead_instructions.py --variants otel,monitor --short 50 --long 200

Needs ``valgrind`` (Debian package). Slow: a run is about 30 s plus 0.2 s per request, and
``--jobs`` runs (default 2) go in parallel: the six default variants take 4 to 11 minutes on a
2-core machine, with its load.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from otlp_sink import OtlpSink
from variants import (
    DEFAULT_VARIANTS,
    VARIANTS,
    log_sampling_note,
    parse_variants,
    print_run_facts,
    print_targets,
    variant_environment,
)

WARMUP_REQUESTS = 50
# Left at their defaults, the batch processors would post every 1 s (logs) and 5 s (spans) and the
# metric reader collect every 60 s: under valgrind a request takes a good part of a second, so the
# long run would make many more, smaller posts than the short one, as many as the machine's load
# stretches it. Stretched away, posts happen at 512 records or at the flush, by request count alone.
CLOCK_DRIVEN = ("OTEL_BLRP_SCHEDULE_DELAY", "OTEL_BSP_SCHEDULE_DELAY", "OTEL_METRIC_EXPORT_INTERVAL")


def run_child(variant: str, requests: int) -> None:
    random.seed(0)  # the SDK's RandomIdGenerator draws trace ids from the global generator
    if VARIANTS[variant].uses_monitor:
        from otel_flask_monitor.process import PROCESS

        # Time-driven work (the monitor's psutil sample every 5 s) would be charged to the long run,
        # which valgrind stretches by minutes: it is per second, not per request, so it is kept out.
        PROCESS.system_metrics.sampler.interval_seconds = 10**6
    built = VARIANTS[variant].build()
    client = built.app.test_client()
    for index in range(WARMUP_REQUESTS):
        client.get(f"/api/products/{index % 8 + 1}")
    built.flush()
    for index in range(requests):
        client.get(f"/api/products/{index % 8 + 1}")
    built.flush()
    print(json.dumps(built.report()), flush=True)


def count_instructions(variant: str, requests: int, env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """The whole process's instruction count and the child's report."""
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
    lines = done.stdout.strip().splitlines()
    report: dict[str, Any] = json.loads(lines[-1]) if lines else {}
    return int(found.group(1)), report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--variants", default=",".join(DEFAULT_VARIANTS), help=f"comma-separated, from {', '.join(VARIANTS)}"
    )
    parser.add_argument("--short", type=int, default=100, help="requests of the short run")
    parser.add_argument("--long", type=int, default=300, help="requests of the long run")
    parser.add_argument("--jobs", type=int, default=2, help="callgrind runs at once")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        run_child(arguments.child[0], int(arguments.child[1]))
        return
    if shutil.which("valgrind") is None:
        parser.error("valgrind is not installed (Debian: apt-get install valgrind)")
    if not 0 <= arguments.short < arguments.long:
        parser.error("--short must be smaller than --long")
    if arguments.jobs < 1:
        parser.error("--jobs must be at least 1")
    try:
        variants = parse_variants(arguments.variants)
    except ValueError as error:
        parser.error(str(error))

    note = log_sampling_note(variants)
    if note:
        print(note, flush=True)
    started = time.monotonic()
    with OtlpSink() as sink:

        def run(job: tuple[str, int]) -> tuple[int, dict[str, Any]]:
            variant, requests = job
            env = variant_environment(os.environ, variant, sink.endpoint)
            env |= {name: str(3_600_000) for name in CLOCK_DRIVEN}  # milliseconds: never within a run
            env["PYTHONHASHSEED"] = "0"
            counted = count_instructions(variant, requests, env)
            print(f"{variant} x {requests}: {counted[0]:,} instructions", file=sys.stderr, flush=True)
            return counted

        jobs = [(variant, count) for variant in variants for count in (arguments.short, arguments.long)]
        with ThreadPoolExecutor(max_workers=arguments.jobs) as pool:
            counted = dict(zip(jobs, pool.map(run, jobs), strict=True))
        received = sink.summary()

    per_request = {
        variant: (counted[variant, arguments.long][0] - counted[variant, arguments.short][0])
        / (arguments.long - arguments.short)
        for variant in variants
    }
    print(
        f"\ninstructions per request ({arguments.short} vs {arguments.long} requests, "
        f"{time.monotonic() - started:.0f} s wall)"
    )
    print(f"{'variant':<24}{'per request':>14}{'x bare':>9}{'x otel':>9}")
    for variant, value in per_request.items():
        ratios = "".join(
            f"{value / per_request[base]:>9.3f}" if base in per_request else f"{'-':>9}"
            for base in ("bare", "otel")
        )
        print(f"{variant:<24}{value:>14,.0f}{ratios}")
    print()
    print_targets(per_request)
    print_run_facts({variant: counted[variant, arguments.long][1] for variant in variants}, received, note)


if __name__ == "__main__":
    main()
