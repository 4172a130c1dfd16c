"""The what-if preview of a policy change: the change decided as the policy PUTs decide
it (atp.decide), then every SKU's figure on each channel computed by the one ATS function
(atp.ats.channel_availability) with the policies before and after. Pure: the caller
(api.service.planner) reads the states and policies from the read model."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from datetime import datetime

import msgspec

from atp import commands as cmd
from atp import events as ev
from atp.ats import LocationFigures, availability_from, channel_availability, sourcing_figures
from atp.decide import POLICIES, decide
from atp.errors import InvalidCommand
from atp.state import (
    GLOBAL,
    Channel,
    ItemState,
    OrderState,
    Policies,
    ReservationState,
    TransferState,
    evolve_item,
    evolve_policies,
)


class PolicyChange(msgspec.Struct, frozen=True):
    """A change to preview, as the policy PUTs would make it: location definitions first,
    then channel definitions, then safety-stock rules (so a channel may use a location
    defined in the same change)."""

    locations: tuple[cmd.DefineLocation, ...] = ()
    channels: tuple[cmd.DefineChannel, ...] = ()
    safety_stock: tuple[cmd.SetSafetyStock, ...] = ()

    def commands(self) -> Iterator[tuple[str, cmd.Command]]:
        """The change's commands in the order they apply, each with where it is in the
        change (`locations.<code>`, `channels.<code>`, `safety_stock[<i>]`)."""
        yield from ((f"locations.{c.code}", c) for c in self.locations)
        yield from ((f"channels.{c.code}", c) for c in self.channels)
        yield from ((f"safety_stock[{i}]", c) for i, c in enumerate(self.safety_stock))


class Totals(msgspec.Struct, frozen=True):
    """One channel's figures over every projected SKU: units `available` (sum), SKUs
    `out_of_stock` and SKUs `low_stock` (atp.ats.status_for)."""

    available: int
    out_of_stock: int
    low_stock: int


class ChannelTotals(msgspec.Struct, frozen=True):
    """A channel's totals before and after a previewed change (`before` None: the change
    creates the channel)."""

    channel: str
    before: Totals | None
    after: Totals


class Change(msgspec.Struct, frozen=True):
    """A SKU whose figure or status on `channel` the previewed change would alter."""

    sku: str
    channel: str
    available_before: int
    available_after: int
    status_before: str
    status_after: str


class Preview(msgspec.Struct, frozen=True):
    """What a policy change would do, computed on the read model's state at `position`
    over `skus` SKUs: totals of each channel the change may move (moved_channels; the
    others' figures stay as they are), and the changed figures (`changed` in all), largest
    drop first (then SKU, channel), one page of them in `changes`."""

    position: int
    skus: int
    totals: list[ChannelTotals]
    changed: int
    changes: list[Change]
    next_cursor: str | None


# --- the preview world --------------------------------------------------------------------


class _PreviewWorld:
    """The `World` a previewed command is decided against: the read model's policies and
    the states of the SKUs it names (loaded first)."""

    def __init__(self, policies: Policies, items: dict[str, ItemState]) -> None:
        self._policies = policies
        self._items = items

    def policies(self) -> Policies:
        return self._policies

    def item(self, sku: str) -> ItemState:
        return self._items.get(sku) or ItemState(sku=sku)

    def items(self, skus: Iterable[str]) -> dict[str, ItemState]:
        return {sku: self.item(sku) for sku in skus}

    def order(self, order_id: str) -> OrderState | None:  # pragma: no cover - not read
        return None

    def reservation(self, reservation_id: str) -> ReservationState | None:  # pragma: no cover
        return None

    def transfer(self, transfer_id: str) -> TransferState | None:  # pragma: no cover
        return None


def apply_change(
    change: PolicyChange, policies: Policies, items: dict[str, ItemState], now: datetime
) -> tuple[Policies, dict[str, ItemState]]:
    """The policies and SKU states (those `change` touches) after `change`, decided by
    atp.decide as the PUTs would. Raises what they raise (InvalidCommand and its kinds),
    its `field` prefixed with where the command is in the change (`channels.web.buffer`)."""
    changed: dict[str, ItemState] = {}
    for where, command in change.commands():
        world = _PreviewWorld(policies, {**items, **changed})
        try:
            decided = decide(command, world, now)
        except InvalidCommand as error:
            error.field = error.data["field"] = f"{where}.{error.field}"
            raise
        for stream, event in decided:
            if stream == POLICIES:
                assert isinstance(event, ev.PolicyEvent)
                policies = evolve_policies(policies, event)
            else:
                assert isinstance(event, ev.SafetyStockSet) and event.sku is not None
                changed[event.sku] = evolve_item(world.item(event.sku), event)
    return policies, changed


def affected_channels(before: Policies, after: Policies) -> set[str]:
    """Channels whose figures may differ between two policies: changed or new channels,
    channels sourcing from a changed location or a location whose safety stock changed,
    every channel when the global rule changed."""
    locations = {
        code
        for code in {*before.locations, *after.locations}
        if before.locations.get(code) != after.locations.get(code)
    }
    rules = {
        key
        for key in {*before.safety_stock, *after.safety_stock}
        if before.safety_stock.get(key) != after.safety_stock.get(key)
    }
    if GLOBAL in rules:
        return set(after.channels)
    locations |= rules
    return {
        code
        for code, channel in after.channels.items()
        if before.channels.get(code) != channel or locations & set(channel.locations)
    }


class _Tally:
    """Running totals of one channel's figures."""

    def __init__(self) -> None:
        self.available = self.out_of_stock = self.low_stock = 0

    def add(self, available: int, status: str) -> None:
        self.available += available
        self.out_of_stock += status == "out_of_stock"
        self.low_stock += status == "low_stock"

    def totals(self) -> Totals:
        return Totals(self.available, self.out_of_stock, self.low_stock)


_NOTHING = (0, "out_of_stock")
"""A channel's figure before it exists."""


def _figure(
    item: ItemState, policies: Policies, channel: Channel, now: datetime
) -> tuple[int, str]:
    a = channel_availability(item, policies, channel, now)
    return a.available, a.status


def _from(channel: Channel, figures: tuple[LocationFigures, ...]) -> tuple[int, str]:
    a = availability_from(channel, figures)
    return a.available, a.status


def moved_channels(change: PolicyChange, before: Policies, after: Policies) -> set[str]:
    """Channels whose figures `change` may move: those affected by the policies it changes
    (affected_channels), and those sourcing from a location where it sets a SKU's rule
    (every channel for a SKU's rule at every location)."""
    moved = affected_channels(before, after)
    for rule in change.safety_stock:
        if rule.sku is None:
            continue
        moved |= {
            code
            for code, channel in after.channels.items()
            if rule.location is None or rule.location in channel.locations
        }
    return moved


def preview_states(
    states: Iterable[ItemState],
    before: Policies,
    after: Policies,
    changed: dict[str, ItemState],
    now: datetime,
    channels: Collection[str] | None = None,
) -> tuple[int, list[ChannelTotals], list[Change]]:
    """(SKUs seen, per-channel totals, changes sorted largest drop first) of moving every
    SKU in `states` from `before` to `after` (with `changed` replacing the SKU states the
    change touches) on `channels` (default: those the policies move, every channel when a
    SKU state changes; see moved_channels), each figure computed by
    atp.ats.channel_availability at `now`. Other channels' figures do not move: they are
    neither computed nor totalled."""
    by_policy = affected_channels(before, after)
    if channels is None:
        channels = set(after.channels) if changed else by_policy
    shown = {code: after.channels[code] for code in after.channels if code in channels}
    tallies = {code: (_Tally(), _Tally()) for code in shown}
    # Location figures depend on the policies only through locations and safety stock:
    # when neither changes, a channel that keeps its sourcing is weighed before and after
    # over the same figures (computed once).
    same_figures = {
        code
        for code, channel in shown.items()
        if before.locations == after.locations
        and before.safety_stock == after.safety_stock
        and (old := before.channels.get(code)) is not None
        and old.locations == channel.locations
    }
    changes: list[Change] = []
    seen = 0
    for item in states:
        seen += 1
        new_item = changed.get(item.sku)
        for code, channel in shown.items():
            tally_before, tally_after = tallies[code]
            old = before.channels.get(code)
            if code not in by_policy and new_item is None:
                figure = _figure(item, before, channel, now)  # neither moves: compute once
                tally_before.add(*figure)
                tally_after.add(*figure)
                continue
            if old is not None and new_item is None and code in same_figures:
                figures = sourcing_figures(item, before, channel.locations, now)
                was, now_is = _from(old, figures), _from(channel, figures)
            else:
                was = _figure(item, before, old, now) if old is not None else _NOTHING
                now_is = _figure(new_item or item, after, channel, now)
            tally_before.add(*was)
            tally_after.add(*now_is)
            if was != now_is:
                changes.append(Change(item.sku, code, was[0], now_is[0], was[1], now_is[1]))
    changes.sort(key=change_key)
    totals = [
        ChannelTotals(
            code,
            tally_before.totals() if code in before.channels else None,
            tally_after.totals(),
        )
        for code, (tally_before, tally_after) in tallies.items()
    ]
    return seen, totals, changes


def change_key(c: Change) -> tuple[int, str, str]:
    return (c.available_after - c.available_before, c.sku, c.channel)
