"""The item stream (one per SKU): stock by location, holds, allocations, shortfalls,
expected supply and SKU safety stock."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any, assert_never

import msgspec
from immutables import Map

from atp import events as ev
from atp.events import Hold
from atp.state.policies import GLOBAL, _set_rule


# gc=False (msgspec): immutable values, never part of a reference cycle, so the collector
# need not track them: the writer caches ~100,000 states built of these (issue 12).
class LocationStock(msgspec.Struct, frozen=True, gc=False):
    """Counters of one SKU at one location.

    `held` counts non-backorder holds not yet released, expired-but-unswept ones included;
    `backordered` counts units of `incoming` promised by holds or allocations.
    """

    on_hand: int = 0
    allocated: int = 0
    held: int = 0
    damaged: int = 0
    in_transit: int = 0
    incoming: int = 0
    backordered: int = 0


class ExpectedSupply(msgspec.Struct, frozen=True, gc=False):
    """What one reference (a purchase order) still expects of a SKU at a location."""

    quantity: int
    eta: datetime | None = None


class ItemHold(msgspec.Struct, frozen=True, gc=False):
    """One reservation's holds of this SKU."""

    reservation_id: str
    channel: str
    holds: tuple[Hold, ...]
    expires_at: datetime


class Holds:
    """A SKU's live holds by reservation id, in the order they were taken (a replaced hold
    keeps its place, as in a dict): a persistent map, so `set` and `delete` return a new
    Holds in O(log n) without copying the others (immutables' HAMT, each hold kept with
    its sequence number). Reads are those of a read-only dict (`get`, `in`, `len`,
    iteration, `keys`/`values`/`items` in insertion order, `==` with any mapping).

    Stored as the JSON object `{reservation_id: hold}` in insertion order, the shape the
    plain dict had (encode and decode with `state_enc_hook` / `state_dec_hook`)."""

    __slots__ = ("_map", "_next")

    def __init__(self, holds: Mapping[str, ItemHold] | None = None) -> None:
        numbered = ((rid, seq, hold) for seq, (rid, hold) in enumerate((holds or {}).items(), 1))
        self._map, self._next = _numbered_map(numbered)

    @classmethod
    def _of(cls, entries: Map[str, tuple[int, ItemHold]], next_seq: int) -> Holds:
        made = cls.__new__(cls)
        made._map = entries
        made._next = next_seq
        return made

    def set(self, reservation_id: str, hold: ItemHold) -> Holds:
        """These holds with `hold` for `reservation_id` (appended, or replaced in place)."""
        had = self._map.get(reservation_id)
        if had is not None:
            return Holds._of(self._map.set(reservation_id, (had[0], hold)), self._next)
        return Holds._of(self._map.set(reservation_id, (self._next, hold)), self._next + 1)

    def delete(self, reservation_id: str) -> Holds:
        """These holds without `reservation_id` (the same object when it is absent)."""
        if reservation_id not in self._map:
            return self
        return Holds._of(self._map.delete(reservation_id), self._next)

    def get(self, reservation_id: str, default: ItemHold | None = None) -> ItemHold | None:
        """The hold of `reservation_id`, or `default`."""
        entry = self._map.get(reservation_id)
        return default if entry is None else entry[1]

    def __getitem__(self, reservation_id: str) -> ItemHold:
        return self._map[reservation_id][1]

    def __contains__(self, reservation_id: object) -> bool:
        return reservation_id in self._map

    def __len__(self) -> int:
        return len(self._map)

    def _ordered(self) -> list[tuple[str, tuple[int, ItemHold]]]:
        return sorted(self._map.items(), key=lambda entry: entry[1][0])

    def items(self) -> list[tuple[str, ItemHold]]:
        """(reservation id, hold) pairs in the order the holds were taken."""
        return [(rid, hold) for rid, (_, hold) in self._ordered()]

    def keys(self) -> list[str]:
        """Reservation ids in the order the holds were taken."""
        return [rid for rid, _ in self._ordered()]

    def values(self) -> list[ItemHold]:
        """The holds in the order they were taken."""
        return [hold for _, (_, hold) in self._ordered()]

    def entry(self, reservation_id: str) -> tuple[int, ItemHold] | None:
        """(sequence number, hold) of `reservation_id`, or None: the number orders the
        holds as they were taken (the Redis read model stores each hold with it)."""
        return self._map.get(reservation_id)

    def entries(self) -> Iterator[tuple[str, int, ItemHold]]:
        """(reservation id, sequence number, hold) of every hold, in no particular order."""
        return ((rid, seq, hold) for rid, (seq, hold) in self._map.items())

    def numbered(self, reservation_id: str, seq: int) -> Holds:
        """These holds with `reservation_id`'s hold given sequence number `seq`, which must
        be above every other hold's (the projector numbers each hold with the ledger
        position that took it, so a model's stored numbers do not depend on its history)."""
        entry = self._map.get(reservation_id)
        if entry is None:
            return self
        return Holds._of(self._map.set(reservation_id, (seq, entry[1])), max(self._next, seq + 1))

    @classmethod
    def from_entries(cls, entries: Iterable[tuple[str, int, ItemHold]]) -> Holds:
        """The holds with these (reservation id, sequence number, hold) entries, ordered by
        their numbers (the inverse of `entries`)."""
        return cls._of(*_numbered_map(entries))

    def unordered(self) -> Iterator[ItemHold]:
        """The holds in no particular order (for sums and minima: no sort)."""
        return (hold for _, hold in self._map.values())

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Holds):
            return self._map == other._map or dict(self.items()) == dict(other.items())
        if isinstance(other, Mapping):
            return dict(self.items()) == dict(other.items())
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Holds({dict(self.items())!r})"


