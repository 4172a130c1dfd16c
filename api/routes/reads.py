"""Availability and item reads (computed from the ledger's state by the one ATS function)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from litestar import Request, get
from litestar.params import Parameter

from adapters.ledger import Ledger, history
from api import schemas as s
from api.problems import ApiProblem
from api.routes.common import AVAILABILITY_READ, ledger, path_code, service
from api.views import history_entry, item_view
from atp.ats import channel_availability
from atp.decide import POLICIES
from atp.state import ItemState, Policies

OPT = {"scopes": (AVAILABILITY_READ,)}


def _snapshot(lg: Ledger, skus: list[str]) -> tuple[int, Policies, dict[str, ItemState]]:
    position = lg.head()
    policies, _ = lg.load(POLICIES)
    return position, policies, {sku: lg.load(("item", sku))[0] for sku in skus}


async def _availability(
    request: Request[Any, Any, Any], channel: str, skus: list[str]
) -> list[s.AvailabilityView]:
    position, policies, items = await asyncio.to_thread(_snapshot, ledger(request), skus)
    chan = policies.channels.get(channel)
    if chan is None:
        raise ApiProblem(404, "not-found", f"channel {channel!r} not found")
    now = service(request).clock()
    views = []
    for sku in skus:
        a = channel_availability(items[sku], policies, chan, now)
        views.append(s.AvailabilityView(sku, channel, a.available, a.status, position))
    return views


@get("/v1/availability/{channel:str}/{sku:str}", opt=OPT)
async def availability_one(
    request: Request[Any, Any, Any], channel: str, sku: str
) -> s.AvailabilityView:
    channel = path_code(channel, "channel")
    sku = path_code(sku, "sku")
    return (await _availability(request, channel, [sku]))[0]


@get("/v1/availability/{channel:str}", opt=OPT)
async def availability_many(
    request: Request[Any, Any, Any],
    channel: str,
    sku: Annotated[list[str], Parameter(query="sku", required=True)],
) -> s.AvailabilityList:
    channel = path_code(channel, "channel")
    if len(sku) > s.MAX_LINES:
        raise ApiProblem(413, "too-many-skus", f"at most {s.MAX_LINES} SKUs per request")
    skus = [path_code(x, "sku") for x in dict.fromkeys(sku)]
    return s.AvailabilityList(items=await _availability(request, channel, skus))


@get("/v1/items/{sku:str}", opt=OPT)
async def get_item(request: Request[Any, Any, Any], sku: str) -> s.ItemView:
    sku = path_code(sku, "sku")
    position, policies, items = await asyncio.to_thread(_snapshot, ledger(request), [sku])
    return item_view(items[sku], policies, service(request).clock(), position)


@get("/v1/items/{sku:str}/history", opt=OPT)
async def get_history(
    request: Request[Any, Any, Any],
    sku: str,
    after: Annotated[int, Parameter(ge=0)] = 0,
    limit: Annotated[int, Parameter(ge=1, le=1000)] = 100,
) -> s.HistoryPage:
    sku = path_code(sku, "sku")
    rows = await asyncio.to_thread(
        history, ledger(request), [("item", sku), POLICIES], after, limit
    )
    # Every policy event (channels, locations, location and global safety stock) bears on
    # the SKU's figures; its own safety-stock rules are on its own stream.
    entries = [history_entry(r.position, r.occurred_at, r.metadata, r.event) for r in rows]
    next_after = rows[-1].position if len(rows) == limit else None
    return s.HistoryPage(entries=entries, next_after=next_after)


ROUTES = [availability_one, availability_many, get_item, get_history]
