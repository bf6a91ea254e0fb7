"""A clock the test moves: pass it where the monitor takes ``clock`` (``init_app``, the stores)."""

from __future__ import annotations


class FakeClock:
    """Unix seconds that change only when the test says so."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
