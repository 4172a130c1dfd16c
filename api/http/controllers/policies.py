"""Master data and planners' policies: locations, channels, safety stock."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from litestar import Request, Response, get, put
from litestar.params import FromPath, JSONBody

from api.http import schemas as s
from api.http.controllers.common import (
    AVAILABILITY_READ,
    POLICY_WRITE,
    gateway,
    handle,
    path_code,
)
from api.http.openapi import returns
from api.service.commands import ServiceWorld
from api.service.planner import Planner
from atp import commands as cmd
from atp.state import Channel, Location


def location_view(loc: Location) -> s.LocationView:
    return s.LocationView(loc.code, loc.name, loc.kind, loc.active)


def channel_view(ch: Channel) -> s.ChannelView:
    return s.ChannelView(
        ch.code,
        list(ch.locations),
        ch.buffer,
        ch.share_percent,
        ch.backorder_limit,
        ch.low_stock_threshold,
    )


def define_location(code: str, data: s.LocationRequest) -> cmd.DefineLocation:
    """The command a location body asks for (PUT, or a preview)."""
    return cmd.DefineLocation(code=code, name=data.name, kind=data.kind, active=data.active)


def define_channel(code: str, data: s.ChannelRequest) -> cmd.DefineChannel:
    """The command a channel body asks for (PUT, or a preview)."""
    return cmd.DefineChannel(
        code=code,
        locations=tuple(data.locations),
        buffer=data.buffer,
        share_percent=data.share_percent,
        backorder_limit=data.backorder_limit,
        low_stock_threshold=data.low_stock_threshold,
    )


def set_safety_stock(data: s.SafetyStockRequest) -> cmd.SetSafetyStock:
    """The command a safety-stock body asks for (PUT, or a preview)."""
    return cmd.SetSafetyStock(sku=data.sku, location=data.location, quantity=data.quantity)


@put(
    "/v1/locations/{code:str}",
    opt={"scopes": (POLICY_WRITE,)},
    status_code=200,
    responses=returns(200, s.LocationView, "The location"),
)
async def put_location(
    request: Request[Any, Any, Any], code: FromPath[str], data: JSONBody[s.LocationRequest]
) -> Response[bytes]:
    code = path_code(code, "location", creating=True)
    command = define_location(code, data)

    def render(world: ServiceWorld, _: datetime) -> tuple[int, Any]:
        return 200, location_view(world.policies().locations[code])

    return await gateway(request).execute(request, handle(request, command), render)


@put(
    "/v1/channels/{code:str}",
    opt={"scopes": (POLICY_WRITE,)},
    status_code=200,
    responses=returns(200, s.ChannelView, "The channel"),
)
async def put_channel(
    request: Request[Any, Any, Any], code: FromPath[str], data: JSONBody[s.ChannelRequest]
) -> Response[bytes]:
    code = path_code(code, "channel", creating=True)
    command = define_channel(code, data)

    def render(world: ServiceWorld, _: datetime) -> tuple[int, Any]:
        return 200, channel_view(world.policies().channels[code])

    return await gateway(request).execute(request, handle(request, command), render)


@put(
    "/v1/safety-stock",
    opt={"scopes": (POLICY_WRITE,)},
    status_code=200,
    responses=returns(200, s.SafetyStockView, "The safety stock rule"),
)
async def put_safety_stock(
    request: Request[Any, Any, Any], data: JSONBody[s.SafetyStockRequest]
) -> Response[bytes]:
    command = set_safety_stock(data)

    def render(_: ServiceWorld, __: datetime) -> tuple[int, Any]:
        return 200, s.SafetyStockView(data.sku, data.location, data.quantity)

    return await gateway(request).execute(request, handle(request, command), render)


@get("/v1/locations", opt={"scopes": (POLICY_WRITE, AVAILABILITY_READ)})
async def list_locations(request: Request[Any, Any, Any]) -> list[s.LocationView]:
    """Every location, in definition order."""
    planner: Planner = request.app.state.planner
    return [location_view(loc) for loc in await planner.locations()]


@get("/v1/channels", opt={"scopes": (POLICY_WRITE, AVAILABILITY_READ)})
async def list_channels(request: Request[Any, Any, Any]) -> list[s.ChannelView]:
    """Every channel with its policy, in definition order."""
    planner: Planner = request.app.state.planner
    return [channel_view(ch) for ch in await planner.channels()]


ROUTES = [put_location, put_channel, put_safety_stock, list_locations, list_channels]
