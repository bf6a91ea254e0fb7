"""Error-budget maths of an objective from good/total request counts: pure functions, no I/O.

- attained ratio: good / total, the share of requests that met the objective;
- error budget: the share allowed to miss it, ``1 - target`` (99.9 % -> 0.001);
- burn rate over a window: (bad / total) / budget. 1 spends the budget exactly over the objective's
  period; 14.4 spends 2 % of a 30-day budget in one hour;
- error budget left over a window: ``1 - burn rate``, the share of the budget those requests allowed
  that is still unspent (negative once overspent).

With no requests every figure is ``None``: no traffic is neither good nor bad (never 0/0 = NaN).

:data:`BURN_ALERTS` holds the multi-window multi-burn-rate alert policy the generated Prometheus
rules implement (docs/objectives.md): the SRE workbook's recommended parameters for a 30-day
objective (https://sre.google/workbook/alerting-on-slos/, "Multiwindow, Multi-Burn-Rate Alerts"),
as Sloth v0.16.0 ships them (internal/alert/windows/google-30d.yaml).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Final, Literal

PERIOD_SECONDS: Final = 30 * 86_400
"""The objectives' period (rolling 30 days): budgets and burn-rate factors are relative to it."""


@dataclass(frozen=True, slots=True)
class BurnAlert:
    """Alert when both windows burn faster than ``factor``: the long window says enough budget is
    gone to matter, the short one that it is still going (so the alert resets soon after a fix)."""

    severity: Literal["page", "ticket"]
    long_seconds: int
    short_seconds: int
    budget_share: Decimal
    """Share of the period's error budget spent within the long window at the threshold."""

    @property
    def factor(self) -> Decimal:
        return (self.budget_share * PERIOD_SECONDS / self.long_seconds).normalize()


BURN_ALERTS: Final = (
    BurnAlert("page", 3_600, 300, Decimal("0.02")),  # 14.4x: 2 % of the budget in 1 h
    BurnAlert("page", 21_600, 1_800, Decimal("0.05")),  # 6x: 5 % in 6 h
    BurnAlert("ticket", 86_400, 7_200, Decimal("0.10")),  # 3x: 10 % in 1 d
    BurnAlert("ticket", 259_200, 21_600, Decimal("0.10")),  # 1x: 10 % in 3 d
)


MIN_REQUESTS: Final = 10
"""Requests an alert's long window must hold before it may fire (the generated rules'
``--min-requests`` default; the live ``burning`` flag's too): a nearly idle route does not page on
its first failure."""


def _check(good: int, total: int) -> None:
    if good < 0 or total < 0 or good > total:
        raise ValueError(f"need 0 <= good <= total, got good={good}, total={total}")


def _budget(target_ratio: float) -> float:
    if not 0 < target_ratio < 1:
        raise ValueError(f"target_ratio must be in (0, 1), got {target_ratio}")
    return 1.0 - target_ratio


def attained_ratio(good: int, total: int) -> float | None:
    """Share of requests that met the objective; ``None`` without requests."""
    _check(good, total)
    return good / total if total else None


def burn_rate(good: int, total: int, target_ratio: float) -> float | None:
    """How many times faster than the period allows these requests spent the budget."""
    _check(good, total)
    budget = _budget(target_ratio)
    if not total:
        return None
    return (total - good) / total / budget


def error_budget_left(good: int, total: int, target_ratio: float) -> float | None:
    """Share of the error budget these requests allowed that is unspent: 1 untouched, 0 spent,
    negative overspent; ``None`` without requests."""
    rate = burn_rate(good, total, target_ratio)
    return None if rate is None else 1.0 - rate
