"""eBay's daily revision limit (250 revisions of a listing per calendar day): the pusher's
budget, as a property over any sequence of figures and times."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.pushers.ebay import RevisionBudget

LA = ZoneInfo("America/Los_Angeles")


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@settings(max_examples=200, deadline=None)
@given(
    limit=st.integers(min_value=2, max_value=40),
    start=st.integers(min_value=1_767_225_600, max_value=1_798_761_600),  # 2026
    steps=st.lists(
        st.tuples(st.floats(min_value=0, max_value=3 * 3600), st.integers(0, 60)),
        min_size=1,
        max_size=400,
    ),
)
def test_writes_made_when_the_budget_allows_never_exceed_the_daily_limit(
    limit: int, start: int, steps: list[tuple[float, int]]
) -> None:
    """Invariant: a pusher that writes only when `delay` is 0 spends at most `limit`
    revisions per eBay day (US Pacific), and a figure lower than the last one written is
    never held back while the day has a revision left (stock going down is what prevents
    an oversell)."""
    clock = Clock(float(start))
    budget = RevisionBudget(limit, clock=clock)
    per_day: dict[str, int] = {}
    last: int | None = None
    for dt, quantity in steps:
        clock.now += dt
        day = datetime.fromtimestamp(clock.now, LA).date().isoformat()
        wait = budget.delay("SKU", quantity)
        assert wait >= 0
        spent_today = per_day.get(day, 0)
        if last is not None and quantity < last and spent_today < limit:
            assert wait == 0
        if wait == 0:
            budget.spend("SKU", quantity)
            per_day[day] = spent_today + 1
            last = quantity
        assert per_day.get(day, 0) <= limit
