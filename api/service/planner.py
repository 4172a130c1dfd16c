"""The planner's queries: lists of items, live holds and safety-stock rules paged from the
read model's indexes, the channels and locations, the what-if preview of a policy change,
and who changed which policy.

Lists read the read model (projections.indexes), never the ledger: each page is one index
range and one pipelined read of the documents it names. Members are in byte order and a
cursor names the last one returned, so paging never repeats or skips a member that stays
in the list while writes go on (one that enters or leaves it meanwhile may or may not
show, as of the page it would be on). Cursors are opaque; a bad one raises InvalidQuery
naming `cursor`.

The preview decides the change with the domain's own `decide` (same validation as the
policy PUTs), then runs the one ATS function (atp.ats.channel_availability) over every
projected SKU's state with the policies before and after: it writes nothing.

Errors are application errors (api.service.errors) and domain errors (atp.errors), never
HTTP problems.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any, Literal

import msgspec

from adapters.ledger import Ledger, history
from api.service.errors import (
    ChannelNotFound,
    InvalidQuery,
    LocationNotFound,
    ReadModelRebuilding,
)
from api.service.queries import Meta, ReadSide
from atp import commands as cmd
from atp import events as ev
from atp.ats import channel_availability
from atp.decide import POLICIES, decide
from atp.state import (
    GLOBAL,
    Channel,
    ItemState,
    Location,
    OrderState,
    Policies,
    ReservationState,
    TransferState,
    evolve_item,
    evolve_policies,
)
from projections.indexes import (
    CATALOG,
    SAFETY,
    hold_member,
    holds_index,
    location_index,
    split_hold,
    status_index,
)
from projections.views import ItemView, LocationFiguresView

STATUSES = ("in_stock", "low_stock", "out_of_stock", "backorder")
"""The statuses a channel's figure can have (atp.ats.Status)."""
MAX_LIMIT = 1000
"""Largest page of any list."""
_SCAN = 1000
"""Index members read per round trip while filtering or previewing."""

Clock = Callable[[], datetime]


# --- results ------------------------------------------------------------------------------


class ChannelFigure(msgspec.Struct, frozen=True):
    """One channel's figure for a SKU: units available and status (atp.ats.status_for)."""

    channel: str
    available: int
    status: str


class ItemRow(msgspec.Struct, frozen=True):
    """A SKU in a list: its read model `position`, each channel's figure (only the asked
    channel's when the list is filtered by channel) and its figures per location (only the
    asked location's when filtered by location), units, as the read model serves them."""

    sku: str
    position: int
    channels: list[ChannelFigure]
    locations: list[LocationFiguresView]


class ItemPage(msgspec.Struct, frozen=True):
    """A page of items in SKU order; `next_cursor` is None on the last page."""

    items: list[ItemRow]
    next_cursor: str | None


class HoldRow(msgspec.Struct, frozen=True):
    """Units held at one location (`backorder`: promised against incoming supply)."""

    location: str
    quantity: int
    backorder: bool


class ReservationRow(msgspec.Struct, frozen=True):
    """One live hold: a reservation's line for one SKU, held for `channel` until
    `expires_at` (UTC); `quantity` is the units held across `holds`."""

    reservation_id: str
    channel: str
    sku: str
    quantity: int
    expires_at: datetime
    holds: list[HoldRow]
    status: Literal["held"] = "held"


class ReservationPage(msgspec.Struct, frozen=True):
    """A page of live holds in (SKU, reservation id) order."""

    items: list[ReservationRow]
    next_cursor: str | None


class SafetyStockRule(msgspec.Struct, frozen=True):
    """A safety-stock rule: units never sold of `sku` (None: every SKU) at `location`
    (None: every location). The most specific rule wins (atp.ats.safety_stock_for)."""

    sku: str | None
    location: str | None
    quantity: int


