"""Every intended difference the harnesses accept, and every upstream test it may fail, is in
docs/compatibility.md: the list in the code and the one users read cannot drift apart."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.compat.differences import (
    FLASK_DASHBOARD_EXPECTED_FAILURES,
    INSTRUMENTATION_EXPECTED_FAILURES,
    IntendedDifference,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "compatibility.md"
LISTS = {**INSTRUMENTATION_EXPECTED_FAILURES, **FLASK_DASHBOARD_EXPECTED_FAILURES}
DIFFERENCES = sorted({d for ds in LISTS.values() for d in ds}, key=lambda d: d.title)


@pytest.mark.parametrize("test_id", sorted(LISTS))
def test_each_listed_upstream_test_is_documented(test_id: str) -> None:
    rows = [
        line for line in DOC.read_text(encoding="utf-8").splitlines() if line.startswith(f"| `{test_id}` |")
    ]
    assert rows, f"{test_id} is listed in tests/compat/differences.py but not in {DOC.name}"


@pytest.mark.parametrize("difference", DIFFERENCES, ids=[d.title for d in DIFFERENCES])
def test_each_intended_difference_is_explained(difference: IntendedDifference) -> None:
    """Its title in bold, in the table of what users see change and how to turn it off."""
    assert f"**{difference.title.lower()}**" in DOC.read_text(encoding="utf-8").lower()
