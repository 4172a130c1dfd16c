"""The read model's documents: what a channel may sell of a SKU, and the item's figures.

Built by the one ATS function (atp.ats) from the same state the reservation check uses, and
stored in the read model as ready-to-serve JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import msgspec

from atp.ats import Availability, all_location_figures, channel_availability, uncovered_claims
from atp.state import ItemState, Policies
from projections.indexes import Membership, hold_changes, hold_memberships, memberships


class AvailabilityView(msgspec.Struct):
    sku: str
    channel: str
    available: int
    status: str
    position: int


class UncoveredView(msgspec.Struct, omit_defaults=True):
    """An order (`order_id`) or a checkout hold (`reservation_id`) whose units on-hand stock
    at the location no longer covers."""

    quantity: int
    order_id: str | None = None
    reservation_id: str | None = None


class LocationFiguresView(msgspec.Struct, omit_defaults=True):
    location: str
    on_hand: int
    allocated: int
    held: int
    damaged: int
    in_transit: int
    incoming: int
    backordered: int
    safety_stock: int
    sellable: int
    active: bool
    over_promised: int = 0
    """Units allocated and held here that on-hand stock does not cover (sellable is 0);
    present only when not 0."""
    uncovered: list[UncoveredView] = []
    """The claims the over-promise leaves uncovered: newest holds, then newest orders."""


class ChannelFiguresView(msgspec.Struct):
    channel: str
    available: int
    status: str
    derivation: dict[str, Any]


class ItemView(msgspec.Struct):
    sku: str
    position: int
    locations: list[LocationFiguresView]
    channels: list[ChannelFiguresView]
    shortfall: int = 0
    """Units channels sold that atp could not cover (orders accepted short), for ops."""


class SkuDocuments(msgspec.Struct, frozen=True):
    """Everything the read model stores for one SKU at one ledger position."""

    sku: str
    position: int
    availability: dict[str, bytes]
    """Channel code -> AvailabilityView JSON (served as is)."""
    item: bytes
    """ItemView JSON."""
    next_expiry: datetime | None
    figures: dict[str, tuple[int, str]] = {}
    """Channel code -> (available, status) on ledger time, for publishing changes."""
    index: tuple[Membership, ...] = ()
    """The SKU's own list indexes (projections.indexes.memberships), from the same figures:
    they replace its previous ones."""
    holds_in: tuple[Membership, ...] = ()
    """Hold memberships to add (projections.indexes.hold_changes)."""
    holds_out: tuple[Membership, ...] = ()
    """Hold memberships to remove."""


_encoder = msgspec.json.Encoder()


def derivation(a: Availability) -> dict[str, Any]:
    return {
        "pool": a.pool,
        "share_percent": a.share_percent,
        "buffer": a.buffer,
        "on_hand_available": a.on_hand_available,
        "backorder_limit": a.backorder_limit,
        "backorder_available": a.backorder_available,
        "low_stock_threshold": a.low_stock_threshold,
        "locations": [
            {
                "location": f.location,
                "sellable": f.sellable,
                "unpromised_incoming": f.unpromised_incoming,
                "active": f.active,
            }
            for f in a.locations
        ],
    }


def item_view(item: ItemState, policies: Policies, now: datetime, position: int) -> ItemView:
    locations = [
        LocationFiguresView(
            location=f.location,
            on_hand=f.on_hand,
            allocated=f.allocated,
            held=f.held,
            damaged=f.damaged,
            in_transit=f.in_transit,
            incoming=f.incoming,
            backordered=f.backordered,
            safety_stock=f.safety_stock,
            sellable=f.sellable,
            active=f.active,
            over_promised=f.over_promised,
            uncovered=_uncovered(item, f.location, f.over_promised, now),
        )
        for f in all_location_figures(item, policies, now)
    ]
    channels = []
    for channel in policies.channels.values():
        a = channel_availability(item, policies, channel, now)
        channels.append(ChannelFiguresView(channel.code, a.available, a.status, derivation(a)))
    return ItemView(
        sku=item.sku,
        position=position,
        locations=locations,
        channels=channels,
        shortfall=sum(item.shortfalls.values()),
    )


def _uncovered(item: ItemState, location: str, units: int, now: datetime) -> list[UncoveredView]:
    if not units:
        return []
    return [
        UncoveredView(c.quantity, order_id=c.id)
        if c.kind == "order"
        else UncoveredView(c.quantity, reservation_id=c.id)
        for c in uncovered_claims(item, location, units, now)
    ]


LEDGER_TIME = datetime.min.replace(tzinfo=UTC)
"""Figures published to channels count a hold until the ledger records its end (release,
commit, or the sweeper's HoldExpired), so each published change carries the position of
the event that caused it and consumers can order them. Reads use the wall clock."""


def sku_documents(
    item: ItemState,
    policies: Policies,
    now: datetime,
    position: int,
    figures: bool = False,
    touched: Mapping[str, str] | None = None,
) -> SkuDocuments:
    """The SKU's documents at `position`: availability per channel, the item view, its
    own list memberships and its holds' membership changes. `touched` (reservation id ->
    channel) names the holds that changed since the SKU was last written; None lists every
    live hold (a rebuild into an empty model). `figures` adds the ledger-time figures that
    are published to channels."""
    view = item_view(item, policies, now, position)
    added, removed = hold_changes(item, touched or {}, now)
    availability = {
        c.channel: _encoder.encode(
            AvailabilityView(item.sku, c.channel, c.available, c.status, position)
        )
        for c in view.channels
    }
    return SkuDocuments(
        sku=item.sku,
        position=position,
        availability=availability,
        item=_encoder.encode(view),
        next_expiry=item.next_live_expiry(now),
        figures=_ledger_figures(item, policies) if figures else {},
        index=memberships(item, {c.channel: c.status for c in view.channels}, now),
        holds_in=hold_memberships(item, now) if touched is None else added,
        holds_out=removed,
    )


def _ledger_figures(item: ItemState, policies: Policies) -> dict[str, tuple[int, str]]:
    figures: dict[str, tuple[int, str]] = {}
    for channel in policies.channels.values():
        a = channel_availability(item, policies, channel, LEDGER_TIME)
        figures[channel.code] = (a.available, a.status)
    return figures


def empty_availability(sku: str, channel: str, position: int) -> bytes:
    """An unknown SKU: 200 with 0 and out_of_stock."""
    return _encoder.encode(AvailabilityView(sku, channel, 0, "out_of_stock", position))


def empty_item(sku: str, policies: Policies, now: datetime, position: int) -> bytes:
    return _encoder.encode(item_view(ItemState(sku=sku), policies, now, position))