class SafetyStockPage(msgspec.Struct, frozen=True):
    """Safety-stock rules: the location-wide ones first (on the first page), then the
    SKU rules in SKU order; a page holds the rules of at most `limit` SKUs."""

    items: list[SafetyStockRule]
    next_cursor: str | None


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
    over `skus` SKUs: per-channel totals, and the changed figures (`changed` in all),
    largest drop first (then SKU, channel), one page of them in `changes`."""

    position: int
    skus: int
    totals: list[ChannelTotals]
    changed: int
    changes: list[Change]
    next_cursor: str | None


class PolicyChangeEntry(msgspec.Struct, frozen=True):
    """One policy change from the ledger's policies stream: when (`occurred_at`, UTC), who
    (`token_name`; None for changes recorded before atp kept it, or made by atp itself),
    what (`kind` location, channel or safety_stock, and its `code`: the location or
    channel code, or the location of a safety-stock rule, None for the global rule) and
    the policy `before` (None: it did not exist) and `after`."""

    position: int
    occurred_at: datetime
    token_name: str | None
    correlation_id: str | None
    kind: Literal["location", "channel", "safety_stock"]
    code: str | None
    before: dict[str, Any] | None
    after: dict[str, Any]


class PolicyHistoryPage(msgspec.Struct, frozen=True):
    """Policy changes, newest first."""

    items: list[PolicyChangeEntry]
    next_cursor: str | None


class PolicyChange(msgspec.Struct, frozen=True):
    """A change to preview, as the policy PUTs would make it: location definitions first,
    then channel definitions, then safety-stock rules (so a channel may use a location
    defined in the same change)."""

    locations: tuple[cmd.DefineLocation, ...] = ()
    channels: tuple[cmd.DefineChannel, ...] = ()
    safety_stock: tuple[cmd.SetSafetyStock, ...] = ()

    def commands(self) -> Iterator[cmd.Command]:
        """The change's commands in the order they apply."""
        yield from self.locations
        yield from self.channels
        yield from self.safety_stock


# --- cursors ------------------------------------------------------------------------------


def encode_cursor(kind: str, key: Any) -> str:
    """An opaque cursor: URL-safe base64 of JSON [kind, key]."""
    return base64.urlsafe_b64encode(msgspec.json.encode([kind, key])).decode().rstrip("=")


