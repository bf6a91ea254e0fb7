"""promtool from Debian's ``prometheus`` package (a helper module, not a test file).

The rule tests need the real tool: without it they fail, naming the package (``.ci/run`` installs
it when ``promtool`` is missing).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

TIMEOUT_SECONDS = 120


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: install Debian's `prometheus` package (.ci/run does)")
    return path


def run(*arguments: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *map(str, arguments)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
        cwd=cwd,
        check=False,
    )


def check_rules(path: Path) -> None:
    result = run("check", "rules", path)
    assert result.returncode == 0, f"promtool check rules {path}:\n{result.stdout}{result.stderr}"
    assert "SUCCESS" in result.stdout, result.stdout
