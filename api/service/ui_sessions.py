"""Planner-page sessions that end when the planner signs out, in every worker process.

The /ui session cookie is sealed and stateless (api.http.ui.session), so forgetting it in
the browser would not stop a copy taken before sign-out. Each session therefore carries a
random id, and signing out records SessionEnded on the stream ("ui-session", id) in the
ledger, which every process (on any host) reads: a session is checked against its stream
on every page and form, so a copy of the cookie is refused from the sign-out's answer on.
Ended sessions are also kept in a per-process cache bounded by the session lifetime (after
it the cookie expires anyway), so a replayed ended cookie costs no query.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime

from cachetools import TTLCache

from adapters.ledger import Ledger, StreamKey
from adapters.records import SessionEnded
from api.log import correlation_id
from api.service.commands import CommandService, Decision, Job, ServiceWorld, decider

CACHE_SIZE = 100_000
"""Ended sessions remembered per process (past it the oldest are read from the ledger)."""


def session_stream(session_id: str) -> StreamKey:
    """The stream where a planner-page session's end is recorded."""
    return ("ui-session", session_id)


def _ended(records: Sequence[object]) -> bool:
    return any(isinstance(record, SessionEnded) for record in records)


class SessionEnds:
    """Records and checks the end of planner-page sessions (by their random id).

    `lifetime_seconds`: how long a session cookie is valid (an ended session is cached that
    long). `ended` and `end` raise what the ledger raises when it is unreachable.
    """

    def __init__(self, ledger: Ledger, service: CommandService, lifetime_seconds: float) -> None:
        self.ledger = ledger
        self.service = service
        self.known: TTLCache[str, bool] = TTLCache(CACHE_SIZE, ttl=lifetime_seconds)

    async def ended(self, session_id: str) -> bool:
        """Whether the session was signed out (here or in any other process)."""
        if session_id in self.known:
            return True
        records, _ = await asyncio.to_thread(self.ledger.load, session_stream(session_id))
        if _ended(records):
            self.known[session_id] = True
            return True
        return False

    async def end(self, session_id: str) -> None:
        """Records the session's end (once: signing out twice records nothing more)."""
        stream = session_stream(session_id)

        def decide(world: ServiceWorld, now: datetime) -> Decision:
            if _ended(world.records(stream)):
                return []
            return [(stream, SessionEnded(at=now))]

        await self.service.submit(Job(decider(decide, reads=[stream]), correlation_id.get()))
        self.known[session_id] = True