def decode_cursor(cursor: str | None, kind: str, type_: Any = str) -> Any:
    """The key of a cursor made by `encode_cursor(kind, ...)`, or None for no cursor.

    Raises InvalidQuery naming `cursor` for anything else (another list's cursor included).
    """
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        found, key = msgspec.json.decode(raw, type=tuple[str, type_])
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise InvalidQuery("cursor", "cursor is not one this list gave") from None
    if found != kind:
        raise InvalidQuery("cursor", "cursor is not one this list gave")
    return key


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidQuery("limit", f"limit must be 1..{MAX_LIMIT}")


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
    atp.decide as the PUTs would. Raises what they raise (InvalidCommand, UnknownLocation)."""
    changed: dict[str, ItemState] = {}
    for command in change.commands():
        world = _PreviewWorld(policies, {**items, **changed})
        for stream, event in decide(command, world, now):
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


def _figure(
    item: ItemState, policies: Policies, channel: Channel, now: datetime
) -> tuple[int, str]:
    a = channel_availability(item, policies, channel, now)
    return a.available, a.status


def preview_states(
    states: Iterable[ItemState],
    before: Policies,
    after: Policies,
    changed: dict[str, ItemState],
    now: datetime,
) -> tuple[int, list[ChannelTotals], list[Change]]:
    """(SKUs seen, per-channel totals, changes sorted largest drop first) of moving every
    SKU in `states` from `before` to `after` (with `changed` replacing the SKU states the
    change touches), each figure computed by atp.ats.channel_availability at `now`."""
    affected = affected_channels(before, after)
    tallies = {code: (_Tally(), _Tally()) for code in after.channels}
    changes: list[Change] = []
    seen = 0
    for item in states:
        seen += 1
        new_item = changed.get(item.sku)
        for code, channel in after.channels.items():
            tally_before, tally_after = tallies[code]
            old = before.channels.get(code)
            if code not in affected and new_item is None:
                figure = _figure(item, before, channel, now)
                tally_before.add(*figure)
                tally_after.add(*figure)
                continue
            was = _figure(item, before, old, now) if old is not None else (0, "out_of_stock")
            now_is = _figure(new_item or item, after, channel, now)
            tally_before.add(*was)
            tally_after.add(*now_is)
            if was != now_is:
                changes.append(Change(item.sku, code, was[0], now_is[0], was[1], now_is[1]))
    changes.sort(key=_change_key)
    totals = [
        ChannelTotals(
            code,
            tally_before.totals() if code in before.channels else None,
            tally_after.totals(),
        )
        for code, (tally_before, tally_after) in tallies.items()
    ]
    return seen, totals, changes


def _change_key(c: Change) -> tuple[int, str, str]:
    return (c.available_after - c.available_before, c.sku, c.channel)


# --- the service --------------------------------------------------------------------------


class Planner:
    """The planner's read-side use cases over the read model (`read`) and, for policies
    and their history, the ledger (`ledger`, a synchronous store called in a thread).
    Times are read from `clock` (UTC)."""

    def __init__(self, read: ReadSide, ledger: Ledger, clock: Clock) -> None:
        self.read = read
        self.ledger = ledger
        self.clock = clock

    async def _complete_meta(self) -> Meta:
        """The read model's meta, fresh; raises ReadModelRebuilding while it is incomplete
        (its indexes would then miss SKUs)."""
        meta = await self.read.meta(fresh=True)
        if meta.build is None:
            raise ReadModelRebuilding
        return meta

    async def _members(
        self,
        index: str,
        after: str | None,
        prefix: str,
        count: int,
        also: str | None = None,
    ) -> list[str]:
        """Up to `count` members of `index` after `after` starting with `prefix`, keeping
        only those also in index `also` when given."""
        found: list[str] = []
        while len(found) < count:
            batch = await self.read.model.index_page(
                index, after, prefix, count if also is None else _SCAN
            )
            if not batch:
                break
            if also is None:
                found += batch
            else:
                present = await self.read.model.index_has(also, batch)
                found += [m for m, p in zip(batch, present, strict=True) if p]
            after = batch[-1]
        return found[:count]

    async def _lost(self) -> ReadModelRebuilding:
        """An indexed SKU's documents are gone: have the model rebuilt."""
        await self.read.model.mark_incomplete()
        return ReadModelRebuilding()

    async def list_items(
        self,
        channel: str | None = None,
        location: str | None = None,
        status: str | None = None,
        prefix: str = "",
        limit: int = 100,
        cursor: str | None = None,
    ) -> ItemPage:
        """Projected SKUs in SKU order, up to `limit` (1..1000) per page from `cursor`:
        those starting with `prefix`, with a stock record at `location`, whose figure on
        `channel` has `status` (in_stock, low_stock, out_of_stock, backorder; needs
        `channel`). `status=low_stock` is the low-stock report (atp.ats.status_for: at
        or under the channel's `low_stock_threshold`).

        Raises InvalidQuery (`limit`, `status`, `channel` missing for a status, `cursor`),
        ChannelNotFound, LocationNotFound, ReadModelRebuilding."""
        _check_limit(limit)
        after = decode_cursor(cursor, "items")
        if status is not None and status not in STATUSES:
            raise InvalidQuery("status", f"status must be one of {', '.join(STATUSES)}")
        if status is not None and channel is None:
            raise InvalidQuery("channel", "a status filter needs a channel")
        meta = await self._complete_meta()
        if channel is not None and channel not in meta.policies.channels:
            raise ChannelNotFound(channel)
        if location is not None and location not in meta.policies.locations:
            raise LocationNotFound(location)
        # The status index is the narrower one; the location index filters it.
        indexes = [location_index(location)] if location is not None else []
        if channel is not None and status is not None:
            indexes.insert(0, status_index(channel, status))
        primary = indexes[0] if indexes else CATALOG
        also = indexes[1] if len(indexes) > 1 else None
        skus = await self._members(primary, after, prefix, limit + 1, also)
        more = len(skus) > limit
        skus = skus[:limit]
        documents = await self.read.model.item_documents(skus)
        if any(d is None for d in documents):
            raise await self._lost()
        rows = [
            _item_row(_item_decoder.decode(doc), channel, location)
            for doc in documents
            if doc is not None
        ]
        return ItemPage(rows, encode_cursor("items", skus[-1]) if more else None)

    async def list_reservations(
        self,
        channel: str | None = None,
        sku: str | None = None,
        status: str = "held",
        limit: int = 100,
        cursor: str | None = None,
    ) -> ReservationPage:
        """Live holds (one row per reservation and SKU) in (SKU, reservation id) order, up
        to `limit` (1..1000) per page from `cursor`, of `channel` and `sku` when given.
        Only `status="held"` is listed: the read model keeps live holds; a released,
        expired or committed reservation is read by its id.

        Raises InvalidQuery (`limit`, `status`, `cursor`), ChannelNotFound,
        ReadModelRebuilding."""
        _check_limit(limit)
        after = decode_cursor(cursor, "reservations")
        if status != "held":
            raise InvalidQuery("status", "only held reservations are listed (status=held)")
        meta = await self._complete_meta()
        if channel is not None and channel not in meta.policies.channels:
            raise ChannelNotFound(channel)
        prefix = hold_member(sku, "") if sku is not None else ""
        members = await self._members(holds_index(channel), after, prefix, limit + 1)
        more = len(members) > limit
        members = members[:limit]
        pairs = [split_hold(m) for m in members]
        skus = list(dict.fromkeys(s for s, _ in pairs))
        states = dict(zip(skus, await self.read.model.item_states(skus), strict=True))
        now = self.clock()
        rows = []
        for sku_, reservation_id in pairs:
            item = states[sku_]
            if item is None:
                raise await self._lost()
            hold = item.holds.get(reservation_id)
            if hold is None or hold.expires_at <= now:
                continue  # released or expired since the index was read
            rows.append(
                ReservationRow(
                    reservation_id=reservation_id,
                    channel=hold.channel,
                    sku=sku_,
                    quantity=sum(h.quantity for h in hold.holds),
                    expires_at=hold.expires_at,
                    holds=[HoldRow(h.location, h.quantity, h.backorder) for h in hold.holds],
                )
            )
        return ReservationPage(rows, encode_cursor("reservations", members[-1]) if more else None)

    async def safety_stock_rules(
        self, limit: int = MAX_LIMIT, cursor: str | None = None
    ) -> SafetyStockPage:
        """Every safety-stock rule: the location-wide and global ones (first page), then
        those of up to `limit` (1..1000) SKUs per page in SKU order, from `cursor`.

        Raises InvalidQuery (`limit`, `cursor`), ReadModelRebuilding."""
        _check_limit(limit)
        after = decode_cursor(cursor, "safety-stock")
        meta = await self._complete_meta()
        rules: list[SafetyStockRule] = []
        if after is None:
            rules += [
                SafetyStockRule(None, None if key == GLOBAL else key, quantity)
                for key, quantity in sorted(meta.policies.safety_stock.items())
            ]
        skus = await self._members(SAFETY, after, "", limit + 1)
        more = len(skus) > limit
        skus = skus[:limit]
        for sku, item in zip(skus, await self.read.model.item_states(skus), strict=True):
            if item is None:
                raise await self._lost()
            rules += [
                SafetyStockRule(sku, None if key == GLOBAL else key, quantity)
                for key, quantity in sorted(item.safety_stock.items())
            ]
        return SafetyStockPage(rules, encode_cursor("safety-stock", skus[-1]) if more else None)

    async def _policies(self) -> Policies:
        policies, _ = await asyncio.to_thread(self.ledger.load, POLICIES)
        assert isinstance(policies, Policies)
        return policies

    async def channels(self) -> list[Channel]:
        """Every channel with its policy (sourcing locations in order, buffer, share
        percent, backorder limit, low-stock threshold), from the ledger's policies stream
        (so a PUT's answer and this list agree at once), in definition order."""
        return list((await self._policies()).channels.values())

    async def locations(self) -> list[Location]:
        """Every location (code, name, kind, active), from the ledger's policies stream,
        in definition order."""
        return list((await self._policies()).locations.values())

    async def location_rules(self) -> dict[str, int]:
        """Location-wide safety stock by location code (GLOBAL `*`: every location)."""
        return dict((await self._policies()).safety_stock)

    async def preview(
        self, change: PolicyChange, limit: int = 100, cursor: str | None = None
    ) -> Preview:
        """What `change` would do to every projected SKU's figures, computed by the one ATS
        function on the read model's current state, the change decided as the policy PUTs
        decide it. Writes nothing. `limit` (1..1000) changes per page from `cursor`.

        Raises InvalidQuery (`limit`, `cursor`), what the PUTs raise for the change
        (atp.errors.InvalidCommand and its kinds, field named), ReadModelRebuilding."""
        _check_limit(limit)
        after = decode_cursor(cursor, "preview", tuple[int, str, str])
        meta = await self._complete_meta()
        now = self.clock()
        named = sorted({c.sku for c in change.safety_stock if c.sku is not None})
        loaded = await self.read.model.item_states(named)
        items = {sku: item for sku, item in zip(named, loaded, strict=True) if item is not None}
        policies, changed = apply_change(change, meta.policies, items, now)
        states = [item async for item in self._all_states()]
        seen, totals, changes = await asyncio.to_thread(
            preview_states, states, meta.policies, policies, changed, now
        )
        start = 0 if after is None else bisect_right(changes, tuple(after), key=_change_key)
        page = changes[start : start + limit]
        more = start + limit < len(changes)
        next_cursor = encode_cursor("preview", _change_key(page[-1])) if more else None
        return Preview(meta.position, seen, totals, len(changes), page, next_cursor)

    async def _all_states(self) -> Any:
        """Every projected SKU's state, in SKU order, read `_SCAN` at a time."""
        after: str | None = None
        while skus := await self.read.model.index_page(CATALOG, after, "", _SCAN):
            for item in await self.read.model.item_states(skus):
                if item is None:
                    raise await self._lost()
                yield item
            after = skus[-1]

    async def policy_history(
        self, limit: int = 100, cursor: str | None = None
    ) -> PolicyHistoryPage:
        """Policy changes (locations, channels, location-wide and global safety stock),
        newest first, up to `limit` (1..1000) per page from `cursor`, each with the token
        name that made it and the policy before and after, from the ledger's policies
        stream (read with adapters.ledger.history, by the stream's id: the policies stream
        is small, and folding it from the start gives each change its `before`). A SKU's
        own safety-stock rules change on its item stream: see its history.

        Raises InvalidQuery (`limit`, `cursor`)."""
        _check_limit(limit)
        before = decode_cursor(cursor, "policy-history", int)
        entries = await asyncio.to_thread(policy_changes, self.ledger)
        if before is not None:
            entries = [e for e in entries if e.position < before]
        page = entries[:limit]
        more = len(entries) > limit
        return PolicyHistoryPage(
            page, encode_cursor("policy-history", page[-1].position) if more else None
        )


