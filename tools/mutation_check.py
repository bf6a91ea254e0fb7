"""Hand-written mutations of the behaviours that matter most, each run against the fast tests.

Each mutation replaces one exact snippet of the package by a deliberate bug, in a temporary copy of
the repository, and runs the fast tests there (``pytest -m "not slow"``: no real servers, browsers or
collectors). The report says, per mutation, which tests caught it, or SURVIVED.

    .venv/bin/python tools/mutation_check.py                 # every mutation, one after the other
    .venv/bin/python tools/mutation_check.py --jobs 2        # two copies at a time
    .venv/bin/python tools/mutation_check.py --only S1,S2    # some of them
    .venv/bin/python tools/mutation_check.py --list          # what there is

Why a list and not a mutation-testing library (mutmut, cosmic-ray): those generate every operator
swap in every module, hundreds of mutants of which most touch code no promise depends on, and each
needs a run of the fast tests (about a minute here). A short list of bugs someone could plausibly
write, in the behaviours the product promises, runs in minutes and reads as a specification; a
mutation whose snippet no longer exists fails loudly (STALE) so the list follows the code.

Adding one: append a :class:`Mutation` to :data:`MUTATIONS` with a new id, the behaviour it breaks,
the exact text to replace and its replacement. The text is looked for in the whole package and must
occur exactly once there, so moving code between modules does not make a mutation stale.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from xml.etree import ElementTree

REPO: Final = Path(__file__).resolve().parent.parent
PACKAGE: Final = "otel_flask_monitor"
# Not copied: the environment and caches; node_modules is linked (the LogQL test would npm ci it).
IGNORED: Final = (".venv", ".git", ".mypy_cache", ".ruff_cache", ".pytest_cache", "test-artifacts")
LINKED: Final = ("tests/logql/node_modules",)
RUN_TIMEOUT_SECONDS: Final = 1800


@dataclass(frozen=True)
class Mutation:
    id: str
    behaviour: str
    description: str
    find: str
    """Replaced where it occurs: exactly once in the whole package, whichever module holds it."""
    replace: str


MUTATIONS: Final = (
    # --- Redaction: nothing secret leaves the process --------------------------------------------
    Mutation(
        "R1",
        "redaction",
        "a captured secret header's value is kept",
        "return REDACTED if self.is_secret_header(name) else value",
        "return value",
    ),
    Mutation(
        "R2",
        "redaction",
        "a secret query parameter's value is kept",
        "if self.is_secret_query_param(name)\n                else quote(",
        "if False\n                else quote(",
    ),
    Mutation(
        "R3",
        "redaction",
        "query parameter names are matched case-sensitively (Token=, API_KEY= pass)",
        "re.IGNORECASE",
        "0",
    ),
    Mutation(
        "R4",
        "redaction",
        "the span keeps the instrumentation's raw query string",
        "        if query:\n            for key in _QUERY_BEARING_ATTRIBUTES:",
        "        if False:\n            for key in _QUERY_BEARING_ATTRIBUTES:",
    ),
    # --- JSON 500 ------------------------------------------------------------------------------
    Mutation(
        "J1",
        "JSON 500",
        "an unhandled exception gets Flask's HTML 500",
        "return jsonify(body), 500",
        "return error",
    ),
    Mutation(
        "J2",
        "JSON 500",
        "the JSON 500 carries no trace id",
        'body["trace_id"] = trace_id',
        "pass",
    ),
    Mutation(
        "J3",
        "JSON 500",
        "the app's own 500 handler is replaced",
        "if app.error_handler_spec.get(None, {}).get(500):\n        return",
        "if False:\n        return",
    ),
    Mutation(
        "J4",
        "JSON 500",
        "abort(500) loses its own body",
        "        if original is None or isinstance(original, HTTPException):\n"
        "            return error  # abort(500) and friends keep their own body\n",
        "",
    ),
    # --- Severity mapping ------------------------------------------------------------------------
    Mutation(
        "S1",
        "severity",
        "4xx logged as INFO",
        'return SeverityNumber.WARN, "WARN"',
        'return SeverityNumber.INFO, "INFO"',
    ),
    Mutation(
        "S2",
        "severity",
        "4xx severity text WARNING instead of WARN",
        'return SeverityNumber.WARN, "WARN"',
        'return SeverityNumber.WARN, "WARNING"',
    ),
    Mutation(
        "S3",
        "severity",
        "an exception answered with a non-5xx status is not an error",
        "    if record.is_server_error:\n        return SeverityNumber.ERROR",
        "    if record.status_code >= 500:\n        return SeverityNumber.ERROR",
    ),
    Mutation(
        "S4",
        "severity",
        "status 400 is not a warning (off by one)",
        "if record.status_code >= 400:",
        "if record.status_code > 400:",
    ),
    Mutation(
        "S5",
        "severity",
        "status 500 without an exception is not an error (off by one)",
        "return self.status_code >= 500 or self.exception is not None",
        "return self.status_code > 500 or self.exception is not None",
    ),
    # --- Loopback access to the monitoring routes --------------------------------------------------
    Mutation(
        "A1",
        "loopback access",
        "forwarding headers naming a remote client are ignored",
        "        and all(is_loopback(address) for address in _forwarded_addresses(request))\n",
        "",
    ),
    Mutation(
        "A2",
        "loopback access",
        "private-network addresses count as local",
        'return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback',
        'return ipaddress.ip_address(host.split("%", 1)[0]).is_private',
    ),
    Mutation(
        "A3",
        "loopback access",
        "every caller is let in without a token",
        "        return is_local_request(request, settings.loopback_hosts)",
        "        return True",
    ),
    Mutation(
        "A4",
        "loopback access",
        "a wrong bearer token is accepted",
        "return hmac.compare_digest(supplied.encode(), token.encode())",
        "return bool(supplied)",
    ),
    # --- Exactly one record per request -----------------------------------------------------------
    Mutation(
        "E1",
        "exactly-once records",
        "every record is dispatched twice",
        # One line, whatever its indentation: dispatch returns None, so both calls run.
        "self._dispatcher.dispatch(record)\n",
        "self._dispatcher.dispatch(record) or self._dispatcher.dispatch(record)\n",
    ),
    Mutation(
        "E2",
        "exactly-once records",
        "the monitoring routes record their own requests",
        '        if prefix is not None and is_own_path(current.environ.get("PATH_INFO") or "", prefix):\n'
        "            return True\n",
        "",
    ),
    Mutation(
        "E3",
        "exactly-once records",
        "a request whose view raises (exceptions propagating) produces no record",
        "            record = self._build_record(in_flight, exc)\n",
        "            if exc is not None:\n"
        "                return\n"
        "            record = self._build_record(in_flight, exc)\n",
    ),
    # --- Failure isolation: a broken monitor never reaches the request ------------------------------
    Mutation(
        "F1",
        "failure isolation",
        "the dispatcher stops after the first consumer that raises",
        '                self._failures.report(f"consumer {name!r}")\n',
        '                self._failures.report(f"consumer {name!r}")\n                return\n',
    ),
    Mutation(
        "F2",
        "failure isolation",
        "a teardown hook failure reaches the request",
        '        except Exception:\n            self._failures.report("teardown_request hook")',
        "        except Exception:\n            raise",
    ),
    Mutation(
        "F3",
        "failure isolation",
        "a before_request hook failure reaches the request",
        '        except Exception:\n            self._failures.report("before_request hook")',
        "        except Exception:\n            raise",
    ),
    Mutation(
        "F4",
        "failure isolation",
        "every internal failure is logged with its traceback, not only the first",
        "        if count == 1:",
        "        if count >= 1:",
    ),
    Mutation(
        "F5",
        "failure isolation",
        "an exporter that raises is not counted as failed (the exception escapes to the SDK)",
        'health.note_error(f"{type(error).__name__}: {error}")',
        "raise",
    ),
    # --- Log sampling: what matters is never sampled away, and the rest is weighed right -----------
    Mutation(
        "L1",
        "log sampling",
        "an unhandled exception answered with a non-5xx status is sampled like any request",
        "if self._ratio >= 1.0 or record.is_server_error:",
        "if self._ratio >= 1.0 or record.status_code >= 500:",
    ),
    Mutation(
        "L2",
        "log sampling",
        "the log sampler keeps other trace ids than TraceIdRatioBased (the high bits instead of the low 64)",
        "kept = int(record.trace_id, 16) & TraceIdRatioBased.TRACE_ID_LIMIT < self._bound",
        "kept = int(record.trace_id, 16) >> 64 < self._bound",
    ),
    Mutation(
        "L3",
        "log sampling",
        "sampled records carry the ratio as sample_rate instead of its inverse",
        "self._sampled_rate = 1.0 / ratio",
        "self._sampled_rate = ratio",
    ),
)


@dataclass(frozen=True)
class Outcome:
    mutation: Mutation | None
    status: str
    """CAUGHT, SURVIVED, STALE (snippet not found exactly once) or BROKEN (the run itself failed)."""
    caught_by: tuple[str, ...]
    seconds: float
    detail: str = ""


def copy_repository(destination: Path) -> Path:
    root = destination / "repo"
    shutil.copytree(REPO, root, ignore=shutil.ignore_patterns(*IGNORED, "__pycache__", "node_modules"))
    for relative in LINKED:
        if (REPO / relative).exists():
            (root / relative).symlink_to(REPO / relative, target_is_directory=True)
    return root


def apply(mutation: Mutation, root: Path) -> str | None:
    """Apply the mutation in the copy; the reason it cannot be applied, or None."""
    package = root / PACKAGE
    holders = {path: path.read_text(encoding="utf-8") for path in sorted(package.rglob("*.py"))}
    found = {path: text.count(mutation.find) for path, text in holders.items() if mutation.find in text}
    if sum(found.values()) != 1:
        places = "".join(f"; {path.relative_to(root)}: {count}" for path, count in found.items())
        return f"the snippet occurs {sum(found.values())} times in {PACKAGE}, expected once{places}"
    (target,) = found
    target.write_text(holders[target].replace(mutation.find, mutation.replace), encoding="utf-8")
    return None


def failed_tests(report: Path) -> tuple[str, ...]:
    failed = []
    for case in ElementTree.parse(report).getroot().iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            module = case.get("classname", "").replace(".", "/")
            failed.append(f"{module}.py::{case.get('name')}")
    return tuple(failed)


def run_fast_tests(root: Path) -> tuple[int, tuple[str, ...], str]:
    report = root / "mutation-report.xml"
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-m",
            "not slow",
            "-p",
            "no:randomly",
            "-p",
            "no:cacheprovider",
            "-q",
            "--tb=no",
            f"--junitxml={report}",
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECONDS,
        check=False,
    )
    failed = failed_tests(report) if report.is_file() else ()
    return done.returncode, failed, (done.stdout + done.stderr)[-2000:]


def check(mutation: Mutation | None) -> Outcome:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mutation-") as temporary:
        root = copy_repository(Path(temporary))
        if mutation is not None:
            problem = apply(mutation, root)
            if problem is not None:
                return Outcome(mutation, "STALE", (), time.monotonic() - started, problem)
        # The copy's package, not the editable install's: PYTHONPATH comes first.
        code, failed, output = run_fast_tests(root)
    seconds = time.monotonic() - started
    if code == 0:
        return Outcome(mutation, "SURVIVED", (), seconds)
    if code == 1 and failed:
        return Outcome(mutation, "CAUGHT", failed, seconds)
    return Outcome(mutation, "BROKEN", failed, seconds, f"pytest exited with {code}:\n{output}")


def describe(outcome: Outcome) -> str:
    mutation = outcome.mutation
    assert mutation is not None
    if outcome.status == "CAUGHT":
        shown = ", ".join(f"`{name}`" for name in outcome.caught_by[:3])
        more = len(outcome.caught_by) - 3
        result = f"caught by {shown}" + (f" and {more} more" if more > 0 else "")
    else:
        detail = f" ({outcome.detail.splitlines()[0]})" if outcome.detail else ""
        result = f"**{outcome.status}**{detail}"
    row = (mutation.id, mutation.behaviour, mutation.description, result, f"{outcome.seconds:.0f}")
    return "| " + " | ".join(row) + " |"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", help="comma-separated mutation ids")
    parser.add_argument("--jobs", type=int, default=1, help="copies tested at a time")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    arguments = parser.parse_args()
    selected = list(MUTATIONS)
    if arguments.only:
        wanted = {name.strip() for name in arguments.only.split(",")}
        unknown = wanted - {m.id for m in MUTATIONS}
        if unknown:
            parser.error(f"unknown mutation ids: {sorted(unknown)}")
        selected = [m for m in MUTATIONS if m.id in wanted]
    if arguments.list:
        for mutation in selected:
            print(f"{mutation.id:<4} {mutation.behaviour:<22} {mutation.description}")
        return 0

    started = time.monotonic()
    baseline = check(None)
    if baseline.status != "SURVIVED":  # the unmutated copy must pass, or nothing below means anything
        print(f"the fast tests fail without any mutation ({baseline.status}):\n{baseline.detail}")
        print("\n".join(baseline.caught_by))
        return 2
    print(f"baseline: the fast tests pass on an unmutated copy ({baseline.seconds:.0f} s)", flush=True)
    print("\n| id | behaviour | mutation | result | seconds |\n|---|---|---|---|---|", flush=True)
    outcomes = []
    with ThreadPoolExecutor(max_workers=max(arguments.jobs, 1)) as pool:
        for outcome in pool.map(check, selected):
            outcomes.append(outcome)
            print(describe(outcome), flush=True)
    caught = sum(o.status == "CAUGHT" for o in outcomes)
    print(
        f"\n{caught} of {len(outcomes)} mutations caught; "
        f"{time.monotonic() - started:.0f} s in all (baseline included), --jobs {arguments.jobs}"
    )
    for outcome in outcomes:
        if outcome.status in ("STALE", "BROKEN"):
            assert outcome.mutation is not None
            print(f"\n{outcome.mutation.id} {outcome.status}: {outcome.detail}")
    return 0 if caught == len(outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
