"""The writer's side of a forwarded checkout command (api.http.gateway.Gateway.run_forwarded)
and the receiving worker's reading of its outcome, on both ledgers.

A worker that is not the writer sends the command, its view and its idempotency key; the
writer decides it as its own job. Whatever the writer answers must map back onto the
answer a decision in the receiving worker would have given.
"""

from __future__ import annotations

import json

import msgspec
import pytest

from api.http.forwarding import CommandOutcome, ForwardedCommand
from api.http.gateway import Gateway, WriterFailed
from api.http.problems import backing_service_unreachable
from api.service.commands import Applied, KeyReused, Replayed
from atp import commands as cmd
from tests.integration.conftest import Backend, run

pytestmark = pytest.mark.integration


def _reserve(reservation_id: str, quantity: int, key: str, request_hash: str) -> ForwardedCommand:
    command = cmd.ReserveStock(
        reservation_id=reservation_id,
        channel="WEB",
        lines=(cmd.Line("TEE", quantity),),
        ttl_seconds=600,
    )
    return ForwardedCommand(
        msgspec.msgpack.encode(command),
        ("reservation", reservation_id, 201),
        ("token POST /v1/reservations", key, request_hash),
        f"corr-{key}",
        "storefront",
    )


def _held(backend: Backend) -> int:
    ledger = backend.ledger()
    try:
        state, _ = ledger.load(("item", "TEE"))
        return state.at("DC").held if state else 0
    finally:
        ledger.close()


async def test_a_checkout_forwarded_twice_and_edited_holds_once(backend: Backend) -> None:
    """Story: the storefront's checkout lands on the worker that is not the writer, which
    forwards the command; the shopper's browser resends it (same key, a new reservation
    id minted by the worker that took the resend), then the shopper edits the basket under
    the same key; a second shopper wants more than is left.

    Invariants: one hold (3 units); the resend gets the first answer byte for byte
    (replayed), the edit is `reused` and holds nothing; the second shopper's refusal is a
    decided 409 problem with its idempotency record's position; the outcomes map back
    onto the Results a local decision gives.
    """
    service = backend.service()
    run(service, cmd.DefineLocation(code="DC", name="DC", kind="warehouse"))
    run(service, cmd.DefineChannel(code="WEB", locations=("DC",)))
    run(service, cmd.ReceiveStock(location="DC", lines=(cmd.Line("TEE", 5),)))
    gateway = Gateway(service)

    first = await gateway.run_forwarded(_reserve("r1", 3, "cart-1", "h1"))
    assert (first.kind, first.status) == ("decided", 201)
    assert first.position is not None
    body = json.loads(first.body)
    assert (body["reservation_id"], body["status"]) == ("r1", "held")
    result = Gateway._result(first)
    assert isinstance(result, Applied)
    assert result.position == first.position

    resend = await gateway.run_forwarded(_reserve("r1-resend", 3, "cart-1", "h1"))
    assert (resend.kind, resend.status, resend.body) == ("replayed", 201, first.body)
    assert isinstance(Gateway._result(resend), Replayed)
    edited = await gateway.run_forwarded(_reserve("r1-edit", 4, "cart-1", "h2"))
    assert edited.kind == "reused"
    assert isinstance(Gateway._result(edited), KeyReused)

    short = await gateway.run_forwarded(_reserve("r2", 3, "cart-2", "h3"))
    assert (short.kind, short.status) == ("decided", 409)
    assert json.loads(short.body)["code"] == "insufficient-stock"
    assert short.position is not None and short.position > first.position
    assert _held(backend) == 3


async def test_a_forwarded_command_whose_answer_cannot_be_rendered_changes_nothing(
    backend: Backend,
) -> None:
    """A bug in rendering the answer (here: a view of an order that does not exist) fails
    that job alone in the writer: nothing is appended, and the receiving worker answers
    500 (WriterFailed), never a 503."""
    service = backend.service()
    run(service, cmd.DefineLocation(code="DC", name="DC", kind="warehouse"))
    run(service, cmd.DefineChannel(code="WEB", locations=("DC",)))
    run(service, cmd.ReceiveStock(location="DC", lines=(cmd.Line("TEE", 5),)))
    broken = msgspec.structs.replace(
        _reserve("r1", 2, "cart-1", "h1"), view=("order", "no-such-order", 201)
    )

    outcome = await Gateway(service).run_forwarded(broken)

    assert outcome == CommandOutcome("failed")
    with pytest.raises(WriterFailed) as failed:
        Gateway._result(outcome)
    assert not backing_service_unreachable(failed.value)
    assert _held(backend) == 0


def test_a_writer_that_cannot_reach_the_ledger_is_a_503_where_the_request_arrived() -> None:
    """The writer's "unavailable" outcome raises what the problem handler answers with
    503 and Retry-After, as when the receiving worker cannot reach the ledger itself."""
    with pytest.raises(ConnectionError) as unavailable:
        Gateway._result(CommandOutcome("unavailable"))
    assert backing_service_unreachable(unavailable.value)
