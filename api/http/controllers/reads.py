"""Availability and item reads, served from the read model (Redis, or in process).

The hot path is one Redis command per SKU and returns the stored document as is.
`min_position` (a position from a write's ATP-Position header) waits briefly until the read
model includes it: read-your-writes across processes.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, get
from litestar.params import FromPath, FromQuery, Parameter, QueryParameter

from adapters.ledger import item_history
from api.http import schemas as s
from api.http.controllers.common import (
    AVAILABILITY_READ,
    ledger,
    path_code,
    query_code,
    service,
)
from api.http.decoding import given_twice
from api.http.openapi import returns
from api.http.problems import ApiProblem
from api.http.views import history_entry
from api.service.queries import ReadSide
from projections.views import AvailabilityView, ItemView, empty_availability

OPT = {"scopes": (AVAILABILITY_READ,)}
JSON = "application/json"
MinPosition = Annotated[int | None, Parameter(ge=0, le=s.MAX_POSITION, required=False)]


def _read_side(request: Request[Any, Any, Any]) -> ReadSide:
    """The app's ReadSide (Litestar's State by item: its attribute access is several times
    slower, on the hottest route)."""
    read: ReadSide = request.scope["app"].state["read"]
    return read


def _min_position(request: Request[Any, Any, Any]) -> int | None:
    """`?min_position=N`, read by hand on the hottest route (a declared query parameter
    costs a validation pass on every request)."""
    if b"min_position" not in request.scope["query_string"]:
        return None
    given = request.query_params.getall("min_position", ())
    if len(given) > 1:  # as strict_input refuses a declared one-value parameter given twice
        raise given_twice("min_position")
    raw = given[0] if given else ""
    # ASCII digits only (`str.isdigit` accepts `²`, which `int` refuses), and a position.
    if not (raw.isascii() and raw.isdigit() and int(raw) <= s.MAX_POSITION):
        raise ApiProblem(
            422,
            "validation-failed",
            f"min_position: must be an integer 0..{s.MAX_POSITION}",
            field="min_position",
        )
    return int(raw)


@get(
    "/v1/availability/{channel:str}/{sku:str}",
    opt={**OPT, "query": ("min_position",)},  # read by hand: _min_position
    responses=returns(200, AvailabilityView, "What the channel may sell of the SKU"),
)
async def availability_one(
    request: Request[Any, Any, Any], channel: FromPath[str], sku: FromPath[str]
) -> Response[bytes]:
    """One channel's figure for one SKU: one Redis command. `?min_position=N` waits until
    the read model includes ledger position N (read-your-writes), else 409."""
    read = _read_side(request)
    channel, sku = path_code(channel, "channel"), path_code(sku, "sku")
    min_position = _min_position(request)
    if min_position is not None:
        await read.wait_for(min_position)
    body = (await read.model.availability(channel, [sku]))[0]
    if body is None:
        bodies, meta = await read.absent(
            lambda: read.model.availability(channel, [sku]), lambda b: b[0] is None, [sku]
        )
        body = bodies[0]
        if body is None:
            read.check_channel(meta, channel)
            body = empty_availability(sku, channel, meta.position)
    return Response(body, media_type=JSON)


@get(
    "/v1/availability/{channel:str}",
    opt=OPT,
    responses=returns(200, s.AvailabilityList, "One document per SKU asked"),
)
async def availability_many(
    request: Request[Any, Any, Any],
    channel: FromPath[str],
    sku: Annotated[list[str], QueryParameter(required=True)],
    min_position: MinPosition = None,
) -> Response[bytes]:
    read = _read_side(request)
    channel = path_code(channel, "channel")
    if len(sku) > s.MAX_LINES:
        raise ApiProblem(413, "too-many-skus", f"at most {s.MAX_LINES} SKUs per request")
    skus = [query_code(x, "sku", repeatable=True) for x in dict.fromkeys(sku)]
    if min_position is not None:
        await read.wait_for(min_position)
    bodies = await read.model.availability(channel, skus)
    if any(b is None for b in bodies):
        bodies, meta = await read.absent(
            lambda: read.model.availability(channel, skus),
            lambda b: None in b,
            [x for x, b in zip(skus, bodies, strict=True) if b is None],
        )
        if None in bodies:
            read.check_channel(meta, channel)
        bodies = [
            b if b is not None else empty_availability(x, channel, meta.position)
            for x, b in zip(skus, bodies, strict=True)
        ]
    return Response(b'{"items":[' + b",".join(bodies) + b"]}", media_type=JSON)  # type: ignore[arg-type]


@get("/v1/items/{sku:str}", opt=OPT, responses=returns(200, ItemView, "The item's figures"))
async def get_item(
    request: Request[Any, Any, Any],
    sku: FromPath[str],
    min_position: MinPosition = None,
    as_of: FromQuery[datetime | None] = None,
) -> Response[bytes]:
    """The item's figures from the read model; `?as_of=<RFC 3339>` computes them from the
    ledger as they stood at that time (policies as of then too; a future time is 422)."""
    sku = path_code(sku, "sku")
    if as_of is not None:
        view = await request.app.state.reconciliations.item_as_of(sku, as_of)
        return Response(msgspec.json.encode(view), media_type=JSON)
    now = service(request).clock()
    body = await _read_side(request).item_document(sku, now, min_position)
    return Response(body, media_type=JSON)


@get("/v1/items/{sku:str}/history", opt=OPT)
async def get_history(
    request: Request[Any, Any, Any],
    sku: FromPath[str],
    after: Annotated[int, Parameter(ge=0, le=s.MAX_POSITION)] = 0,
    limit: Annotated[int, Parameter(ge=1, le=1000)] = 100,
) -> s.HistoryPage:
    sku = path_code(sku, "sku")
    rows = await asyncio.to_thread(item_history, ledger(request), sku, after, limit)
    entries = [history_entry(r.position, r.occurred_at, r.metadata, r.event) for r in rows]
    next_after = rows[-1].position if len(rows) == limit else None
    return s.HistoryPage(entries=entries, next_after=next_after)


ROUTES = [availability_one, availability_many, get_item, get_history]
