"""Stock movements: receipts, adjustments, counts, transfers, incoming supply."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from typing import Any

from litestar import Request, Response, post
from litestar.params import FromPath, JSONBody

from api.http import schemas as s
from api.http.controllers.common import (
    STOCK_WRITE,
    check_lines,
    gateway,
    handle,
    operations,
    path_code,
)
from api.http.openapi import returns
from api.http.views import movement_view
from api.service.commands import ServiceWorld
from atp import commands as cmd

OPT = {"scopes": (STOCK_WRITE,), "idempotency_key": "required"}
MOVED = returns(200, s.MovementView, "The transfer and the figures it left")
MOVEMENT = returns(201, s.MovementView, "The movement and the figures it left")
"""What every stock movement answers (201), for the OpenAPI document."""


def _lines(lines: list[s.LineIn] | list[s.IncomingLineIn]) -> tuple[cmd.Line, ...]:
    check_lines(lines)
    return tuple(cmd.Line(line.sku, line.quantity) for line in lines)


@post(
    "/v1/receipts",
    opt=OPT,
    status_code=201,
    responses=MOVEMENT,
)
async def post_receipt(
    request: Request[Any, Any, Any], data: JSONBody[s.ReceiptRequest]
) -> Response[bytes]:
    command = cmd.ReceiveStock(
        location=data.location, lines=_lines(data.lines), reference=data.reference
    )
    pairs = [(line.sku, data.location) for line in data.lines]

    def render(world: ServiceWorld, _: datetime) -> tuple[int, Any]:
        items = world.items(sku for sku, _ in pairs)
        return 201, movement_view("receipt", pairs, items, reference=data.reference)

    return await gateway(request).execute(
        request, partial(operations(request).receive, command), render
    )


@post(
    "/v1/adjustments",
    opt=OPT,
    status_code=201,
    responses=MOVEMENT,
)
async def post_adjustment(
    request: Request[Any, Any, Any], data: JSONBody[s.AdjustmentRequest]
) -> Response[bytes]:
    command = cmd.AdjustStock(
        location=data.location,
        sku=data.sku,
        delta=data.delta,
        reason=data.reason,
        damaged=data.damaged,
    )

    def render(world: ServiceWorld, _: datetime) -> tuple[int, Any]:
        items = world.items([data.sku])
        return 201, movement_view("adjustment", [(data.sku, data.location)], items)

    return await gateway(request).execute(request, handle(request, command), render)


@post(
    "/v1/counts",
    opt=OPT,
    status_code=201,
    responses=MOVEMENT,
)
async def post_count(
    request: Request[Any, Any, Any], data: JSONBody[s.CountRequest]
) -> Response[bytes]:
    check_lines(data.lines)
    command = cmd.CountStock(
        location=data.location,
        lines=tuple(cmd.CountLine(line.sku, line.counted) for line in data.lines),
    )
    pairs = [(line.sku, data.location) for line in data.lines]

    def render(world: ServiceWorld, _: datetime) -> tuple[int, Any]:
        return 201, movement_view("count", pairs, world.items(sku for sku, _ in pairs))

    return await gateway(request).execute(request, handle(request, command), render)


@post(
    "/v1/transfers",
    opt=OPT,
    status_code=201,
    responses=MOVEMENT,
)
async def post_transfer(
    request: Request[Any, Any, Any], data: JSONBody[s.TransferRequest]
) -> Response[bytes]:
    command = cmd.ShipTransfer(
        transfer_id=data.transfer_id,
        from_location=data.from_location,
        to_location=data.to_location,
        lines=_lines(data.lines),
    )
    pairs = [
        (line.sku, loc) for line in data.lines for loc in (data.from_location, data.to_location)
    ]

    def render(world: ServiceWorld, _: datetime) -> tuple[int, Any]:
        items = world.items(sku for sku, _ in pairs)
        view = movement_view(
            "transfer", pairs, items, transfer_id=data.transfer_id, status="in_transit"
        )
        return 201, view

    return await gateway(request).execute(request, handle(request, command), render)


def _transfer_view(transfer_id: str, kind: str, with_source: bool = False) -> Any:
    def render(world: ServiceWorld, _: datetime) -> tuple[int, Any]:
        transfer = world.transfer(transfer_id)
        assert transfer is not None
        ends = (transfer.from_location,) if with_source else ()
        pairs = [
            (line.sku, loc) for line in transfer.lines for loc in (*ends, transfer.to_location)
        ]
        items = world.items(sku for sku, _ in pairs)
        view = movement_view(kind, pairs, items, transfer_id=transfer_id, status=transfer.status)
        return 200, view

    return render


@post("/v1/transfers/{transfer_id:str}/receive", opt=OPT, status_code=200, responses=MOVED)
async def receive_transfer(
    request: Request[Any, Any, Any],
    transfer_id: FromPath[str],
    data: JSONBody[s.TransferReceiptRequest | None] = None,
) -> Response[bytes]:
    transfer_id = path_code(transfer_id, "transfer")
    lines = None if data is None or data.lines is None else _lines(data.lines)
    command = cmd.ReceiveTransfer(transfer_id=transfer_id, lines=lines)
    render = _transfer_view(transfer_id, "transfer-receipt")
    return await gateway(request).execute(request, handle(request, command), render)


@post("/v1/transfers/{transfer_id:str}/close", opt=OPT, status_code=200, responses=MOVED)
async def close_transfer(
    request: Request[Any, Any, Any],
    transfer_id: FromPath[str],
    data: JSONBody[s.TransferCloseRequest],
) -> Response[bytes]:
    transfer_id = path_code(transfer_id, "transfer")
    command = cmd.CloseTransfer(transfer_id=transfer_id, reason=data.reason)
    render = _transfer_view(transfer_id, "transfer-close")
    decider = handle(request, command)
    return await gateway(request).execute(request, decider, render)


@post("/v1/transfers/{transfer_id:str}/cancel", opt=OPT, status_code=200, responses=MOVED)
async def cancel_transfer(
    request: Request[Any, Any, Any], transfer_id: FromPath[str]
) -> Response[bytes]:
    transfer_id = path_code(transfer_id, "transfer")
    command = cmd.CancelTransfer(transfer_id=transfer_id)
    render = _transfer_view(transfer_id, "transfer-cancel", with_source=True)
    decider = handle(request, command)
    return await gateway(request).execute(request, decider, render)


@post(
    "/v1/incoming",
    opt=OPT,
    status_code=201,
    responses=MOVEMENT,
)
async def post_incoming(
    request: Request[Any, Any, Any], data: JSONBody[s.IncomingRequest]
) -> Response[bytes]:
    command = cmd.ExpectIncoming(
        location=data.location,
        lines=_lines(data.lines),
        eta=data.eta.astimezone(UTC) if data.eta else None,
        reference=data.reference,
    )
    pairs = [(line.sku, data.location) for line in data.lines]

    def render(world: ServiceWorld, _: datetime) -> tuple[int, Any]:
        items = world.items(sku for sku, _ in pairs)
        return 201, movement_view("incoming", pairs, items, reference=data.reference)

    return await gateway(request).execute(request, handle(request, command), render)


ROUTES = [
    post_receipt,
    post_adjustment,
    post_count,
    post_transfer,
    receive_transfer,
    close_transfer,
    cancel_transfer,
    post_incoming,
]
