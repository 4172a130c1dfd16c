"""Policy decisions: locations, channels (their sourcing and buffers) and safety stock."""

from __future__ import annotations

from atp import commands as cmd
from atp import events as ev
from atp.decide.base import LOCATION_KINDS, Decision, World, _location, _non_negative
from atp.errors import (
    InvalidCommand,
)
from atp.streams import POLICIES


def _define_location(c: cmd.DefineLocation, world: World) -> Decision:
    if c.kind not in LOCATION_KINDS:
        raise InvalidCommand("kind", f"kind must be one of {', '.join(LOCATION_KINDS)}")
    event = ev.LocationDefined(code=c.code, name=c.name, kind=c.kind, active=c.active)
    current = world.policies().locations.get(c.code)
    if current is not None and (current.name, current.kind, current.active) == (
        c.name,
        c.kind,
        c.active,
    ):
        return []
    return [(POLICIES, event)]


def _define_channel(c: cmd.DefineChannel, world: World) -> Decision:
    policies = world.policies()
    if not c.locations:
        raise InvalidCommand("locations", "a channel needs at least one location")
    if len(set(c.locations)) != len(c.locations):
        raise InvalidCommand("locations", "a location appears more than once")
    for i, code in enumerate(c.locations):
        _location(policies, code, f"locations[{i}]")
    for field in ("buffer", "backorder_limit", "low_stock_threshold"):
        _non_negative(getattr(c, field), field)
    if not 0 <= c.share_percent <= 100:
        raise InvalidCommand("share_percent", "share_percent must be between 0 and 100")
    event = ev.ChannelDefined(
        code=c.code,
        locations=c.locations,
        buffer=c.buffer,
        share_percent=c.share_percent,
        backorder_limit=c.backorder_limit,
        low_stock_threshold=c.low_stock_threshold,
    )
    current = policies.channels.get(c.code)
    if current is not None and (
        current.locations,
        current.buffer,
        current.share_percent,
        current.backorder_limit,
        current.low_stock_threshold,
    ) == (c.locations, c.buffer, c.share_percent, c.backorder_limit, c.low_stock_threshold):
        return []
    return [(POLICIES, event)]


def _set_safety_stock(c: cmd.SetSafetyStock, world: World) -> Decision:
    _non_negative(c.quantity, "quantity")
    if c.location is not None:
        _location(world.policies(), c.location, "location")
    key = c.location or "*"
    event = ev.SafetyStockSet(sku=c.sku, location=c.location, quantity=c.quantity)
    if c.sku is None:
        if world.policies().safety_stock.get(key, 0) == c.quantity:
            return []
        return [(POLICIES, event)]
    if world.item(c.sku).safety_stock.get(key, 0) == c.quantity:
        return []
    return [(("item", c.sku), event)]
