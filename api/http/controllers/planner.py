"""The planner's routes: paged lists from the read model (items, live holds, safety-stock
rules), the what-if preview of a policy change, and who changed which policy. Each route
checks its input and calls api.service.planner; nothing here computes."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, get, post
from litestar.params import JSONBody, Parameter

from api.http import schemas as s
from api.http.controllers.common import (
    AVAILABILITY_READ,
    POLICY_WRITE,
    RESERVATIONS_WRITE,
    is_code,
    query_code,
)
from api.http.controllers.policies import define_channel, define_location, set_safety_stock
from api.http.problems import ApiProblem
from api.service import planner as p

READ = {"scopes": (AVAILABILITY_READ, POLICY_WRITE)}
Limit = Annotated[int, Parameter(ge=1, le=p.MAX_LIMIT, description="Entries per page (1..1000).")]
Cursor = Annotated[
    str | None,
    Parameter(
        max_length=400,
        required=False,
        description="The `next_cursor` of the previous page (opaque); absent: the first page.",
    ),
]
Filter = Annotated[str | None, Parameter(max_length=64, required=False)]
MinPosition = Annotated[
    int | None,
    Parameter(
        ge=0,
        le=s.MAX_POSITION,
        required=False,
        description="Wait until the read model includes this ledger position (a write's "
        "ATP-Position), else 409.",
    ),
]


def _planner(request: Request[Any, Any, Any]) -> p.Planner:
    planner: p.Planner = request.app.state.planner
    return planner


def _code(value: str | None, name: str) -> str | None:
    return None if value is None else query_code(value, name)


@get("/v1/items", opt=READ)
async def list_items(
    request: Request[Any, Any, Any],
    channel: Filter = None,
    location: Filter = None,
    status: Annotated[
        str | None,
        Parameter(
            max_length=20,
            required=False,
            description="in_stock, low_stock, out_of_stock or backorder (needs `channel`); "
            "`low_stock` is the low-stock report.",
        ),
    ] = None,
    prefix: Annotated[str, Parameter(max_length=64, description="SKUs starting with it.")] = "",
    limit: Limit = 100,
    cursor: Cursor = None,
    min_position: MinPosition = None,
) -> p.ItemPage:
    """Projected SKUs in SKU order with their figures, from the read model's indexes."""
    return await _planner(request).list_items(
        channel=_code(channel, "channel"),
        location=_code(location, "location"),
        status=status,
        prefix=query_code(prefix, "prefix") if prefix else "",
        limit=limit,
        cursor=cursor,
        min_position=min_position,
    )


@get("/v1/reservations", opt={"scopes": (AVAILABILITY_READ, POLICY_WRITE, RESERVATIONS_WRITE)})
async def list_reservations(
    request: Request[Any, Any, Any],
    channel: Filter = None,
    sku: Filter = None,
    status: Annotated[
        str, Parameter(max_length=20, description="Only `held` (live holds) is listed.")
    ] = "held",
    limit: Limit = 100,
    cursor: Cursor = None,
    min_position: MinPosition = None,
) -> p.ReservationPage:
    """Live holds, one row per reservation and SKU, in (SKU, reservation id) order."""
    return await _planner(request).list_reservations(
        channel=_code(channel, "channel"),
        sku=_code(sku, "sku"),
        status=status,
        limit=limit,
        cursor=cursor,
        min_position=min_position,
    )


@get("/v1/safety-stock", opt=READ)
async def list_safety_stock(
    request: Request[Any, Any, Any],
    limit: Limit = p.MAX_LIMIT,
    cursor: Cursor = None,
    min_position: MinPosition = None,
) -> p.SafetyStockPage:
    """Every safety-stock rule: location-wide and global first, then per SKU."""
    planner = _planner(request)
    return await planner.safety_stock_rules(limit, cursor, min_position)


@get("/v1/policies/history", opt=READ)
async def policy_history(
    request: Request[Any, Any, Any], limit: Limit = 100, cursor: Cursor = None
) -> p.PolicyHistoryPage:
    """Every policy change, newest first: when, the token name that made it, before, after."""
    return await _planner(request).policy_history(limit=limit, cursor=cursor)


def policy_change(data: s.PreviewRequest) -> p.PolicyChange:
    """The service's PolicyChange from a preview body (codes checked in full: 422 naming
    `locations.<code>` or `channels.<code>`)."""
    for field, codes in (("locations", data.locations), ("channels", data.channels)):
        for code in codes:
            if not is_code(code):
                raise ApiProblem(
                    422,
                    "validation-failed",
                    f"{field}: {code!r:.80} does not match {s.CODE_PATTERN}",
                    field=f"{field}.{code}",
                )
    return p.PolicyChange(
        locations=tuple(define_location(code, x) for code, x in data.locations.items()),
        channels=tuple(define_channel(code, x) for code, x in data.channels.items()),
        safety_stock=tuple(set_safety_stock(x) for x in data.safety_stock),
    )


@post("/v1/policies/preview", opt={"scopes": (POLICY_WRITE,)}, status_code=200)
async def preview(
    request: Request[Any, Any, Any],
    data: JSONBody[s.PreviewRequest],
    limit: Limit = 100,
    cursor: Cursor = None,
    min_position: MinPosition = None,
) -> p.Preview:
    """What the policy PUTs in the body would do to every SKU's figures, computed by the
    one ATS function on the current state. Writes nothing."""
    change = policy_change(data)
    return await _planner(request).preview(change, limit, cursor, min_position)


ROUTES = [list_items, list_reservations, list_safety_stock, policy_history, preview]
