"""The read model's list indexes: which ordered lists each SKU belongs to, so the planner's
lists (`GET /v1/items`, `GET /v1/reservations`, `GET /v1/safety-stock`) page through the read
model in a stable order instead of scanning the ledger.

Every index is an ordered set of members (a SKU, or `<sku>` US `<reservation id>` for a live
hold), ordered by the members' bytes. A SKU's own memberships (catalog, statuses, locations,
safety) are computed with its documents (same state, same ATS figures, same position) and
replace its previous ones as a whole, so an index never disagrees with the documents it
lists. Its holds' memberships change one hold at a time (`hold_changes`): only the holds an
event or an expiry touched are looked at, so a hot SKU with 10,000 live holds costs the same
to project as one with 10 (issue 12). Names (docs/read-model.md):

    catalog                    every projected SKU
    status:<channel>:<status>  SKUs whose figure on `channel` has `status` (in_stock,
                               low_stock, out_of_stock, backorder)
    location:<code>            SKUs with a stock record at location `code`
    safety                     SKUs with a SKU-level safety-stock rule
    holds                      `<sku>` US `<reservation id>` of every live hold
    holds:<channel>            the same, for holds made by `channel`
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from atp.state import ItemState

SEPARATOR = "\x1f"
"""Between a SKU and a reservation id in a hold's member (never part of a code)."""

CATALOG = "catalog"
SAFETY = "safety"
HOLDS = "holds"

Membership = tuple[str, str]
"""(index name, member)."""


def status_index(channel: str, status: str) -> str:
    """The index of SKUs whose figure on `channel` has `status`."""
    return f"status:{channel}:{status}"


def location_index(location: str) -> str:
    """The index of SKUs with a stock record at `location`."""
    return f"location:{location}"


def holds_index(channel: str | None = None) -> str:
    """The index of live holds (of `channel`'s holds when given)."""
    return HOLDS if channel is None else f"{HOLDS}:{channel}"


def hold_member(sku: str, reservation_id: str) -> str:
    """A live hold's member: `<sku>` US `<reservation id>` (a SKU's holds sort together)."""
    return f"{sku}{SEPARATOR}{reservation_id}"


def split_hold(member: str) -> tuple[str, str]:
    """(sku, reservation id) of a hold's member."""
    sku, _, reservation_id = member.partition(SEPARATOR)
    return sku, reservation_id


def memberships(item: ItemState, statuses: dict[str, str], now: datetime) -> tuple[Membership, ...]:
    """The SKU's own indexes (catalog, statuses, locations, safety), given each channel's
    status (`statuses`, channel -> status, as computed by atp.ats for the same documents).
    Its holds' memberships are `hold_changes`' (O(1) per touched hold, not O(holds))."""
    sku = item.sku
    found: list[Membership] = [(CATALOG, sku)]
    found += [(status_index(c, status), sku) for c, status in statuses.items()]
    found += [(location_index(code), sku) for code in item.locations]
    if item.safety_stock:
        found.append((SAFETY, sku))
    return tuple(found)


def hold_memberships(item: ItemState, now: datetime) -> tuple[Membership, ...]:
    """Every live hold's memberships (`holds` and `holds:<channel>`): holds expired by `now`
    are no longer listed. O(holds): for a rebuild, which writes each SKU once."""
    found: list[Membership] = []
    for hold in item.holds.unordered():
        if hold.expires_at > now:
            member = hold_member(item.sku, hold.reservation_id)
            found += [(HOLDS, member), (holds_index(hold.channel), member)]
    return tuple(found)


def hold_changes(
    item: ItemState, touched: Mapping[str, str], now: datetime
) -> tuple[tuple[Membership, ...], tuple[Membership, ...]]:
    """(memberships to add, memberships to remove) for the holds `touched` (reservation id ->
    the channel that made it) by events or expiries since the SKU was last written: a hold
    that is live at `now` is listed, one that ended or expired is not."""
    added: list[Membership] = []
    removed: list[Membership] = []
    for reservation_id, channel in touched.items():
        member = hold_member(item.sku, reservation_id)
        hold = item.holds.get(reservation_id)
        if hold is not None and hold.expires_at > now:
            added += [(HOLDS, member), (holds_index(hold.channel), member)]
        else:
            removed += [(HOLDS, member), (holds_index(channel), member)]
    return tuple(added), tuple(removed)


def prefix_end(prefix: str) -> str:
    """The smallest string after every string that starts with `prefix` ("" for no bound).

    Codes are ASCII (api.http.schemas.CODE_PATTERN), so U+00FF sorts after each of their
    characters, in Python's order and in the order of their UTF-8 bytes (Redis)."""
    return prefix + "\xff" if prefix else ""
