"""Process metrics (psutil) as OpenTelemetry observable instruments, sampled off the request path.

A daemon thread samples the process every few seconds; the instrument callbacks and
``/monitoring/health`` read the latest cached sample, so no request and no metric collection ever
waits on psutil. Instrument names, units and kinds follow the semantic conventions
(``process.*``, ``cpython.gc.*``): sizes and counts that can go down are up-down counters, totals
since start are counters, ratios are gauges.

One sampler and one instrument set per process (:class:`SystemMetrics`, held by
:mod:`otel_flask_monitor.process`), however many apps are monitored. Fork-safe: a ``psutil.Process``
(and the thread) belong to the PID that made them, so after ``fork`` (gunicorn workers) the child
drops the parent's handle and starts its own on first use.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Literal

import psutil
from opentelemetry.metrics import CallbackOptions, Meter, Observation

_logger = logging.getLogger("otel_flask_monitor")

DEFAULT_INTERVAL_SECONDS: Final = 5.0


@dataclass(frozen=True, slots=True)
class ProcessSample:
    """One reading of the process; every field is cheap to read afterwards."""

    pid: int
    time_unix: float
    create_time_unix: float
    cpu_utilization: float
    """CPU time used since the previous sample over wall time and the CPUs available (0..1)."""
    cpu_user_seconds: float
    cpu_system_seconds: float
    memory_rss_bytes: int
    memory_virtual_bytes: int
    memory_utilization: float
    """Resident memory over the machine's physical memory (0..1)."""
    threads: int
    open_file_descriptors: int | None
    """None where the platform has no file descriptors (Windows)."""
    voluntary_context_switches: int
    involuntary_context_switches: int
    gc_collections: tuple[int, ...]
    gc_collected_objects: tuple[int, ...]
    gc_uncollectable_objects: tuple[int, ...]

    def health_dict(self) -> dict[str, float | int | None]:
        """The ``system_metrics`` object of ``/monitoring/health``."""
        return {
            "pid": self.pid,
            "cpu_percent": round(self.cpu_utilization * 100, 2),
            "memory_rss_mb": round(self.memory_rss_bytes / 1_048_576, 2),
            "memory_percent": round(self.memory_utilization * 100, 2),
            "threads": self.threads,
            "open_file_descriptors": self.open_file_descriptors,
            "sampled_at_unix": self.time_unix,
        }


def _available_cpus(process: psutil.Process) -> int:
    try:
        return max(len(process.cpu_affinity()), 1)
    except (AttributeError, psutil.Error, OSError):
        return max(psutil.cpu_count() or os.cpu_count() or 1, 1)


