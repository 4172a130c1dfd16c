"""The one available-to-sell function, used by reservation decisions and by every read.

Per location: sellable = max(0, on_hand - allocated - held - damaged - safety_stock), less
any backorder promises that expected supply can no longer cover. Per channel: the pool of
its active locations, scaled by share_percent, less the buffer, plus unpromised incoming
supply up to what backorder_limit leaves once the units already promised against incoming
at those locations are counted.

Over-promise: when a physical fact leaves `on_hand` (less damaged units and arrived
backorder promises) below what is allocated and held, the difference is over-promised;
holds are left uncovered before allocations, newest first (orders are sales made, and the
oldest claim was there first).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

from atp.errors import ShortLine
from atp.events import Hold, Uncovered
from atp.state import GLOBAL, Channel, ItemState, Policies

Status = Literal["out_of_stock", "low_stock", "in_stock", "backorder"]


class LocationFigures(msgspec.Struct, frozen=True):
    """One SKU's figures at one location (units), as of a time: on_hand, allocated, held
    (live holds only), damaged, in_transit, incoming and backordered; `sellable` is what
    the location contributes to a channel's pool (0 when it is inactive)."""

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
    unpromised_incoming: int
    active: bool
    over_promised: int = 0
    """Units allocated and held here that on-hand stock does not cover."""


class Availability(msgspec.Struct, frozen=True):
    """What one channel may sell of one SKU, with how the figure was derived."""

    channel: str
    available: int
    status: Status
    pool: int
    on_hand_available: int
    backorder_available: int
    share_percent: int
    buffer: int
    backorder_limit: int
    low_stock_threshold: int
    locations: tuple[LocationFigures, ...]


def _expired_by_location(item: ItemState, now: datetime) -> dict[str, tuple[int, int]]:
    """Units of holds past `expires_at` not yet swept: (regular, backorder) per location."""
    if item.next_expiry is None or now < item.next_expiry:
        return {}
    expired: dict[str, tuple[int, int]] = {}
    for hold in item.holds.unordered():  # sums: no need for the order they were taken in
        if hold.expires_at > now:
            continue
        for h in hold.holds:
            regular, backorder = expired.get(h.location, (0, 0))
            if h.backorder:
                backorder += h.quantity
            else:
                regular += h.quantity
            expired[h.location] = (regular, backorder)
    return expired


def safety_stock_for(item: ItemState, policies: Policies, location: str) -> int:
    """The most specific rule wins: sku+location, sku, location, global, none."""
    for rules, key in (
        (item.safety_stock, location),
        (item.safety_stock, GLOBAL),
        (policies.safety_stock, location),
        (policies.safety_stock, GLOBAL),
    ):
        if key in rules:
            return rules[key]
    return 0


def is_active(policies: Policies, location: str) -> bool:
    """Whether `location` is defined and active (an inactive location sells nothing)."""
    loc = policies.locations.get(location)
    return loc is not None and loc.active


def location_figures(
    item: ItemState,
    policies: Policies,
    location: str,
    now: datetime,
    expired: dict[str, tuple[int, int]] | None = None,
) -> LocationFigures:
    """`LocationFigures` of `item` at `location` at `now` (holds expired by then no longer
    count); `expired` is the per-location expired (regular, backorder) units when the
    caller has already computed them."""
    if expired is None:
        expired = _expired_by_location(item, now)
    stock = item.at(location)
    expired_regular, expired_backorder = expired.get(location, (0, 0))
    held = stock.held - expired_regular
    backordered = stock.backordered - expired_backorder
    safety = safety_stock_for(item, policies, location)
    active = is_active(policies, location)
    # Promises that expected supply can no longer cover (it arrived) fall on on-hand stock.
    uncovered = max(0, backordered - stock.incoming)
    unclaimed = stock.on_hand - stock.allocated - held - stock.damaged - uncovered
    free = unclaimed - safety
    return LocationFigures(
        location=location,
        on_hand=stock.on_hand,
        allocated=stock.allocated,
        held=held,
        damaged=stock.damaged,
        in_transit=stock.in_transit,
        incoming=stock.incoming,
        backordered=backordered,
        safety_stock=safety,
        sellable=max(0, free) if active else 0,
        unpromised_incoming=max(0, stock.incoming - backordered) if active else 0,
        active=active,
        over_promised=max(0, -unclaimed),
    )


def uncovered_claims(
    item: ItemState, location: str, units: int, now: datetime
) -> tuple[Uncovered, ...]:
    """Which claims at `location` the `units` over-promised there leave without stock:
    live holds newest first, then orders' allocations newest first (insertion order of
    `item.holds` and `item.allocations` is the order they were made in). Backorder units
    count only as far as expected supply no longer covers them (the newest promises first)."""
    live = [("hold", rid, h.holds) for rid, h in item.holds.items() if h.expires_at > now]
    claims = [*reversed(live)]
    claims += [("order", oid, allocs) for oid, allocs in reversed(item.allocations.items())]
    promised = sum(
        h.quantity for _, _, hs in claims for h in hs if h.location == location and h.backorder
    )
    budget = max(0, promised - item.at(location).incoming)
    left = units
    named: list[Uncovered] = []
    for kind, ident, holds in claims:
        here = [h for h in holds if h.location == location]
        backorder = min(budget, sum(h.quantity for h in here if h.backorder))
        budget -= backorder
        quantity = sum(h.quantity for h in here if not h.backorder) + backorder
        take = min(left, quantity)
        if take > 0:
            named.append(Uncovered(kind, ident, take))
            left -= take
    return tuple(named)