def _numbered_map(
    entries: Iterable[tuple[str, int, ItemHold]],
) -> tuple[Map[str, tuple[int, ItemHold]], int]:
    """The persistent map of (reservation id, sequence number, hold) entries, and the next
    sequence number (one above the highest)."""
    mutation = Map[str, tuple[int, ItemHold]]().mutate()
    last = 0
    for rid, seq, hold in entries:
        mutation[rid] = (seq, hold)
        last = max(last, seq)
    return mutation.finish(), last + 1


NO_HOLDS = Holds()


class ItemState(msgspec.Struct, frozen=True, gc=False):
    """Everything about one SKU: the consistency boundary of every stock decision.

    Encode and decode it with `state_enc_hook` / `state_dec_hook` (msgspec hooks): `holds`
    is a persistent map, stored as a JSON object."""

    sku: str
    locations: dict[str, LocationStock] = {}
    holds: Holds = NO_HOLDS
    allocations: dict[str, tuple[Hold, ...]] = {}
    """Open (unshipped, uncanceled) allocations by order id."""
    safety_stock: dict[str, int] = {}
    """SKU rules by location code; GLOBAL is the rule for this SKU at every location."""
    shortfalls: dict[str, int] = {}
    """Units orders took that atp could not cover, by order id, oldest first: arrivals at
    the orders' channels' locations fill them before anything becomes sellable."""
    expected: dict[str, dict[str, ExpectedSupply]] = {}
    """Referenced incoming supply: location -> reference -> what it still expects (part of
    the location's `incoming`, which also counts supply sent without a reference)."""
    next_expiry: datetime | None = None
    """Earliest `expires_at` among live holds, so reads can skip the expiry scan."""

    def at(self, location: str) -> LocationStock:
        """The SKU's stock at `location` (all zeros when it has none)."""
        return self.locations.get(location) or _EMPTY_STOCK

    def next_live_expiry(self, now: datetime) -> datetime | None:
        """The earliest `expires_at` after `now` among holds (None: none is live then).

        O(1) while `next_expiry` is still ahead of `now`; a scan of the holds otherwise."""
        if self.next_expiry is None or self.next_expiry > now:
            return self.next_expiry
        live = (h.expires_at for h in self.holds.unordered() if h.expires_at > now)
        return min(live, default=None)


