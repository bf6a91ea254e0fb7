"""The error-budget maths against cases worked out by hand."""

from __future__ import annotations

from decimal import Decimal

import pytest

from otel_flask_monitor.burn_rate import BURN_ALERTS, attained_ratio, burn_rate, error_budget_left


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        # (good, total, target) -> (attained ratio, burn rate, budget left)
        # 99.9 %: 1 bad in 1000 is exactly the budget: burn 1, nothing left.
        ((999, 1000, 0.999), (0.999, 1.0, 0.0)),
        # 99.9 %, 5 bad in 1000: 0.5 % / 0.1 % = 5x, four budgets overspent.
        ((995, 1000, 0.999), (0.995, 5.0, -4.0)),
        # 99 %, 1 bad in 400: 0.25 % / 1 % = a quarter of the budget spent.
        ((399, 400, 0.99), (0.9975, 0.25, 0.75)),
        # All good: nothing spent.
        ((50, 50, 0.95), (1.0, 0.0, 1.0)),
        # All bad at 99.5 %: 100 % / 0.5 % = 200x.
        ((0, 10, 0.995), (0.0, 200.0, -199.0)),
    ],
)
def test_figures_from_good_and_total_counts(
    counts: tuple[int, int, float], expected: tuple[float, float, float]
) -> None:
    good, total, target = counts
    attained, burn, left = expected
    assert attained_ratio(good, total) == pytest.approx(attained)
    assert burn_rate(good, total, target) == pytest.approx(burn)
    assert error_budget_left(good, total, target) == pytest.approx(left)


def test_no_requests_is_no_figure_not_zero_or_nan() -> None:
    assert attained_ratio(0, 0) is None
    assert burn_rate(0, 0, 0.999) is None
    assert error_budget_left(0, 0, 0.999) is None


@pytest.mark.parametrize(
    ("good", "total", "target"), [(5, 4, 0.99), (-1, 4, 0.99), (1, 2, 1.0), (1, 2, 0.0), (1, 2, 99.9)]
)
def test_impossible_inputs_are_refused(good: int, total: int, target: float) -> None:
    with pytest.raises(ValueError):
        burn_rate(good, total, target)


def test_the_alert_windows_are_the_workbooks() -> None:
    # SRE workbook "Alerting on SLOs", recommended parameters for a 30-day objective (and Sloth's
    # google-30d.yaml): 2 % of the budget in 1 h, 5 % in 6 h, 10 % in 1 d and in 3 d.
    assert [
        (alert.severity, alert.long_seconds // 60, alert.short_seconds // 60, alert.factor)
        for alert in BURN_ALERTS
    ] == [
        ("page", 60, 5, Decimal("14.4")),
        ("page", 360, 30, Decimal("6")),
        ("ticket", 1440, 120, Decimal("3")),
        ("ticket", 4320, 360, Decimal("1")),
    ]
