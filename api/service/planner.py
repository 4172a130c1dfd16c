"""The planner's queries: lists of items, live holds and safety-stock rules paged from the
read model's indexes, the channels and locations, the what-if preview of a policy change,
and who changed which policy.

Lists read the read model (projections.indexes), never the ledger: each page is one index
range and one pipelined read of the documents it names. Members are in byte order and a
cursor names the last one returned, so paging never repeats or skips a member that stays
in the list while writes go on (one that enters or leaves it meanwhile may or may not
show, as of the page it would be on). Cursors are opaque and signed: an HMAC-SHA256 (RFC
2104), under a key derived from the service key, over the list's name, what the page was
asked for (its filters, or the preview's change) and the position, so a cursor is only
taken back by the list, filters or preview body that gave it. Anything else (made up,
tampered with, from another list, filter or body) raises InvalidQuery naming `cursor`.

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
import hashlib
import hmac
import secrets
from bisect import bisect_right
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

import msgspec

from adapters.ledger import HistoryRow, Ledger, item_history
from api.service.errors import (
    ChannelNotFound,
    InvalidQuery,
    LocationNotFound,
    ReadModelRebuilding,
)
from api.service.policy_history import PolicyChangeEntry, PolicyHistoryPage, policy_changes
from api.service.preview import (
    Change,
    ChannelTotals,
    PolicyChange,
    Preview,
    Totals,
    apply_change,
    change_key,
    moved_channels,
    preview_states,
)
from api.service.queries import Meta, ReadSide
from atp.decide import POLICIES
from atp.state import (
    GLOBAL,
    Channel,
    Location,
    Policies,
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

__all__ = [  # the preview's and the history's results are part of this module's API
    "Change",
    "ChannelFigure",
    "ChannelTotals",
    "Cursors",
    "HoldRow",
    "ItemPage",
    "ItemRow",
    "Planner",
    "PolicyChange",
    "PolicyChangeEntry",
    "PolicyHistoryPage",
    "Preview",
    "ReservationPage",
    "ReservationRow",
    "SafetyStockPage",
    "SafetyStockRule",
    "Totals",
]

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


# --- cursors ------------------------------------------------------------------------------


CURSOR_PURPOSE = b"atp: planner list cursors v1"
"""The HKDF info that derives the cursor key from the service key (adapters.sealing)."""
_MAC_BYTES = 16
"""Bytes of HMAC-SHA256 a cursor carries (128 bits: not guessable)."""


class Cursors:
    """Makes and checks the planner lists' cursors with a secret `key` (bytes; processes
    that serve the same lists share it, e.g. derived from Settings.token_secret).

    A cursor is `base64url(JSON [kind, position]) "." base64url(mac)`, where mac is the
    first 16 bytes of HMAC-SHA256(key, JSON [kind, scope, position]): `kind` names the list,
    `scope` what the page was asked for (filters, a preview's change), `position` the last
    member returned."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _mac(self, kind: str, scope: Any, position: bytes) -> bytes:
        signed = msgspec.json.encode([kind, scope]) + b"\x00" + position
        return hmac.new(self._key, signed, hashlib.sha256).digest()[:_MAC_BYTES]

    def encode(self, kind: str, key: Any, scope: Any = None) -> str:
        """The cursor after `key` (JSON-encodable) in list `kind` asked for with `scope`."""
        position = msgspec.json.encode([kind, key])
        return f"{_b64(position)}.{_b64(self._mac(kind, scope, position))}"

    def decode(self, cursor: str | None, kind: str, type_: Any = str, scope: Any = None) -> Any:
        """The key of a cursor `encode(kind, key, scope)` made, or None for no cursor.

        Raises InvalidQuery naming `cursor` for anything else: a made-up or altered cursor,
        or one from another list, other filters or another preview body."""
        if cursor is None:
            return None
        refused = InvalidQuery("cursor", "cursor is not one this list gave for these filters")
        try:
            text, _, mac = cursor.partition(".")
            position = _unb64(text)
            if not hmac.compare_digest(_unb64(mac), self._mac(kind, scope, position)):
                raise refused
            found, key = msgspec.json.decode(position, type=tuple[str, type_])
        except (binascii.Error, ValueError, msgspec.DecodeError):
            raise refused from None
        if found != kind:
            raise refused
        return key


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    if not text.isascii():
        raise ValueError("not base64")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidQuery("limit", f"limit must be 1..{MAX_LIMIT}")


# --- the service --------------------------------------------------------------------------


class Planner:
    """The planner's read-side use cases over the read model (`read`) and, for policies
    and their history, the ledger (`ledger`, a synchronous store called in a thread).
    Times are read from `clock` (UTC). Cursors are signed with `cursor_key` (bytes; the
    processes serving the same lists must share it); None: a random key of this instance,
    so its cursors are good for it only."""

    def __init__(
        self, read: ReadSide, ledger: Ledger, clock: Clock, cursor_key: bytes | None = None
    ) -> None:
        self.read = read
        self.ledger = ledger
        self.clock = clock
        self.cursors = Cursors(cursor_key if cursor_key else secrets.token_bytes(32))

    async def _complete_meta(self, min_position: int | None = None) -> Meta:
        """The read model's meta, fresh, once it includes ledger position `min_position`
        (ReadSide.wait_for: ReadModelBehind past the wait); raises ReadModelRebuilding
        while it is incomplete (its indexes would then miss SKUs)."""
        if min_position is not None:
            await self.read.wait_for(min_position)
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

    async def _page(
        self, index: str, after: str | None, prefix: str, limit: int, also: str | None = None
    ) -> tuple[list[str], bool]:
        """A page of `_members` and whether more follow it."""
        members = await self._members(index, after, prefix, limit + 1, also)
        return members[:limit], len(members) > limit

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
        min_position: int | None = None,
    ) -> ItemPage:
        """Projected SKUs in SKU order, up to `limit` (1..1000) per page from `cursor`:
        those starting with `prefix`, with a stock record at `location`, whose figure on
        `channel` has `status` (in_stock, low_stock, out_of_stock, backorder; needs
        `channel`). `status=low_stock` is the low-stock report (atp.ats.status_for: at
        or under the channel's `low_stock_threshold`).

        `min_position` (a write's ledger position) waits until the read model includes it.

        Raises InvalidQuery (`limit`, `status`, `channel` missing for a status, `cursor`),
        ChannelNotFound, LocationNotFound, ReadModelBehind, ReadModelRebuilding."""
        _check_limit(limit)
        scope = [channel, location, status, prefix]
        after = self.cursors.decode(cursor, "items", str, scope)
        if status is not None and status not in STATUSES:
            raise InvalidQuery("status", f"status must be one of {', '.join(STATUSES)}")
        if status is not None and channel is None:
            raise InvalidQuery("channel", "a status filter needs a channel")
        meta = await self._complete_meta(min_position)
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
        skus, more = await self._page(primary, after, prefix, limit, also)
        documents = await self.read.model.item_documents(skus)
        if any(d is None for d in documents):
            raise await self._lost()
        rows = [
            _item_row(_item_decoder.decode(doc), channel, location)
            for doc in documents
            if doc is not None
        ]
        return ItemPage(rows, self.cursors.encode("items", skus[-1], scope) if more else None)

    async def list_reservations(
        self,
        channel: str | None = None,
        sku: str | None = None,
        status: str = "held",
        limit: int = 100,
        cursor: str | None = None,
        min_position: int | None = None,
    ) -> ReservationPage:
        """Live holds (one row per reservation and SKU) in (SKU, reservation id) order, up
        to `limit` (1..1000) per page from `cursor`, of `channel` and `sku` when given.
        Only `status="held"` is listed: the read model keeps live holds; a released,
        expired or committed reservation is read by its id.

        `min_position` as in `list_items`.

        Raises InvalidQuery (`limit`, `status`, `cursor`), ChannelNotFound,
        ReadModelBehind, ReadModelRebuilding."""
        _check_limit(limit)
        scope = [channel, sku, status]
        after = self.cursors.decode(cursor, "reservations", str, scope)
        if status != "held":
            raise InvalidQuery("status", "only held reservations are listed (status=held)")
        meta = await self._complete_meta(min_position)
        if channel is not None and channel not in meta.policies.channels:
            raise ChannelNotFound(channel)
        prefix = hold_member(sku, "") if sku is not None else ""
        members, more = await self._page(holds_index(channel), after, prefix, limit)
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
        return ReservationPage(
            rows, self.cursors.encode("reservations", members[-1], scope) if more else None
        )

    async def safety_stock_rules(
        self, limit: int = MAX_LIMIT, cursor: str | None = None, min_position: int | None = None
    ) -> SafetyStockPage:
        """Every safety-stock rule: the location-wide and global ones (first page), then
        those of up to `limit` (1..1000) SKUs per page in SKU order, from `cursor`.

        `min_position` as in `list_items`.

        Raises InvalidQuery (`limit`, `cursor`), ReadModelBehind, ReadModelRebuilding."""
        _check_limit(limit)
        after = self.cursors.decode(cursor, "safety-stock")
        meta = await self._complete_meta(min_position)
        rules: list[SafetyStockRule] = []
        if after is None:
            rules += [
                SafetyStockRule(None, None if key == GLOBAL else key, quantity)
                for key, quantity in sorted(meta.policies.safety_stock.items())
            ]
        skus, more = await self._page(SAFETY, after, "", limit)
        for sku, item in zip(skus, await self.read.model.item_states(skus), strict=True):
            if item is None:
                raise await self._lost()
            rules += [
                SafetyStockRule(sku, None if key == GLOBAL else key, quantity)
                for key, quantity in sorted(item.safety_stock.items())
            ]
        return SafetyStockPage(
            rules, self.cursors.encode("safety-stock", skus[-1]) if more else None
        )

    async def _policies(self) -> Policies:
        policies, _ = await asyncio.to_thread(self.ledger.load, POLICIES)
        assert isinstance(policies, Policies)
        return policies

    async def item(self, sku: str, min_position: int | None = None) -> ItemView:
        """The SKU's figures as `GET /v1/items/{sku}` serves them: per location (on_hand,
        allocated, held, damaged, in transit, incoming, safety stock, sellable) and each
        channel's figure with its derivation; an unknown SKU's are zeros. Raises
        ReadModelBehind (`min_position` not reached), ReadModelRebuilding."""
        body = await self.read.item_document(sku, self.clock(), min_position)
        return _item_decoder.decode(body)

    async def item_history(
        self, sku: str, after: int = 0, limit: int = 100
    ) -> tuple[list[HistoryRow], int | None]:
        """The ledger events behind the SKU's figures after position `after`, oldest first,
        up to `limit` (1..1000) (its own events and every policy change), and the `after`
        of the next page (None on the last): what `GET /v1/items/{sku}/history` lists.
        Raises InvalidQuery (`limit`)."""
        _check_limit(limit)
        rows = await asyncio.to_thread(item_history, self.ledger, sku, after, limit)
        return rows, rows[-1].position if len(rows) == limit else None

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
        self,
        change: PolicyChange,
        limit: int = 100,
        cursor: str | None = None,
        min_position: int | None = None,
    ) -> Preview:
        """What `change` would do to every projected SKU's figures, computed by the one ATS
        function on the read model's current state, the change decided as the policy PUTs
        decide it. Writes nothing. `limit` (1..1000) changes per page from `cursor`;
        `min_position` as in `list_items`.

        Raises InvalidQuery (`limit`, `cursor`), what the PUTs raise for the change
        (atp.errors.InvalidCommand and its kinds, field named), ReadModelBehind,
        ReadModelRebuilding."""
        _check_limit(limit)
        scope = hashlib.sha256(msgspec.json.encode(change, order="sorted")).hexdigest()
        after = self.cursors.decode(cursor, "preview", tuple[int, str, str], scope)
        meta = await self._complete_meta(min_position)
        now = self.clock()
        named = sorted({c.sku for c in change.safety_stock if c.sku is not None})
        loaded = await self.read.model.item_states(named)
        items = {sku: item for sku, item in zip(named, loaded, strict=True) if item is not None}
        policies, changed = apply_change(change, meta.policies, items, now)
        states = [item async for item in self._all_states()]
        moved = moved_channels(change, meta.policies, policies)
        seen, totals, changes = await asyncio.to_thread(
            preview_states, states, meta.policies, policies, changed, now, moved
        )
        start = 0 if after is None else bisect_right(changes, tuple(after), key=change_key)
        page = changes[start : start + limit]
        more = start + limit < len(changes)
        next_cursor = self.cursors.encode("preview", change_key(page[-1]), scope) if more else None
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
        before = self.cursors.decode(cursor, "policy-history", int)
        entries = await asyncio.to_thread(policy_changes, self.ledger)
        if before is not None:
            entries = [e for e in entries if e.position < before]
        page = entries[:limit]
        more = len(entries) > limit
        return PolicyHistoryPage(
            page, self.cursors.encode("policy-history", page[-1].position) if more else None
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