def state_enc_hook(obj: Any) -> Any:
    """msgspec `enc_hook` for states: `Holds` encodes as a JSON object in insertion order.
    Raises NotImplementedError for any other unsupported type (msgspec's contract)."""
    if isinstance(obj, Holds):
        return dict(obj.items())
    raise NotImplementedError(f"cannot encode {type(obj).__name__}")


def state_dec_hook(type_: Any, obj: Any) -> Any:
    """msgspec `dec_hook` for states: a JSON object becomes `Holds` (the holds typed and
    validated as `ItemHold`, in the object's order). Raises NotImplementedError for any
    other type, msgspec.ValidationError for a malformed hold."""
    if type_ is Holds:
        return Holds(msgspec.convert(obj, dict[str, ItemHold]))
    raise NotImplementedError(f"cannot decode {type_!r}")


_EMPTY_STOCK = LocationStock()


def _bump(state: ItemState, location: str, **deltas: int) -> dict[str, LocationStock]:
    stock = state.at(location)
    changed = {name: getattr(stock, name) + delta for name, delta in deltas.items()}
    return {**state.locations, location: msgspec.structs.replace(stock, **changed)}


def _with_locations(state: ItemState, locations: dict[str, LocationStock]) -> ItemState:
    return msgspec.structs.replace(state, locations=locations)


def _apply_holds(
    state: ItemState, holds: tuple[Hold, ...], sign: int, regular_field: str
) -> dict[str, LocationStock]:
    locations = state.locations
    for hold in holds:
        field = "backordered" if hold.backorder else regular_field
        interim = msgspec.structs.replace(state, locations=locations)
        locations = _bump(interim, hold.location, **{field: sign * hold.quantity})
    return locations


def _next_expiry(
    state: ItemState, holds: Holds, gone: datetime | None, added: datetime | None
) -> datetime | None:
    """The earliest expiry of `holds`, the state's holds after one hold expiring at `gone`
    left and/or one expiring at `added` came. Kept incrementally: the holds are scanned
    only when the earliest one left."""
    earliest = state.next_expiry
    if gone is not None and (earliest is None or gone <= earliest):
        return min((h.expires_at for h in holds.unordered()), default=None)
    if added is not None and (earliest is None or added < earliest):
        return added
    return earliest


def _drop_hold(state: ItemState, reservation_id: str) -> ItemState:
    hold = state.holds.get(reservation_id)
    if hold is None:
        return state
    holds = state.holds.delete(reservation_id)
    locations = _apply_holds(state, hold.holds, -1, "held")
    expiry = _next_expiry(state, holds, hold.expires_at, None)
    return msgspec.structs.replace(state, locations=locations, holds=holds, next_expiry=expiry)


def merge_holds(
    existing: tuple[Hold, ...], added: tuple[Hold, ...], sign: int = 1
) -> tuple[Hold, ...]:
    """Add (or with sign -1 subtract) quantities per (location, backorder); drops zeros."""
    totals: dict[tuple[str, bool], int] = {}
    for h in existing:
        key = (h.location, h.backorder)
        totals[key] = totals.get(key, 0) + h.quantity
    for h in added:
        key = (h.location, h.backorder)
        totals[key] = totals.get(key, 0) + sign * h.quantity
    return tuple(Hold(loc, qty, bo) for (loc, bo), qty in totals.items() if qty)


def _set_allocations(
    state: ItemState, order_id: str, allocs: tuple[Hold, ...]
) -> dict[str, tuple[Hold, ...]]:
    allocations = dict(state.allocations)
    if allocs:
        allocations[order_id] = allocs
    else:
        allocations.pop(order_id, None)
    return allocations