class ProcessSampler:
    """Samples the current process every ``interval_seconds`` in a daemon thread."""

    def __init__(
        self,
        interval_seconds: float = DEFAULT_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.interval_seconds = interval_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._process: psutil.Process | None = None
        self._cpus = 1
        self._total_memory = 1
        self._previous_cpu: tuple[float, float] | None = None
        self._sample: ProcessSample | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def after_fork_in_child(self) -> None:
        """The parent's lock may have been held and its thread does not exist here: start over."""
        self._lock = threading.Lock()
        self._thread = None
        self._stop = threading.Event()

    def latest(self) -> ProcessSample:
        """The newest sample of the current process (takes one first if there is none yet)."""
        sample = self._sample
        if sample is not None and sample.pid == os.getpid():
            self._ensure_thread()
            return sample
        return self.refresh()

    def refresh(self) -> ProcessSample:
        """Sample now (the thread calls this; tests too) and make it the latest."""
        with self._lock:
            sample = self._take_sample_locked()
            self._sample = sample
        self._ensure_thread()
        return sample

    def _take_sample_locked(self) -> ProcessSample:
        pid = os.getpid()
        if self._process is None or self._pid != pid:
            self._process = psutil.Process(pid)
            self._pid = pid
            self._cpus = _available_cpus(self._process)
            self._total_memory = max(psutil.virtual_memory().total, 1)
            self._previous_cpu = None
        process = self._process
        now = self._clock()
        with process.oneshot():
            create_time = process.create_time()
            cpu = process.cpu_times()
            memory = process.memory_info()
            threads = process.num_threads()
            switches = process.num_ctx_switches()
            try:
                fds: int | None = process.num_fds()
            except AttributeError:  # Windows
                fds = None
        cpu_seconds = cpu.user + cpu.system
        # First sample of a process: its average since start, so the first reading is never a 0.
        previous_time, previous_cpu = self._previous_cpu or (create_time, 0.0)
        elapsed = now - previous_time
        utilization = (cpu_seconds - previous_cpu) / (elapsed * self._cpus) if elapsed > 0 else 0.0
        self._previous_cpu = (now, cpu_seconds)
        gc_stats = gc.get_stats()
        return ProcessSample(
            pid=pid,
            time_unix=now,
            create_time_unix=create_time,
            cpu_utilization=min(max(utilization, 0.0), 1.0),
            cpu_user_seconds=cpu.user,
            cpu_system_seconds=cpu.system,
            memory_rss_bytes=memory.rss,
            memory_virtual_bytes=memory.vms,
            memory_utilization=memory.rss / self._total_memory,
            threads=threads,
            open_file_descriptors=fds,
            voluntary_context_switches=switches.voluntary,
            involuntary_context_switches=switches.involuntary,
            gc_collections=tuple(int(g["collections"]) for g in gc_stats),
            gc_collected_objects=tuple(int(g["collected"]) for g in gc_stats),
            gc_uncollectable_objects=tuple(int(g["uncollectable"]) for g in gc_stats),
        )

    def _ensure_thread(self) -> None:
        thread = self._thread
        if thread is not None and thread.is_alive():
            return
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            if self._stop.is_set():
                return
            self._thread = threading.Thread(target=self._run, name="otel-flask-monitor-sampler", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        stop = self._stop
        failures = 0
        while not stop.wait(self.interval_seconds):
            try:
                self.refresh()
            except Exception:
                failures += 1
                if failures == 1:
                    _logger.warning("otel_flask_monitor: process sampling failed", exc_info=True)

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


Observe = Callable[[ProcessSample], Iterable[tuple[float | int, Mapping[str, str | int] | None]]]


@dataclass(frozen=True, slots=True)
class Instrument:
    """One observable instrument: what kind, its semantic-convention name and unit, and what it
    reads from a sample (values with their attributes)."""

    kind: Literal["gauge", "counter", "up_down_counter"]
    name: str
    unit: str
    description: str
    observe: Observe


def _per_generation(values: Callable[[ProcessSample], tuple[int, ...]]) -> Observe:
    return lambda s: [(value, {"cpython.gc.generation": gen}) for gen, value in enumerate(values(s))]


INSTRUMENTS: Final = (
    Instrument(
        "gauge",
        "process.cpu.utilization",
        "1",
        "CPU time since the previous sample over elapsed time and CPUs available.",
        lambda s: [(s.cpu_utilization, None)],
    ),
    Instrument(
        "counter",
        "process.cpu.time",
        "s",
        "Total CPU seconds by CPU mode.",
        lambda s: [
            (s.cpu_user_seconds, {"cpu.mode": "user"}),
            (s.cpu_system_seconds, {"cpu.mode": "system"}),
        ],
    ),
    Instrument(
        "up_down_counter",
        "process.memory.usage",
        "By",
        "Resident set size.",
        lambda s: [(s.memory_rss_bytes, None)],
    ),
    Instrument(
        "up_down_counter",
        "process.memory.virtual",
        "By",
        "Committed virtual memory.",
        lambda s: [(s.memory_virtual_bytes, None)],
    ),
    Instrument(
        "gauge",
        "process.memory.utilization",
        "1",
        "Resident memory over total physical memory.",
        lambda s: [(s.memory_utilization, None)],
    ),
    Instrument(
        "up_down_counter",
        "process.thread.count",
        "{thread}",
        "Process threads count.",
        lambda s: [(s.threads, None)],
    ),
    Instrument(
        "up_down_counter",
        "process.unix.file_descriptor.count",
        "{file_descriptor}",
        "Open file descriptors.",
        lambda s: [] if s.open_file_descriptors is None else [(s.open_file_descriptors, None)],
    ),
    Instrument(
        "gauge",
        "process.uptime",
        "s",
        "Seconds since the process started.",
        # Computed at collection (cheap); the sample only supplies the start time.
        lambda s: [(max(time.time() - s.create_time_unix, 0.0), None)],
    ),
    Instrument(
        "counter",
        "process.context_switches",
        "{context_switch}",
        "Times the process was context switched.",
        lambda s: [
            (s.voluntary_context_switches, {"process.context_switch.type": "voluntary"}),
            (s.involuntary_context_switches, {"process.context_switch.type": "involuntary"}),
        ],
    ),
    Instrument(
        "counter",
        "cpython.gc.collections",
        "{collection}",
        "Times a generation was collected since interpreter start.",
        _per_generation(lambda s: s.gc_collections),
    ),
    Instrument(
        "counter",
        "cpython.gc.collected_objects",
        "{object}",
        "Objects collected in a generation since interpreter start.",
        _per_generation(lambda s: s.gc_collected_objects),
    ),
    Instrument(
        "counter",
        "cpython.gc.uncollectable_objects",
        "{object}",
        "Objects found uncollectable in a generation since interpreter start.",
        _per_generation(lambda s: s.gc_uncollectable_objects),
    ),
)
"""Every process instrument (semantic conventions ``process.*``, ``cpython.gc.*``): sizes and counts
that can go down are up-down counters, totals since start are counters, ratios are gauges."""


def _callback(
    sampler: ProcessSampler, instrument: Instrument
) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def callback(_: CallbackOptions) -> Iterable[Observation]:
        return [Observation(value, attributes) for value, attributes in instrument.observe(sampler.latest())]

    return callback


def register_instruments(meter: Meter, sampler: ProcessSampler) -> None:
    """Create the observable instruments on ``meter``; every callback reads the cached sample."""
    for instrument in INSTRUMENTS:
        create = getattr(meter, f"create_observable_{instrument.kind}")
        create(
            instrument.name,
            [_callback(sampler, instrument)],
            unit=instrument.unit,
            description=instrument.description,
        )


class SystemMetrics:
    """The process's sampler and instruments: one set per process, however many apps."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sampler = ProcessSampler()
        self.instruments_registered = False

    def start(self, meter: Meter) -> ProcessSampler:
        """Start the sampler and register the instruments, once per process; later calls are no-ops."""
        with self.lock:
            if not self.instruments_registered:
                self.instruments_registered = True
                register_instruments(meter, self.sampler)
        self.sampler.latest()
        return self.sampler

    def after_fork_in_child(self) -> None:
        self.lock = threading.Lock()
        self.sampler.after_fork_in_child()
