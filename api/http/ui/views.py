"""The planner page's read-only views: the low- and out-of-stock list per channel (the
planner's paged lists), an item (per-location figures, each channel's derivation, its
history) and the operations view (what /ready computes, with the pushers' dead letters).
"""

from __future__ import annotations

import contextlib
from typing import Any
from urllib.parse import quote

import msgspec
from litestar import Request, get
from litestar.params import FromPath
from litestar.response import Redirect, Template

from api.http import schemas as s
from api.http.controllers.admin import readiness
from api.http.controllers.common import (
    path_code,
    query_code,
)
from api.http.ui.access import (
    Refused,
    planner,
    policy_text,
    reader,
    render,
)
from api.http.views import history_entry
from api.service.planner import MAX_LIMIT, STATUSES
from api.service.pushstatus import dead_letters, reports

HISTORY_PAGE = 100
"""History entries per page of the item page."""
LIST_PAGE = 50
"""SKUs per page of the low-stock list."""


# --- low and out of stock -----------------------------------------------------------------


@get("/stock")
async def stock_page(request: Request[Any, Any, Any]) -> Template:
    """The SKUs of one channel with one status (low_stock by default: the low-stock
    report), `limit` (1..1000, default LIST_PAGE) per page in SKU order, paged by the
    list's cursor (`Planner.list_items`, the read model's indexes)."""
    who = await reader(request)
    channels = [c.code for c in await planner(request).channels()]
    channel = request.query_params.get("channel") or (channels[0] if channels else "")
    status = request.query_params.get("status") or "low_stock"
    raw_limit = request.query_params.get("limit") or str(LIST_PAGE)
    if not (raw_limit.isascii() and raw_limit.isdigit() and 1 <= int(raw_limit) <= MAX_LIMIT):
        raise Refused(422, f"limit: must be a whole number 1..{MAX_LIMIT}")
    context: dict[str, Any] = {
        "channels": channels,
        "channel": channel,
        "status": status,
        "limit": int(raw_limit),
        "items": [],
    }
    if status not in STATUSES:
        raise Refused(422, f"status: must be one of {', '.join(STATUSES)}")
    if channel:
        cursor = request.query_params.get("cursor") or None
        page = await planner(request).list_items(
            channel=query_code(channel, "channel"),
            status=status,
            limit=int(raw_limit),
            cursor=cursor,
        )
        rows = [{"sku": r.sku, **msgspec.to_builtins(r.channels[0])} for r in page.items]
        context |= {"items": rows, "next_cursor": page.next_cursor}
    return render(request, who, "stock.html", nav="stock", **context)


# --- items ---------------------------------------------------------------------------------


@get("/items")
async def items_page(request: Request[Any, Any, Any]) -> Template | Redirect:
    who = await reader(request)
    sku = request.query_params.get("sku", "")
    if sku:
        return Redirect(f"/ui/items/{quote(sku, safe='')}", status_code=303)
    return render(request, who, "items.html", nav="items", sku="")


_SHOWN = ("position", "type", "occurred_at", "location", "quantity")


def _history_row(entry: dict[str, Any]) -> dict[str, Any]:
    """A history entry (as `GET /v1/items/{sku}/history` gives it) as a table row: its
    position, time, type, location and quantity, and the rest of its fields as details."""
    hidden = {*_SHOWN, "correlation_id", "sku"}
    details = policy_text(
        {k: v for k, v in entry.items() if k not in hidden and v not in (None, [], {})}
    )
    return {name: entry.get(name) for name in _SHOWN} | {"details": details}


@get("/items/{sku:str}")
async def item_page(request: Request[Any, Any, Any], sku: FromPath[str]) -> Template:
    """Per-location figures and each channel's derivation and the item's history, as
    `GET /v1/items/{sku}` and `GET /v1/items/{sku}/history` answer them (the planner's
    `item` and `item_history`), `?after=` paging on."""
    who = await reader(request)
    sku = path_code(sku, "sku")
    raw_after = request.query_params.get("after", "0")
    if not (raw_after.isascii() and raw_after.isdigit() and int(raw_after) <= s.MAX_POSITION):
        raise Refused(422, f"after: must be a ledger position 0..{s.MAX_POSITION}")
    item = await planner(request).item(sku)
    rows, next_after = await planner(request).item_history(sku, int(raw_after), HISTORY_PAGE)
    entries = [
        _history_row(history_entry(r.position, r.occurred_at, r.metadata, r.event)) for r in rows
    ]
    return render(
        request, who, "item.html", nav="items", item=item, history=entries, next_after=next_after
    )


# --- operations ----------------------------------------------------------------------------


@get("/operations")
async def operations_page(request: Request[Any, Any, Any]) -> Template:
    """The projector's lag, the backing services and each pusher's delay and dead letters:
    what /ready computes (`readiness`), with the pushers' reported dead-letter counts."""
    who = await reader(request)
    _, body = await readiness(request)
    checks = body["checks"]
    found: list[dict[str, str]] = []
    redis_client = request.app.state.redis
    if redis_client is not None:
        with contextlib.suppress(Exception):
            found = await reports(redis_client, request.app.state.settings.redis_prefix)
    dead = dead_letters(found)
    pushers = [
        {"name": name, **check, "dead_letters": f"{dead.get(name, 0):g}"}
        for name, check in sorted(checks.get("pushers", {}).items())
    ]
    services = [(n, checks[n]) for n in ("ledger", "writer", "read_model") if n in checks]
    return render(
        request,
        who,
        "operations.html",
        nav="operations",
        health=body["status"],
        projector=checks.get("projector"),
        checks=services,
        pushers=pushers,
        embedded=request.app.state.settings.embedded,
    )


ROUTES = [stock_page, items_page, item_page, operations_page]