def evolve_item(state: ItemState, event: ev.ItemEvent) -> ItemState:
    """The SKU's state after `event`: stock by location, holds, allocations, shortfalls,
    expected supply and safety stock (quantities in units)."""
    match event:
        case ev.StockReceived(location=loc, quantity=q, incoming_consumed=consumed, reference=ref):
            received = _with_locations(state, _bump(state, loc, on_hand=q, incoming=-consumed))
            return _consume_expected(received, state.at(loc).incoming, loc, ref, consumed)
        case ev.StockAdjusted(location=loc, delta=delta, damaged=damaged):
            deltas = {"on_hand": delta, "damaged": delta} if damaged else {"on_hand": delta}
            return _with_locations(state, _bump(state, loc, **deltas))
        case ev.StockCounted(location=loc, counted=counted):
            stock = state.at(loc)
            new = msgspec.structs.replace(
                stock, on_hand=counted, damaged=min(stock.damaged, counted)
            )
            return _with_locations(state, {**state.locations, loc: new})
        case ev.StockReconciled(location=loc, drift=drift):
            stock = state.at(loc)
            on_hand = stock.on_hand + drift
            new = msgspec.structs.replace(
                stock, on_hand=on_hand, damaged=min(stock.damaged, on_hand)
            )
            return _with_locations(state, {**state.locations, loc: new})
        case ev.TransferDispatched(from_location=src, to_location=dst, quantity=q):
            moved = _with_locations(state, _bump(state, src, on_hand=-q))
            return _with_locations(moved, _bump(moved, dst, in_transit=q))
        case ev.TransferArrived(to_location=dst, quantity=q):
            return _with_locations(state, _bump(state, dst, in_transit=-q, on_hand=q))
        case ev.IncomingExpected(location=loc, quantity=q, previous=previous, reference=ref):
            moved = _with_locations(state, _bump(state, loc, incoming=q - previous))
            if ref is None:
                return moved
            had = state.expected.get(loc, {}).get(ref)
            total = (had.quantity if had else 0) + q - previous
            return _with_expected(moved, loc, ref, ExpectedSupply(total, event.eta))
        case ev.TransferLost(to_location=dst, quantity=q):
            return _with_locations(state, _bump(state, dst, in_transit=-q))
        case ev.TransferReturned(from_location=src, to_location=dst, quantity=q):
            back = _with_locations(state, _bump(state, dst, in_transit=-q))
            return _with_locations(back, _bump(back, src, on_hand=q))
        case ev.StockHeld(reservation_id=rid, channel=channel, holds=holds, expires_at=exp):
            replaced = state.holds.get(rid)
            item_holds = state.holds.set(rid, ItemHold(rid, channel, holds, exp))
            gone = replaced.expires_at if replaced is not None else None
            return msgspec.structs.replace(
                state,
                locations=_apply_holds(state, holds, 1, "held"),
                holds=item_holds,
                next_expiry=_next_expiry(state, item_holds, gone, exp),
            )
        case ev.HoldExtended(reservation_id=rid, expires_at=exp):
            hold = state.holds.get(rid)
            if hold is None:
                return state
            item_holds = state.holds.set(rid, msgspec.structs.replace(hold, expires_at=exp))
            expiry = _next_expiry(state, item_holds, hold.expires_at, exp)
            return msgspec.structs.replace(state, holds=item_holds, next_expiry=expiry)
        case ev.HoldReleased(reservation_id=rid) | ev.HoldExpired(reservation_id=rid):
            return _drop_hold(state, rid)
        case ev.HoldCommitted(reservation_id=rid, order_id=order_id):
            hold = state.holds.get(rid)
            if hold is None:
                return state
            dropped = _drop_hold(state, rid)
            return _allocate(dropped, order_id, hold.holds)
        case ev.StockAllocated(order_id=order_id, allocations=allocs):
            return _allocate(state, order_id, allocs)
        case ev.AllocationReleased(order_id=order_id, allocations=allocs):
            current = state.allocations.get(order_id, ())
            return msgspec.structs.replace(
                state,
                locations=_apply_holds(state, allocs, -1, "allocated"),
                allocations=_set_allocations(state, order_id, merge_holds(current, allocs, -1)),
            )
        case ev.AllocationMoved(order_id=order_id, to_location=dst, moved=moved):
            current = state.allocations.get(order_id, ())
            total = sum(h.quantity for h in moved)
            taken = msgspec.structs.replace(
                state, locations=_apply_holds(state, moved, -1, "allocated")
            )
            allocs = merge_holds(merge_holds(current, moved, -1), (Hold(dst, total),))
            return msgspec.structs.replace(
                taken,
                locations=_bump(taken, dst, allocated=total),
                allocations=_set_allocations(state, order_id, allocs),
            )
        case ev.StockShipped(order_id=order_id, location=loc, quantity=q, backorder_quantity=bo):
            shipped = tuple(
                h for h in (Hold(loc, q - bo, False), Hold(loc, bo, True)) if h.quantity
            )
            current = state.allocations.get(order_id, ())
            locations = _bump(state, loc, on_hand=-q, allocated=-(q - bo), backordered=-bo)
            return msgspec.structs.replace(
                state,
                locations=locations,
                allocations=_set_allocations(state, order_id, merge_holds(current, shipped, -1)),
            )
        case ev.StockReturned(location=loc, quantity=q, disposition=disposition):
            deltas = {"on_hand": q, "damaged": q} if disposition == "damaged" else {"on_hand": q}
            return _with_locations(state, _bump(state, loc, **deltas))
        case ev.SafetyStockSet(location=location, quantity=quantity):
            rules = _set_rule(state.safety_stock, location or GLOBAL, quantity)
            return msgspec.structs.replace(state, safety_stock=rules)
        case ev.ShortfallRecorded(order_id=order_id, quantity=q):
            shortfalls = {**state.shortfalls, order_id: state.shortfalls.get(order_id, 0) + q}
            return msgspec.structs.replace(state, shortfalls=shortfalls)
        case ev.ShortfallResolved(order_id=order_id, quantity=q):
            # An order partly filled keeps its place: the oldest order is filled first.
            shortfalls = {
                k: v - q if k == order_id else v
                for k, v in state.shortfalls.items()
                if k != order_id or v > q
            }
            return msgspec.structs.replace(state, shortfalls=shortfalls)
        case ev.ShortfallFilled(order_id=order_id, location=loc, quantity=q):
            resolved = evolve_item(
                state, ev.ShortfallResolved(sku=state.sku, order_id=order_id, quantity=q)
            )
            return _allocate(resolved, order_id, (Hold(loc, q),))
        case ev.OverPromised():
            return state  # a record of what a fact left uncovered: the fact itself moved stock
        case _:
            assert_never(event)


