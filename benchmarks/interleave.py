"""Variant processes driven round by round, so rounds of all variants interleave.

The machine these run on is shared: a neighbour's burst should spread over every variant instead of
landing on whichever happened to run at that moment. Each variant is a child process (global OTel
providers can be set once per process) speaking a line protocol on stdin/stdout: it prints ``ready``
once set up, then answers each ``round`` line with one JSON line.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any


class VariantProcess:
    def __init__(self, name: str, command: Sequence[str], env: dict[str, str], show_stderr: bool) -> None:
        self.name = name
        self.process = subprocess.Popen(
            list(command),
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None if show_stderr else subprocess.DEVNULL,
            text=True,
        )
        line = self._read_line()
        if line != "ready":
            raise RuntimeError(f"variant {name}: expected 'ready', got {line!r}")

    def _read_line(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"variant {self.name} exited with {self.process.wait(timeout=30)}")
        return line.strip()

    def run_round(self) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write("round\n")
        self.process.stdin.flush()
        result: dict[str, Any] = json.loads(self._read_line())
        return result

    def finish(self, timeout_seconds: float = 30) -> dict[str, Any] | None:
        """Close stdin (the child's cue to report and exit); its last JSON line, if it sent one."""
        try:
            rest, _ = self.process.communicate(timeout=timeout_seconds)  # closes stdin first
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
            return None
        lines = [line for line in rest.splitlines() if line.strip()]
        return json.loads(lines[-1]) if lines else None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)


def run_interleaved(
    variants: Sequence[str],
    start: Callable[[str], VariantProcess],
    rounds: int,
    on_round: Callable[[str, dict[str, Any]], None],
    exit_seconds: dict[str, float] | None = None,
) -> dict[str, dict[str, Any] | None]:
    """Start every variant, run ``rounds`` rounds rotating the order, then collect final reports.

    With ``exit_seconds``, each child's exit (its flush at exit) is timed into it.
    """
    processes: list[VariantProcess] = []
    try:
        for name in variants:
            print(f"starting {name} ...", file=sys.stderr, flush=True)
            processes.append(start(name))
        for round_number in range(rounds):
            shift = round_number % len(processes)
            for process in processes[shift:] + processes[:shift]:
                on_round(process.name, process.run_round())
            print(f"round {round_number + 1}/{rounds} done", file=sys.stderr, flush=True)
        finals: dict[str, dict[str, Any] | None] = {}
        for process in processes:
            started = time.monotonic()
            finals[process.name] = process.finish(timeout_seconds=60)
            if exit_seconds is not None:
                exit_seconds[process.name] = time.monotonic() - started
        return finals
    finally:
        for process in processes:
            process.kill()