def all_location_figures(
    item: ItemState, policies: Policies, now: datetime
) -> list[LocationFigures]:
    """Figures for every defined location and every location the SKU has stock at."""
    expired = _expired_by_location(item, now)
    codes = list(policies.locations)
    codes += [code for code in item.locations if code not in policies.locations]
    return [location_figures(item, policies, code, now, expired) for code in codes]


def status_for(available: int, on_hand_available: int, low_stock_threshold: int) -> Status:
    """The status a channel shows: out_of_stock when nothing is available, backorder when
    only incoming supply is, low_stock at or under the channel's threshold, else in_stock."""
    if available <= 0:
        return "out_of_stock"
    if on_hand_available <= 0:
        return "backorder"
    if available <= low_stock_threshold:
        return "low_stock"
    return "in_stock"


def channel_availability(
    item: ItemState, policies: Policies, channel: Channel, now: datetime
) -> Availability:
    """What `channel` may sell of `item` at `now` (the one ATS formula): the sellable pool
    of its locations, times its share percent (rounded down), less its buffer, plus what it
    may promise against unpromised incoming supply up to its backorder limit."""
    return availability_from(channel, sourcing_figures(item, policies, channel.locations, now))


def sourcing_figures(
    item: ItemState, policies: Policies, locations: tuple[str, ...], now: datetime
) -> tuple[LocationFigures, ...]:
    """The figures of `item` at each of `locations` (a channel's sourcing order) at `now`:
    the first half of `channel_availability`, which depends on the policies only through
    the locations and the safety-stock rules."""
    expired = _expired_by_location(item, now)
    return tuple(location_figures(item, policies, code, now, expired) for code in locations)


def availability_from(channel: Channel, figures: tuple[LocationFigures, ...]) -> Availability:
    """The second half of `channel_availability`: what `channel` may sell given the
    figures of its locations in its sourcing order (`sourcing_figures`). A caller that
    weighs two versions of one channel over the same locations (a what-if preview)
    computes the figures once."""
    pool = sum(f.sellable for f in figures)
    on_hand_available = max(0, pool * channel.share_percent // 100 - channel.buffer)
    backorder_available = 0
    if channel.backorder_limit > 0:
        incoming = sum(f.unpromised_incoming for f in figures)
        # The limit bounds every unit promised against incoming at once, not each decision.
        promised = sum(min(f.backordered, f.incoming) for f in figures if f.active)
        backorder_available = max(0, min(channel.backorder_limit - promised, incoming))
    available = on_hand_available + backorder_available
    return Availability(
        channel=channel.code,
        available=available,
        status=status_for(available, on_hand_available, channel.low_stock_threshold),
        pool=pool,
        on_hand_available=on_hand_available,
        backorder_available=backorder_available,
        share_percent=channel.share_percent,
        buffer=channel.buffer,
        backorder_limit=channel.backorder_limit,
        low_stock_threshold=channel.low_stock_threshold,
        locations=figures,
    )


def _place(figures: tuple[LocationFigures, ...], on_hand: int, backorder: int) -> tuple[Hold, ...]:
    """Holds for `on_hand` units out of the locations' sellable units, then `backorder`
    units out of their unpromised incoming supply (marked backorder), in sourcing order.
    The caller bounds both by what the locations have."""
    holds: list[Hold] = []
    for figure in figures:
        take = min(on_hand, figure.sellable)
        if take > 0:
            holds.append(Hold(figure.location, take))
            on_hand -= take
    for figure in figures:
        take = min(backorder, figure.unpromised_incoming)
        if take > 0:
            holds.append(Hold(figure.location, take, backorder=True))
            backorder -= take
    assert on_hand == backorder == 0, (figures, on_hand, backorder)
    return tuple(holds)


def plan_holds(
    item: ItemState, policies: Policies, channel: Channel, quantity: int, now: datetime
) -> tuple[Hold, ...] | ShortLine:
    """Where `quantity` units for `channel` come from, in sourcing order, or why they can't.

    On-hand units come first, split across locations as needed; the rest, if the channel
    allows backorders, out of unpromised incoming supply (marked backorder).
    """
    availability = channel_availability(item, policies, channel, now)
    if quantity > availability.available:
        return ShortLine(item.sku, quantity, availability.available)
    on_hand = min(quantity, availability.on_hand_available)
    return _place(availability.locations, on_hand, quantity - on_hand)


def plan_sale(
    item: ItemState, policies: Policies, channel: Channel, quantity: int, now: datetime
) -> tuple[Hold, ...]:
    """Where up to `quantity` units of a sale `channel` already made (an order a channel
    took, never refused) come from, in sourcing order: every sellable unit of the channel's
    locations first, then unpromised incoming supply up to the channel's backorder limit.
    The channel's share and buffer are selling margins on the figure shown to shoppers,
    not stock kept from a sale already made, so they do not apply; safety stock does (it
    is not sellable). Returns fewer units than `quantity` when that is all there is (the
    caller records the rest as a shortfall)."""
    availability = channel_availability(item, policies, channel, now)
    on_hand = min(quantity, sum(f.sellable for f in availability.locations))
    backorder = min(quantity - on_hand, availability.backorder_available)
    return _place(availability.locations, on_hand, backorder)