_item_decoder = msgspec.json.Decoder(ItemView)


def _item_row(view: ItemView, channel: str | None, location: str | None) -> ItemRow:
    return ItemRow(
        sku=view.sku,
        position=view.position,
        channels=[
            ChannelFigure(c.channel, c.available, c.status)
            for c in view.channels
            if channel is None or c.channel == channel
        ],
        locations=[f for f in view.locations if location is None or f.location == location],
    )


def policy_changes(ledger: Ledger, page: int = 1000) -> list[PolicyChangeEntry]:
    """Every change of the ledger's policies stream, newest first, with the policy before
    and after it (the stream folded from its start)."""
    entries: list[PolicyChangeEntry] = []
    policies = Policies()
    after = 0
    while rows := history(ledger, [POLICIES], after, page):
        for row in rows:
            event = row.event
            assert isinstance(event, ev.PolicyEvent)
            kind, code, was = _policy_before(policies, event)
            policies = evolve_policies(policies, event)
            _, _, now_is = _policy_before(policies, event)
            assert now_is is not None
            entries.append(
                PolicyChangeEntry(
                    position=row.position,
                    occurred_at=row.occurred_at,
                    token_name=row.metadata.get("token_name"),
                    correlation_id=row.metadata.get("correlation_id"),
                    kind=kind,
                    code=code,
                    before=was,
                    after=now_is,
                )
            )
        after = rows[-1].position
    entries.reverse()
    return entries


def _policy_before(
    policies: Policies, event: ev.PolicyEvent
) -> tuple[Literal["location", "channel", "safety_stock"], str | None, dict[str, Any] | None]:
    """(kind, code, the policy `event` changes as it is in `policies`, or None)."""
    match event:
        case ev.LocationDefined(code=code):
            found = policies.locations.get(code)
            return "location", code, msgspec.to_builtins(found) if found else None
        case ev.ChannelDefined(code=code):
            channel = policies.channels.get(code)
            return "channel", code, msgspec.to_builtins(channel) if channel else None
        case ev.SafetyStockSet(location=location):
            quantity = policies.safety_stock.get(location or GLOBAL, 0)
            return "safety_stock", location, {"location": location, "quantity": quantity}
    raise AssertionError(event)  # pragma: no cover - PolicyEvent is exhaustive
