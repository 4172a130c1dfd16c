"""Reconciliation with an ERP/WMS snapshot: atp's on-hand as of the snapshot's own time
against the snapshot's, per SKU (issue 13). Pure: the caller reads the ledger.

A snapshot taken at `as_of` is compared with the SKU's state folded from the events that
occurred at or before `as_of`, so receipts and shipments the warehouse recorded while the
ERP exported (after `as_of`) are not mistaken for drift: they are counted apart, as
`movements_after_as_of`. A correction another reconciliation applied later but for a
snapshot taken no later than this one (`StockReconciled.as_of <= as_of`) says what the
on-hand really was by then, so it counts as of `as_of`: the same drift is never applied twice,
whoever sends the file again. A correction for a snapshot taken *after* this one
(`StockReconciled.as_of > as_of` at the location) supersedes this line: the newer snapshot
already fixed the figure, so an older export processed late must never apply its drift
again (it is reported as `superseded`).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import msgspec

from atp import events as ev
from atp.state import ItemState, evolve_item


class ComparedLine(msgspec.Struct, frozen=True):
    """One SKU at one location: atp's on-hand as of the snapshot (`ledger_on_hand`), the
    snapshot's (`snapshot_on_hand`), `drift = snapshot_on_hand - ledger_on_hand` (units), and
    the net on-hand movement atp recorded there after `as_of` (`movements_after_as_of`);
    `superseded` when a reconciliation of a later snapshot already corrected the SKU there
    (the line is never applied)."""

    sku: str
    ledger_on_hand: int
    snapshot_on_hand: int
    drift: int
    movements_after_as_of: int
    superseded: bool = False


def compare(
    state_as_of: ItemState,
    later: Iterable[ev.ItemEvent],
    location: str,
    as_of: datetime,
    snapshot_on_hand: int,
) -> ComparedLine:
    """The SKU's line: `state_as_of` is its state after every event that occurred at or
    before `as_of`; `later` the events after them, in stream order."""
    ledger_on_hand = state_as_of.at(location).on_hand
    moved = 0
    superseded = False
    state = state_as_of
    for event in later:
        after = evolve_item(state, event)
        delta = after.at(location).on_hand - state.at(location).on_hand
        state = after
        if isinstance(event, ev.StockReconciled) and event.as_of <= as_of:
            # A correction of the figure as of then (see module doc): by the drift it found,
            # even when on-hand stopped at 0; what it could not move was moved since.
            found = delta if event.drift_found is None else event.drift_found
            ledger_on_hand += found
            moved += delta - found
        else:
            moved += delta
            if isinstance(event, ev.StockReconciled) and event.location == location:
                superseded = True
    return ComparedLine(
        sku=state_as_of.sku,
        ledger_on_hand=ledger_on_hand,
        snapshot_on_hand=snapshot_on_hand,
        drift=snapshot_on_hand - ledger_on_hand,
        movements_after_as_of=moved,
        superseded=superseded,
    )


def beyond(line: ComparedLine, tolerance: int) -> bool:
    """Whether the line's drift exceeds `tolerance` units either way and is not superseded
    (what is applied, and what makes the CLI exit 3)."""
    return abs(line.drift) > tolerance and not line.superseded


_AT = ("location", "to_location", "from_location")
_SET_ASIDE = ("holds", "allocations", "moved")


def concerns(event: object, location: str) -> bool:
    """Whether an item event may explain on-hand at `location`: it names `location`
    (`location`, `to_location`, `from_location`, or the location of one of its holds or
    allocations), or it names no location at all (a shortfall, a hold's expiry: the SKU's
    own story). An event naming only other locations does not."""
    named = {getattr(event, field) for field in _AT if hasattr(event, field)}
    for field in _SET_ASIDE:
        named.update(hold.location for hold in getattr(event, field, ()))
    return not named or location in named