def _consume_expected(
    state: ItemState, incoming: int, location: str, reference: str | None, consumed: int
) -> ItemState:
    """A receipt with a known reference consumes that reference's supply; any other
    receipt consumes supply sent without a reference first, then referenced supply in the
    order it was announced. `incoming` is the location's incoming before the receipt."""
    at = state.expected.get(location, {})
    if reference in at:
        order = [reference]
    else:
        consumed -= min(consumed, max(0, incoming - sum(s.quantity for s in at.values())))
        order = list(at)
    for ref in order:
        if consumed <= 0:
            break
        supply = at[ref]
        take = min(consumed, supply.quantity)
        left = msgspec.structs.replace(supply, quantity=supply.quantity - take)
        state = _with_expected(state, location, ref, left)
        consumed -= take
    return state


def _with_expected(
    state: ItemState, location: str, reference: str, supply: ExpectedSupply
) -> ItemState:
    at = {k: v for k, v in state.expected.get(location, {}).items() if k != reference}
    if supply.quantity > 0:
        at[reference] = supply
    expected = {k: v for k, v in state.expected.items() if k != location}
    if at:
        expected[location] = at
    return msgspec.structs.replace(state, expected=expected)


def _allocate(state: ItemState, order_id: str, allocs: tuple[Hold, ...]) -> ItemState:
    current = state.allocations.get(order_id, ())
    return msgspec.structs.replace(
        state,
        locations=_apply_holds(state, allocs, 1, "allocated"),
        allocations=_set_allocations(state, order_id, merge_holds(current, allocs)),
    )
