"""Reservations at checkout and orders."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from litestar import Request, Response, get, post
from litestar.params import FromPath, JSONBody

from api.http import schemas as s
from api.http.controllers.common import (
    AVAILABILITY_READ,
    ORDERS_WRITE,
    RESERVATIONS_WRITE,
    check_lines,
    gateway,
    ledger,
    path_code,
    service,
)
from api.http.decoding import decode_body
from api.http.gateway import View
from api.http.openapi import returns
from api.http.views import order_view, reservation_view
from atp import commands as cmd
from atp.errors import NotFound

# Every POST here requires an Idempotency-Key (require_key=True); the opt says so to the
# OpenAPI document.
RES = {"scopes": (RESERVATIONS_WRITE,), "idempotency_key": "required"}
ORD = {"scopes": (ORDERS_WRITE,), "idempotency_key": "required"}
HELD = returns(200, s.ReservationView, "The reservation")


def _lines(lines: list[s.LineIn]) -> tuple[cmd.Line, ...]:
    check_lines(lines)
    return tuple(cmd.Line(line.sku, line.quantity) for line in lines)


@post(
    "/v1/reservations",
    opt=RES,
    status_code=201,
    responses=returns(201, s.ReservationView, "The reservation"),
)
async def reserve(
    request: Request[Any, Any, Any], data: JSONBody[s.ReservationRequest]
) -> Response[bytes]:
    reservation_id = uuid.uuid4().hex
    command = cmd.ReserveStock(
        reservation_id=reservation_id,
        channel=data.channel,
        lines=_lines(data.lines),
        ttl_seconds=data.ttl_seconds,
        reference=data.reference,
    )
    # The id was minted here, so the stream cannot exist yet: its decision does not read it
    # (Operations.decider).
    view = View("reservation", reservation_id, 201)
    return await gateway(request).command(request, command, view)


@get(
    "/v1/reservations/{reservation_id:str}", opt={"scopes": (RESERVATIONS_WRITE, AVAILABILITY_READ)}
)
async def get_reservation(
    request: Request[Any, Any, Any], reservation_id: FromPath[str]
) -> s.ReservationView:
    reservation_id = path_code(reservation_id, "reservation")
    state, _ = await asyncio.to_thread(ledger(request).load, ("reservation", reservation_id))
    if state is None:
        raise NotFound("reservation", reservation_id)
    return reservation_view(state, service(request).clock())


@post("/v1/reservations/{reservation_id:str}/extend", opt=RES, status_code=200, responses=HELD)
async def extend(
    request: Request[Any, Any, Any], reservation_id: FromPath[str], data: JSONBody[s.ExtendRequest]
) -> Response[bytes]:
    reservation_id = path_code(reservation_id, "reservation")
    command = cmd.ExtendReservation(reservation_id=reservation_id, ttl_seconds=data.ttl_seconds)
    return await gateway(request).command(
        request, command, View("reservation", reservation_id, 200)
    )


@post("/v1/reservations/{reservation_id:str}/release", opt=RES, status_code=200, responses=HELD)
async def release(
    request: Request[Any, Any, Any], reservation_id: FromPath[str]
) -> Response[bytes]:
    reservation_id = path_code(reservation_id, "reservation")
    command = cmd.ReleaseReservation(reservation_id=reservation_id)
    return await gateway(request).command(
        request, command, View("reservation", reservation_id, 200)
    )


@post(
    "/v1/reservations/{reservation_id:str}/commit",
    opt=RES,
    status_code=201,
    responses=returns(201, s.ReservationView, "The reservation"),
)
async def commit(
    request: Request[Any, Any, Any], reservation_id: FromPath[str], data: JSONBody[s.CommitRequest]
) -> Response[bytes]:
    reservation_id = path_code(reservation_id, "reservation")
    command = cmd.CommitReservation(reservation_id=reservation_id, order_id=data.order_id)
    return await gateway(request).command(
        request, command, View("reservation", reservation_id, 201)
    )


@post("/v1/orders", opt=ORD, status_code=201, responses=returns(201, s.OrderView, "The order"))
async def place_order(
    request: Request[Any, Any, Any], data: JSONBody[s.OrderRequest]
) -> Response[bytes]:
    command = cmd.PlaceOrder(order_id=data.order_id, channel=data.channel, lines=_lines(data.lines))
    return await gateway(request).command(request, command, View("order", data.order_id, 201))


@get("/v1/orders/{order_id:str}", opt={"scopes": (ORDERS_WRITE, AVAILABILITY_READ)})
async def get_order(request: Request[Any, Any, Any], order_id: FromPath[str]) -> s.OrderView:
    order_id = path_code(order_id, "order")
    state, _ = await asyncio.to_thread(ledger(request).load, ("order", order_id))
    if state is None:
        raise NotFound("order", order_id)
    return order_view(state)


@post(
    "/v1/orders/{order_id:str}/cancel",
    # No body cancels the whole order; the body (decoded by hand) names lines to cancel.
    opt={**ORD, "body": (s.CancelRequest,), "body_required": False},
    status_code=200,
    responses=returns(200, s.OrderView, "The order"),
)
async def cancel_order(request: Request[Any, Any, Any], order_id: FromPath[str]) -> Response[bytes]:
    order_id = path_code(order_id, "order")
    raw = await request.body()
    data = decode_body(raw, s.CancelRequest) if raw.strip() else s.CancelRequest()
    lines = _lines(data.lines) if data.lines is not None else None
    command = cmd.CancelOrder(order_id=order_id, lines=lines)
    return await gateway(request).command(request, command, View("order", order_id, 200))


@post(
    "/v1/orders/{order_id:str}/shipments",
    opt=ORD,
    status_code=201,
    responses=returns(201, s.OrderView, "The order"),
)
async def ship_order(
    request: Request[Any, Any, Any], order_id: FromPath[str], data: JSONBody[s.ShipmentRequest]
) -> Response[bytes]:
    order_id = path_code(order_id, "order")
    command = cmd.ShipOrder(
        order_id=order_id,
        shipment_id=data.shipment_id,
        location=data.location,
        lines=_lines(data.lines),
    )
    return await gateway(request).command(request, command, View("order", order_id, 201))


@post(
    "/v1/orders/{order_id:str}/returns",
    opt=ORD,
    status_code=201,
    responses=returns(201, s.OrderView, "The order"),
)
async def return_order(
    request: Request[Any, Any, Any], order_id: FromPath[str], data: JSONBody[s.ReturnRequest]
) -> Response[bytes]:
    order_id = path_code(order_id, "order")
    check_lines(data.lines)
    command = cmd.ReturnOrder(
        order_id=order_id,
        return_id=data.return_id,
        location=data.location,
        lines=tuple(cmd.ReturnLine(x.sku, x.quantity, x.disposition) for x in data.lines),
    )
    return await gateway(request).command(request, command, View("order", order_id, 201))


ROUTES = [
    reserve,
    get_reservation,
    extend,
    release,
    commit,
    place_order,
    get_order,
    cancel_order,
    ship_order,
    return_order,
]
