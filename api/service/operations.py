"""Named operations: what routes, the CLI, workers and tests ask the application to do.

Each operation decides and appends through the command service and returns its typed
Result (api.service.commands): Applied, Rejected (a domain error), Replayed (the first
answer to an idempotency key) or KeyReused. `Call` says how the caller wants it run.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from api.service.commands import (
    Applied,
    CommandService,
    Decider,
    Idempotency,
    Job,
    Receipt,
    Rejected,
    Result,
    ServiceWorld,
    command_decider,
)
from api.service.integrations import ConfigureIntegration
from api.service.tokens import IssueToken, RevokeToken
from atp import commands as cmd
from atp.streams import Stream


@dataclass(frozen=True)
class Call:
    """How a caller wants an operation run: `correlation_id` (logs, ledger metadata), the
    `token_name` it acts for (ledger metadata), an optional `idempotency` key, `view(world, now)` for the Applied value, and `receipt`,
    what the idempotency record keeps of an Applied or Rejected result (see Job)."""

    correlation_id: str
    idempotency: Idempotency | None = None
    view: Callable[[ServiceWorld, datetime], Any] | None = None
    receipt: Callable[[Applied[Any] | Rejected], Receipt | None] | None = None
    token_name: str = ""
    """The name of the token the caller acts for (ledger metadata `token_name`)."""


Operation = Callable[[Call], Awaitable[Result]]
"""An operation with its arguments bound, waiting for its Call."""


class Operations:
    """The application's write operations over one CommandService. Every method raises
    what CommandService.submit raises (the ledger unreachable, a bug); domain rejections
    come back as Rejected."""

    def __init__(self, commands: CommandService) -> None:
        self.commands = commands

    async def run(self, decider: Decider, call: Call) -> Result:
        """Decide and append `decider`'s events as one job."""
        job = Job(
            decider,
            call.correlation_id,
            call.view,
            call.receipt,
            call.idempotency,
            token_name=call.token_name,
        )
        return await self.commands.submit(job)

    async def handle(self, command: cmd.Command, call: Call) -> Result:
        """Any domain command (atp.commands), decided by atp.decide (see `decider`)."""
        return await self.run(self.decider(command), call)

    def decider(self, command: cmd.Command) -> Decider:
        """The decider of `command`. A reservation's id was minted for it (the route makes
        one per request), so its stream is known new and not read. The order a direct
        order or a commit creates is named by the client and almost always new: assumed
        so in the writer's trusted attempts (Decider.likely_new; a reused order id costs
        a version conflict and a second attempt, and is then refused as before)."""
        if isinstance(command, cmd.ReserveStock):
            fresh: tuple[Stream, ...] = (("reservation", command.reservation_id),)
            return command_decider(command, fresh=fresh)
        if isinstance(command, cmd.PlaceOrder | cmd.CommitReservation):
            return command_decider(command, likely_new=(("order", command.order_id),))
        return command_decider(command)

    async def receive(self, command: cmd.ReceiveStock, call: Call) -> Result:
        """Record goods received at a location (on_hand rises)."""
        return await self.handle(command, call)

    async def issue_token(
        self,
        name: str,
        scopes: tuple[str, ...],
        token_hash: str,
        rate_limit: float | None,
        call: Call,
    ) -> Result:
        """Issue a token (its sha256 `token_hash`) named `name`, unique among live tokens
        (Rejected with AlreadyExists otherwise), with `scopes` and a requests-per-second
        `rate_limit` (None: none)."""
        return await self.run(IssueToken(name, scopes, token_hash, rate_limit), call)

    async def revoke_token(self, name: str, call: Call) -> Result:
        """Revoke the live token `name` (Rejected with NotFound when there is none)."""
        return await self.run(RevokeToken(name), call)

    async def configure_integration(
        self, kind: str, store: str, given: dict[str, Any], service_key: bytes, call: Call
    ) -> Result:
        """Configure the `kind` integration `store` from its decoded settings `given`,
        sealing its secrets with `service_key` (see ConfigureIntegration)."""
        return await self.run(ConfigureIntegration(kind, store, given, service_key), call)
