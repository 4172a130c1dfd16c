"""WooCommerce order webhooks: signature check and the mapping of an order to a snapshot.

The snapshot rule below is applied by api.service.order_snapshots.

A webhook (or a polled order) is a snapshot of the order when it was built, not a record of
each change: deliveries are coalesced, repeated, lost or late. Each snapshot is the desired
state of the order (status and lines), and atp converges to it (`atp.commands.ReviseOrder`):
processing/on-hold/completed are open sales; pending, checkout-draft, cancelled, failed,
refunded and trash are not (what is unshipped is released). The snapshot rule:

* strictly older (`date_modified_gmt`) than the last applied: dropped (times compare as
  instants; a deletion, `order.deleted` with only the id, carries none and is the newest;
  any other order without it is refused, 422 naming the field);
* the same time and the same state as the last applied: dropped (a repeated delivery);
* the same time and another state (one-second resolution), or newer: applied.

Lines atp cannot map (SKU missing or not a code, quantity not a positive integer up to
1,000,000) are recorded on the order as unmapped, with the reason, never as item state.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec

from adapters.records import WebhookOrderApplied
from atp import commands as cmd
from atp import events as ev

log = logging.getLogger("atp.webhooks")
SALE = frozenset({"processing", "on-hold", "completed"})
NOT_SALE = frozenset(
    {"pending", "checkout-draft", "cancelled", "failed", "refunded", "trash", "draft"}
)
_PING = re.compile(rb"^webhook_id=\d+$")
SKU = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}")
"""The contract's code pattern (CONTRACT.md), matched in full."""
MAX_QUANTITY = 1_000_000
MAX_LINES = 100
"""Most line items one order may carry (the API's documented line limit)."""


def signature(body: bytes, secret: str) -> str:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def verify(body: bytes, given: str | None, secrets: Iterable[str]) -> bool:
    """The raw body's signature against the current or the previous secret. A signature
    with non-ASCII characters is simply wrong (base64 is ASCII)."""
    if not given or not given.isascii():
        return False
    return any(hmac.compare_digest(signature(body, s), given) for s in secrets if s)


def is_ping(body: bytes) -> bool:
    return bool(_PING.match(body.strip()))


# --- reading an order ----------------------------------------------------------------------


class WooOrder(msgspec.Struct):
    """The parts of a WooCommerce order (wc/v3 order JSON) atp reads; the rest is ignored."""

    id: Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]
    status: Annotated[str, msgspec.Meta(max_length=64)]
    line_items: list[dict[str, Any]] = []
    date_modified_gmt: Annotated[str, msgspec.Meta(max_length=64)] = ""
    refunds: list[dict[str, Any]] = []


class NotAnOrder(ValueError):
    """A body that is not a WooCommerce order: `field` names the offending part, `status` is
    the HTTP status it deserves (400 unparsable, 413 too many lines, 422 otherwise)."""

    def __init__(self, detail: str, field: str = "body", status: int = 422) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.status = status


_decoder = msgspec.json.Decoder(WooOrder)
_FIELD = re.compile(r"at `\$\.?([^`]*)`")
_MISSING = re.compile(r"missing required field `([^`]*)`")


class _Deleted(msgspec.Struct):
    id: Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]


def deleted_order(body: bytes) -> bytes:
    """The snapshot a WooCommerce `order.deleted` delivery stands for: its body is only
    `{"id": N}` (the order was trashed or deleted, so it holds nothing any more); atp applies
    it as the order in status `trash` with no modification time, which the snapshot rule
    takes as the newest state (a store's clock and atp's may differ, so `now` would not do;
    a later `order.restored` carries its own time and applies after it).
    Raises NotAnOrder when the body carries no valid `id`."""
    try:
        gone = msgspec.json.decode(body, type=_Deleted)
    except msgspec.ValidationError as e:
        found = _MISSING.search(str(e)) or _FIELD.search(str(e))
        raise NotAnOrder(f"not a deleted order: {e}", found.group(1) if found else "body") from None
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as e:
        raise NotAnOrder(f"the body is not JSON: {e}", status=400) from None
    return msgspec.json.encode({"id": gone.id, "status": "trash", "line_items": []})


def parse_order(body: bytes) -> WooOrder:
    """Decode and check a delivery's body strictly; raises NotAnOrder."""
    try:
        order = _decoder.decode(body)
    except msgspec.ValidationError as e:
        found = _MISSING.search(str(e)) or _FIELD.search(str(e))
        field = found.group(1) if found else "body"
        raise NotAnOrder(f"not a WooCommerce order: {e}", field) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as e:
        raise NotAnOrder(f"the body is not JSON: {e}", status=400) from None
    except RecursionError:
        raise NotAnOrder("the body is nested too deeply") from None
    if len(order.line_items) > MAX_LINES:
        raise NotAnOrder(
            f"line_items has {len(order.line_items)} entries; at most {MAX_LINES}",
            "line_items",
            413,
        )
    if not order.date_modified_gmt and not (order.status == "trash" and not order.line_items):
        # Every WooCommerce order carries its modification time; only the snapshot of an
        # `order.deleted` delivery (deleted_order: trash, no lines) has none and counts as
        # the newest. An undated order would pass every later-dated one by that rule.
        raise NotAnOrder(
            "missing: a WooCommerce order carries date_modified_gmt "
            "(only an order.deleted delivery has none)",
            "date_modified_gmt",
        )
    if order.date_modified_gmt:
        try:
            modified = datetime.fromisoformat(order.date_modified_gmt)
        except ValueError:
            raise NotAnOrder("not a date and time", "date_modified_gmt") from None
        # One form for every delivery, so snapshots compare as instants: a time without an
        # offset is GMT (the field's name says so), one with an offset is converted to it.
        if modified.tzinfo is not None:
            modified = modified.astimezone(UTC).replace(tzinfo=None)
        order.date_modified_gmt = modified.isoformat()
    return order


