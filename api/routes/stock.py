"""Stock movements: receipts, adjustments, counts, transfers, incoming supply."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from litestar import Request, Response, post

from api import schemas as s
from api.gateway import command_decider
from api.routes.common import STOCK_WRITE, check_lines, gateway, path_code
from api.service import ServiceWorld
from api.views import movement_view
from atp import commands as cmd

OPT = {"scopes": (STOCK_WRITE,), "idempotency_key": "required"}


def _lines(lines: list[s.LineIn]) -> tuple[cmd.Line, ...]:
    check_lines(lines)
    return tuple(cmd.Line(line.sku, line.quantity) for line in lines)


@post("/v1/receipts", opt=OPT, status_code=201)
async def post_receipt(request: Request[Any, Any, Any], data: s.ReceiptRequest) -> Response[bytes]:
    command = cmd.ReceiveStock(
        location=data.location, lines=_lines(data.lines), reference=data.reference
    )
    pairs = [(line.sku, data.location) for line in data.lines]

    def render(world: ServiceWorld, _: datetime) -> tuple[int, Any]:
        items = world.items(sku for sku, _ in pairs)
        return 201, movement_view("receipt", pairs, items, reference=data.reference)

    return await gateway(request).execute(request, command_decider(command), render)


@post("/v1/adjustments", opt=OPT, status_code=201)
async def post_adjustment(
    request: Request[Any, Any, Any], data: s.AdjustmentRequest
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

    return await gateway(request).execute(request, command_decider(command), render)


@post("/v1/counts", opt=OPT, status_code=201)
async def post_count(request: Request[Any, Any, Any], data: s.CountRequest) -> Response[bytes]:
    check_lines(data.lines)
    command = cmd.CountStock(
        location=data.location,
        lines=tuple(cmd.CountLine(line.sku, line.counted) for line in data.lines),
    )
    pairs = [(line.sku, data.location) for line in data.lines]

    def render(world: ServiceWorld, _: datetime) -> tuple[int, Any]:
        return 201, movement_view("count", pairs, world.items(sku for sku, _ in pairs))

    return await gateway(request).execute(request, command_decider(command), render)


@post("/v1/transfers", opt=OPT, status_code=201)
async def post_transfer(
    request: Request[Any, Any, Any], data: s.TransferRequest
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

    return await gateway(request).execute(request, command_decider(command), render)


@post("/v1/transfers/{transfer_id:str}/receive", opt=OPT, status_code=200)
async def receive_transfer(request: Request[Any, Any, Any], transfer_id: str) -> Response[bytes]:
    transfer_id = path_code(transfer_id, "transfer")
    command = cmd.ReceiveTransfer(transfer_id=transfer_id)

    def render(world: ServiceWorld, _: datetime) -> tuple[int, Any]:
        transfer = world.transfer(transfer_id)
        assert transfer is not None
        pairs = [(line.sku, transfer.to_location) for line in transfer.lines]
        items = world.items(sku for sku, _ in pairs)
        view = movement_view(
            "transfer-receipt", pairs, items, transfer_id=transfer_id, status=transfer.status
        )
        return 200, view

    return await gateway(request).execute(request, command_decider(command), render)


@post("/v1/incoming", opt=OPT, status_code=201)
async def post_incoming(
    request: Request[Any, Any, Any], data: s.IncomingRequest
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

    return await gateway(request).execute(request, command_decider(command), render)


ROUTES = [post_receipt, post_adjustment, post_count, post_transfer, receive_transfer, post_incoming]
