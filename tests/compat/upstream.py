"""Run an upstream project's own test suite, unmodified, with the monitor attached.

The sdist of the version installed in this environment is downloaded from the package registry
(``pip download --no-binary :all: --no-deps``) and unpacked under ``.cache/compat/`` (git-ignored).
Its tests run in a subprocess of an *overlay* virtual environment: it holds only the upstream test
tools at their upstream pins (pytest, test utilities), and a ``.pth`` file appends this
environment's site-packages after them, so Flask, Werkzeug, OpenTelemetry and the monitor are
exactly the installed ones and the project's own test environment is never changed. The overlay is
rebuilt only when its recipe changes. Results are read from the run's junit XML.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from tests.compat.differences import WALL_CLOCK_ASSERTIONS, IntendedDifference

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache" / "compat"
PLUGIN_DIR = Path(__file__).resolve().parent / "plugin"
PLUGIN = "otel_flask_monitor_compat"
RUN_TIMEOUT_SECONDS = 600
# What the suites must import from this environment, not from the overlay.
SHARED_DISTRIBUTIONS = (
    "flask",
    "werkzeug",
    "opentelemetry-api",
    "opentelemetry-sdk",
    "opentelemetry-instrumentation",
    "opentelemetry-instrumentation-flask",
    "opentelemetry-instrumentation-wsgi",
    "opentelemetry-util-http",
    "opentelemetry-semantic-conventions",
    "otel-flask-monitor",
)


class CompatSetupError(RuntimeError):
    """The harness could not get or run the upstream suite (never a verdict on the monitor)."""


def installed_version(distribution: str) -> str:
    return metadata.version(distribution)


# -- the sources -----------------------------------------------------------------------------------


def upstream_source(distribution: str, version: str) -> Path:
    """The unpacked sdist of ``distribution==version`` (downloaded once, then reused)."""
    with _locked(f"source-{distribution}-{version}"):
        sdists = CACHE / "sdists"
        sdists.mkdir(parents=True, exist_ok=True)
        archive = _find_sdist(sdists, distribution, version)
        if archive is None:
            _download_sdist(distribution, version, sdists)
            archive = _find_sdist(sdists, distribution, version)
            if archive is None:
                raise CompatSetupError(f"pip download saved no sdist of {distribution}=={version}")
        target = CACHE / "src" / archive.name.removesuffix(".tar.gz")
        if not (target / ".unpacked").exists():
            shutil.rmtree(target, ignore_errors=True)
            _unpack(archive, target)
            (target / ".unpacked").touch()
        return target


def _normalized(name: str) -> str:
    return name.lower().replace("-", "_").replace(".", "_")


def _find_sdist(directory: Path, distribution: str, version: str) -> Path | None:
    for candidate in directory.glob("*.tar.gz"):
        project, _, candidate_version = candidate.name.removesuffix(".tar.gz").rpartition("-")
        if _normalized(project) == _normalized(distribution) and candidate_version == version:
            return candidate
    return None


def _download_sdist(distribution: str, version: str, directory: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-binary",
        ":all:",
        "--no-deps",
        "--disable-pip-version-check",
        "--dest",
        str(directory),
        f"{distribution}=={version}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    if result.returncode != 0:
        raise CompatSetupError(
            f"could not download the sdist of {distribution}=={version} from the package registry "
            f"({' '.join(command)} exited {result.returncode}):\n{_tail(result.stdout + result.stderr)}"
        )


def _unpack(archive: Path, target: Path) -> None:
    """Unpack the sdist's single top folder into ``target``, refusing paths that leave it."""
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            path = Path(member.name)
            if path.is_absolute() or ".." in path.parts or not (member.isfile() or member.isdir()):
                raise CompatSetupError(f"{archive.name}: unexpected member {member.name!r}")
        if hasattr(tarfile, "data_filter"):  # Python 3.10.12+, 3.11.4+: the safe filter as well
            tar.extractall(staging, filter="data")
        else:  # older patch releases: the members were checked above
            tar.extractall(staging)
    (top,) = staging.iterdir()
    top.rename(target)
    staging.rmdir()


# -- the overlay environment -----------------------------------------------------------------------


