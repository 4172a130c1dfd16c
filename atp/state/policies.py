"""The policies stream: locations, channels and location-wide safety stock."""

from __future__ import annotations

from typing import assert_never

import msgspec

from atp import events as ev

GLOBAL = "*"
"""Key of a safety-stock rule that applies to every location (or every SKU)."""


# --- policies ---------------------------------------------------------------------------


class Location(msgspec.Struct, frozen=True, gc=False):
    """A location: code, display name, kind (warehouse, store, dropship), active."""

    code: str
    name: str
    kind: str
    active: bool


class Channel(msgspec.Struct, frozen=True, gc=False):
    """A channel's sourcing rules: its locations, buffer (units), share percent of the
    pool, backorder limit (units) and low-stock threshold (units)."""

    code: str
    locations: tuple[str, ...]
    buffer: int
    share_percent: int
    backorder_limit: int
    low_stock_threshold: int


class Policies(msgspec.Struct, frozen=True, gc=False):
    """Master data and planners' rules shared by every SKU."""

    locations: dict[str, Location] = {}
    channels: dict[str, Channel] = {}
    safety_stock: dict[str, int] = {}
    """Location-wide rules by location code; GLOBAL is the rule for every location."""


def evolve_policies(state: Policies, event: ev.PolicyEvent) -> Policies:
    """The policies after `event` (a location, channel or location-wide safety stock rule)."""
    match event:
        case ev.LocationDefined(code=code, name=name, kind=kind, active=active):
            locations = {**state.locations, code: Location(code, name, kind, active)}
            return msgspec.structs.replace(state, locations=locations)
        case ev.ChannelDefined():
            channel = Channel(
                code=event.code,
                locations=event.locations,
                buffer=event.buffer,
                share_percent=event.share_percent,
                backorder_limit=event.backorder_limit,
                low_stock_threshold=event.low_stock_threshold,
            )
            return msgspec.structs.replace(state, channels={**state.channels, event.code: channel})
        case ev.SafetyStockSet(location=location, quantity=quantity):
            rules = _set_rule(state.safety_stock, location or GLOBAL, quantity)
            return msgspec.structs.replace(state, safety_stock=rules)
        case _:
            assert_never(event)


def _set_rule(rules: dict[str, int], key: str, quantity: int) -> dict[str, int]:
    new = dict(rules)
    if quantity:
        new[key] = quantity
    else:
        new.pop(key, None)
    return new