def map_line(item: Mapping[str, Any]) -> tuple[str, int] | str:
    """(sku, quantity) of a line item, or why it cannot be mapped."""
    sku, quantity = item.get("sku"), item.get("quantity")
    if sku is None or sku == "":
        return "the line has no SKU"
    if not isinstance(sku, str):
        return f"sku is {type(sku).__name__}, not a string"
    if not SKU.fullmatch(sku):
        return "the SKU does not match the code pattern"
    if type(quantity) is not int:
        return f"quantity {quantity!r:.40} is not an integer"
    if not 1 <= quantity <= MAX_QUANTITY:
        return f"quantity {quantity} is not between 1 and {MAX_QUANTITY}"
    return sku, quantity


@dataclass(frozen=True)
class OrderSnapshot:
    order_id: str
    woo_id: int
    status: str
    modified: str
    ordered: dict[str, int]
    """Units per SKU on the order's mappable lines (refunds not deducted)."""
    unmapped: tuple[ev.UnmappedLine, ...] = ()
    refunds: tuple[int, ...] = ()
    """Ids of the order's refunds, as listed in the snapshot."""
    refunded: dict[str, int] = field(default_factory=dict)
    """Units per SKU refunded (from the store's refunds endpoint)."""
    delivery: str = ""
    """The delivery's X-WC-Webhook-Delivery-ID ("" for a polled order)."""

    @property
    def delivery_key(self) -> str:
        """What tells this delivery apart from another of the same second: id and state."""
        return f"{self.delivery}:{self.state}" if self.delivery else ""

    @property
    def lines(self) -> tuple[cmd.Line, ...]:
        """Units still wanted per SKU: ordered less refunded."""
        wanted = ((sku, q - self.refunded.get(sku, 0)) for sku, q in self.ordered.items())
        return tuple(cmd.Line(sku, q) for sku, q in wanted if q > 0)

    @property
    def state(self) -> str:
        """A digest of the desired state, to tell a repeated delivery from a new state."""
        lines = sorted((line.sku, line.quantity) for line in self.lines)
        unmapped = [(u.line, u.reason, u.sku) for u in self.unmapped]
        encoded = msgspec.json.encode([self.status, lines, unmapped, sorted(self.refunds)])
        return hashlib.sha256(encoded).hexdigest()[:32]

    def with_refunded(self, refunded: Mapping[str, int]) -> OrderSnapshot:
        return replace(self, refunded=dict(refunded))


def snapshot(store: str, order: WooOrder) -> OrderSnapshot:
    ordered: dict[str, int] = {}
    unmapped: list[ev.UnmappedLine] = []
    for i, item in enumerate(order.line_items):
        mapped = map_line(item)
        if isinstance(mapped, str):
            raw = item.get("sku")
            text = raw[:100] if isinstance(raw, str) else None
            unmapped.append(ev.UnmappedLine(line=i, reason=mapped, sku=text))
            continue
        sku, quantity = mapped
        if ordered.get(sku, 0) + quantity > MAX_QUANTITY:
            reason = f"the SKU's lines add up to more than {MAX_QUANTITY} units"
            unmapped.append(ev.UnmappedLine(line=i, reason=reason, sku=sku))
            continue
        ordered[sku] = ordered.get(sku, 0) + quantity
    refund_ids = (r.get("id") for r in order.refunds if isinstance(r, dict))
    return OrderSnapshot(
        order_id=f"woocommerce:{store}:{order.id}",
        woo_id=order.id,
        status=order.status,
        modified=order.date_modified_gmt,
        ordered=ordered,
        unmapped=tuple(unmapped),
        refunds=tuple(sorted(r for r in refund_ids if type(r) is int)),
    )


def refunded_units(refunds: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Units per SKU refunded, from `GET /orders/<id>/refunds` (each refund's line items
    carry a negative `quantity`); lines atp cannot map are left out."""
    units: dict[str, int] = {}
    for refund in refunds:
        for item in refund.get("line_items") or ():
            if not isinstance(item, dict) or type(item.get("quantity")) is not int:
                continue
            mapped = map_line({**item, "quantity": -item["quantity"]})
            if not isinstance(mapped, str):
                units[mapped[0]] = units.get(mapped[0], 0) + mapped[1]
    return units


def needs_refunds(snap: OrderSnapshot, last: WebhookOrderApplied | None) -> bool:
    """Whether the store must be asked for the order's refunds: its refund list changed."""
    return bool(snap.refunds) and (last is None or tuple(last.refunds) != snap.refunds)