@dataclass(frozen=True)
class Overlay:
    """A virtual environment with ``requirements`` (installed with their dependencies) and
    ``no_deps`` (installed alone, their dependencies coming from this environment)."""

    name: str
    requirements: tuple[str, ...]
    no_deps: tuple[str, ...] = ()

    @property
    def path(self) -> Path:
        return CACHE / f"venv-{self.name}-py{sys.version_info.major}.{sys.version_info.minor}"

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    def recipe(self) -> dict[str, Any]:
        return {
            "requirements": list(self.requirements),
            "no_deps": list(self.no_deps),
            "python": sys.version,
            "base": _project_site_dirs(),
            "format": 1,
        }

    def ensure(self) -> Path:
        with _locked(f"venv-{self.name}"):
            stamp = self.path / "overlay.json"
            if not (stamp.exists() and json.loads(stamp.read_text()) == self.recipe()):
                self._build()
                stamp.write_text(json.dumps(self.recipe()))
            self._check_shared_versions()
        return self.python

    def _build(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        _checked([sys.executable, "-m", "venv", "--without-pip", str(self.path)], "create the overlay venv")
        pip = [sys.executable, "-m", "pip", "--python", str(self.python), "install", "--quiet"]
        pip += ["--disable-pip-version-check"]
        _checked([*pip, *self.requirements], f"install {' '.join(self.requirements)}")
        if self.no_deps:
            _checked([*pip, "--no-deps", *self.no_deps], f"install {' '.join(self.no_deps)}")
        # Written last: pip must not see (and never touch) this environment's packages.
        site = _run_python(self.python, "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip()
        lines = [f"import site; site.addsitedir({directory!r})" for directory in _project_site_dirs()]
        (Path(site) / "zz_otel_flask_monitor_project_env.pth").write_text("\n".join(lines) + "\n")

    def _check_shared_versions(self) -> None:
        """The suite must import Flask, OpenTelemetry and the monitor from this environment."""
        script = (
            "import json; from importlib import metadata; "
            "print(json.dumps({d: [metadata.version(d), str(metadata.distribution(d).locate_file(''))] "
            f"for d in {list(SHARED_DISTRIBUTIONS)!r}}}))"
        )
        seen = json.loads(_run_python(self.python, script))
        for distribution, (version, location) in seen.items():
            if version != installed_version(distribution) or Path(location).is_relative_to(self.path):
                raise CompatSetupError(
                    f"overlay {self.name} imports {distribution} {version} from {location}, not the "
                    f"{installed_version(distribution)} of this environment"
                )


def _project_site_dirs() -> list[str]:
    paths = sysconfig.get_paths()
    return list(dict.fromkeys([paths["purelib"], paths["platlib"]]))


def _run_python(python: Path, script: str) -> str:
    result = subprocess.run(
        [str(python), "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    if result.returncode != 0:
        raise CompatSetupError(f"{python} -c ... failed:\n{_tail(result.stdout + result.stderr)}")
    return result.stdout


def _checked(command: Sequence[str], what: str) -> None:
    result = subprocess.run(list(command), capture_output=True, text=True, timeout=600, check=False)
    if result.returncode != 0:
        raise CompatSetupError(f"could not {what}:\n{_tail(result.stdout + result.stderr)}")


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    """Serialises set-up between pytest sessions sharing the cache (two `make test` at once)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f".{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


# -- runs ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One pytest invocation of an upstream suite."""

    name: str
    python: Path
    cwd: Path
    args: tuple[str, ...]
    attach: str = "none"
    options: Mapping[str, Any] = field(default_factory=dict)
    extra_env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    run: Run
    passed: frozenset[str]
    failed: Mapping[str, str]
    """Test id -> first line of the failure or error."""
    skipped: frozenset[str]
    attached: int
    seconds: float

    @property
    def all_tests(self) -> frozenset[str]:
        return self.passed | self.failed.keys() | self.skipped

    def summary(self) -> str:
        return f"{len(self.passed)} passed, {len(self.failed)} failed, {len(self.skipped)} skipped"


def run_all(runs: Sequence[Run]) -> dict[str, Outcome]:
    """Run the invocations in parallel subprocesses (they share nothing but the read-only sources)."""
    workers = max(2, min(len(runs), os.cpu_count() or 2))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        outcomes = list(pool.map(run_suite, runs))
    return {outcome.run.name: outcome for outcome in outcomes}


def run_suite(run: Run) -> Outcome:
    output = CACHE / "runs" / run.name.replace(" ", "_")
    shutil.rmtree(output, ignore_errors=True)
    output.mkdir(parents=True)
    junit, report, log = output / "junit.xml", output / "monitor.json", output / "pytest.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PYTEST_", "PYTHONPATH"))}
    env.update(
        PYTHONPATH=str(PLUGIN_DIR),
        PYTEST_DISABLE_PLUGIN_AUTOLOAD="1",  # nothing of this environment's pytest plugins leaks in
        OFM_COMPAT_ATTACH=run.attach,
        OFM_COMPAT_OPTIONS=json.dumps(dict(run.options)),
        OFM_COMPAT_REPORT=str(report),
        **run.extra_env,
    )
    command = [
        str(run.python),
        "-m",
        "pytest",
        "-p",
        PLUGIN,
        "-p",
        "no:cacheprovider",
        f"--junitxml={junit}",
        "-o",
        "junit_logging=no",
        "-q",
        *run.args,
    ]
    started = time.monotonic()
    with open(log, "w", encoding="utf-8") as handle:
        try:
            result = subprocess.run(
                command,
                cwd=run.cwd,
                env=env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                timeout=RUN_TIMEOUT_SECONDS,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise CompatSetupError(
                f"{run.name}: no result within {RUN_TIMEOUT_SECONDS} s (log: {log})"
            ) from None
    seconds = time.monotonic() - started
    if result.returncode not in (0, 1) or not junit.exists() or not report.exists():
        raise CompatSetupError(
            f"{run.name}: pytest exited {result.returncode} (0 or 1 expected):\n{_tail(log.read_text())}"
        )
    passed, failed, skipped = parse_junit(junit, run.cwd)
    attached = int(json.loads(report.read_text())["attached"])
    return Outcome(run, frozenset(passed), failed, frozenset(skipped), attached, seconds)


def parse_junit(path: Path, root: Path) -> tuple[set[str], dict[str, str], set[str]]:
    passed: set[str] = set()
    failed: dict[str, str] = {}
    skipped: set[str] = set()
    for case in ET.parse(path).getroot().iter("testcase"):
        test_id = _test_id(case.get("classname", ""), case.get("name", ""), root)
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        if problem is not None:
            message = (problem.get("message") or problem.text or "").strip().splitlines()
            failed[test_id] = message[0][:200] if message else "(no message)"
        elif case.find("skipped") is not None:
            skipped.add(test_id)
        else:
            passed.add(test_id)
    return passed, failed, skipped


def _test_id(classname: str, name: str, root: Path) -> str:
    """junit's ``tests.test_cli.TestRoutes`` and ``test_simple`` ->
    ``tests/test_cli.py::TestRoutes::test_simple``."""
    parts = classname.split(".") if classname else []
    for cut in range(len(parts), 0, -1):
        module = Path(*parts[:cut]).with_suffix(".py")
        if (root / module).is_file():
            return "::".join([module.as_posix(), *parts[cut:], name])
    return "::".join([*parts, name]) if parts else name


# -- verdicts --------------------------------------------------------------------------------------

REPORTS: list[str] = []
"""One text block per suite, printed at the end of the session (tests/compat/conftest.py)."""


def is_wall_clock_failure(test: str, message: str) -> bool:
    """``test`` failed on one of upstream's wall-clock assertions (differences.WALL_CLOCK_ASSERTIONS)."""
    pattern = WALL_CLOCK_ASSERTIONS.get(test)
    return pattern is not None and pattern.match(message) is not None


def compare(
    run: Outcome,
    baseline: Outcome,
    expected: Mapping[str, Sequence[IntendedDifference]],
    twin: Outcome | None = None,
) -> list[str]:
    """What in ``run`` is not explained by the ``baseline`` run's own failures or by ``expected``.

    ``twin`` is the same run with the intended differences switched off: a listed test must pass
    there, or something else breaks it too.
    """
    problems = []
    if run.attached == 0:
        problems.append(f"{run.run.name}: the monitor was attached to no app")
    for test in sorted(baseline.all_tests - run.all_tests):
        problems.append(f"{run.run.name}: {test} did not run with the monitor")
    for test in sorted(run.all_tests - baseline.all_tests):
        problems.append(f"{run.run.name}: {test} ran only with the monitor")
    for test in sorted(run.skipped - baseline.skipped - baseline.failed.keys()):
        problems.append(f"{run.run.name}: {test} was skipped only with the monitor")
    for test, message in sorted(run.failed.items()):
        if test in baseline.failed:
            continue  # fails without the monitor too: reported with the baseline, not blamed
        if is_wall_clock_failure(test, message):
            continue  # an upstream timing assertion on a loaded machine: reported, not blamed
        if test not in expected:
            problems.append(f"{run.run.name}: {test} fails only with the monitor: {message}")
        elif twin is not None and test in twin.failed:
            problems.append(
                f"{run.run.name}: {test} is listed as an intended difference but fails without it too "
                f"({twin.run.name}): {twin.failed[test]}"
            )
    for test in sorted(expected):
        if test not in run.failed:
            problems.append(
                f"{run.run.name}: {test} passes: remove it from the intended differences "
                "(tests/compat/differences.py, docs/compatibility.md)"
            )
    return problems


def describe(
    title: str,
    outcomes: Mapping[str, Outcome],
    baseline_names: Sequence[str],
    expected: Mapping[str, Mapping[str, Sequence[IntendedDifference]]],
    wall_seconds: float,
) -> str:
    """The report of one suite: per run its tally, and each failure with why it is not blamed (or is)."""
    lines = [f"{title} (wall time {wall_seconds:.1f} s for {len(outcomes)} runs in parallel)"]
    baseline_failures = {t for name in baseline_names for t in outcomes[name].failed}
    for name, outcome in outcomes.items():
        lines.append(
            f"  {name}: {outcome.summary()}; monitor attached to {outcome.attached} apps; "
            f"{outcome.seconds:.1f} s"
        )
        listed = expected.get(name, {})
        for test, message in sorted(outcome.failed.items()):
            if is_wall_clock_failure(test, message):
                verdict = "upstream's wall-clock assertion on a loaded machine: reported, not blamed"
            elif name in baseline_names:
                verdict = "fails without the monitor: reported, not blamed"
            elif test in baseline_failures:
                verdict = "fails without the monitor too: not blamed"
            elif test in listed:
                verdict = "intended: " + "; ".join(d.title for d in listed[test])
            else:
                verdict = "NOT INTENDED"
            lines.append(f"    {test} [{verdict}] {message}")
        for test in sorted(set(listed) - outcome.failed.keys()):
            lines.append(f"    {test} [listed as an intended difference, but PASSES]")
    return "\n".join(lines)
