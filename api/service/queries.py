"""Read-side queries: the read model's documents, its position, and waiting for a position.

Errors are application errors (api.service.errors), never HTTP problems."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from api.service.errors import ChannelNotFound, ReadModelBehind, ReadModelRebuilding
from atp.state import Policies
from projections.readmodel import ReadModelReader
from projections.views import empty_item

META_TTL = 0.5
log = logging.getLogger("atp.read")
T = TypeVar("T")


@dataclass(frozen=True)
class Meta:
    """The read model's meta document: its ledger `position`, the policies it was built
    with, when its last event happened and its projector's heartbeat (epoch seconds)."""

    position: int
    policies: Policies
    last_event_time: float | None
    heartbeat: float | None
    build: str | None = None
    """The complete build the model holds; None while it is lost or being rebuilt."""


class ReadSide:
    """The read model as the API reads it: `meta` cached for META_TTL seconds, reads
    that tell a truly absent document from a model being rebuilt, and waiting for a
    ledger position (read-your-writes, at most `wait_seconds`)."""

    def __init__(self, model: ReadModelReader, wait_seconds: float = 1.0) -> None:
        self.model = model
        self.wait_seconds = wait_seconds
        self._meta: tuple[float, Meta] | None = None

    async def meta(self, fresh: bool = False) -> Meta:
        """The read model's Meta, cached for META_TTL seconds unless `fresh`."""
        now = time.monotonic()
        if fresh or self._meta is None or now - self._meta[0] > META_TTL:
            raw: dict[str, Any] = await self.model.meta()
            meta = Meta(
                raw["position"],
                raw["policies"],
                raw["last_event_time"],
                raw["heartbeat"],
                raw.get("build"),
            )
            self._meta = (now, meta)
        return self._meta[1]

    async def absent(
        self,
        read: Callable[[], Awaitable[T]],
        missing: Callable[[T], bool],
        skus: Sequence[str] = (),
    ) -> tuple[T, Meta]:
        """A read found a document missing: read again inside one complete build.

        Returns the new read and the meta of the build it was made in: a document still
        missing then is truly absent (an unknown SKU), unless the model lists one of `skus`
        (their documents were lost: evicted, half restored), which marks the model incomplete. Raises ReadModelRebuilding when the
        model is lost or incomplete (Redis flushed or restarted empty), or was replaced
        during the read, since a missing document then says nothing about the stock.
        """
        meta = await self.meta(fresh=True)
        if meta.build is None:
            raise ReadModelRebuilding
        value = await read()
        if missing(value):
            after = await self.meta(fresh=True)
            if after.build != meta.build:
                raise ReadModelRebuilding
            if skus and (gone := await self.model.lost(list(skus))):
                # The model lists these SKUs but their documents are gone: it is incomplete,
                # and a missing document would be answered as 0. Have it rebuilt.
                log.warning("read model documents lost for %s: rebuilding", gone[:10])
                await self.model.mark_incomplete()
                raise ReadModelRebuilding
        return value, meta

    async def item_document(
        self, sku: str, now: datetime, min_position: int | None = None
    ) -> bytes:
        """The `GET /v1/items/{sku}` document (projections.views.ItemView JSON) as the
        read model stores it; an unknown SKU's figures are zeros (at `now`). Waits for
        `min_position` first (wait_for). Raises ReadModelBehind, ReadModelRebuilding."""
        if min_position is not None:
            await self.wait_for(min_position)
        body = await self.model.item(sku)
        if body is None:
            body, meta = await self.absent(lambda: self.model.item(sku), lambda b: b is None, [sku])
            if body is None:
                body = empty_item(sku, meta.policies, now, meta.position)
        return body

    @staticmethod
    def check_channel(meta: Meta, channel: str) -> None:
        """Raises ChannelNotFound when `channel` is unknown to the (complete) model."""
        if channel not in meta.policies.channels:
            raise ChannelNotFound(channel)

    async def wait_for(self, position: int) -> None:
        """Return once the (complete) read model includes `position`; raises
        ReadModelBehind past `wait_seconds` (ReadModelRebuilding while it is rebuilt)."""
        deadline = time.monotonic() + self.wait_seconds
        delay = 0.002
        while (meta := await self.meta(fresh=True)).position < position or meta.build is None:
            if time.monotonic() >= deadline:
                if meta.build is None:
                    raise ReadModelRebuilding
                raise ReadModelBehind(meta.position, position)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)


class PositionWaiters:
    """Coroutines waiting for the in-process read model to include a ledger position.

    `reached(position)` is called by the projector's thread after each write of the model;
    it wakes, on `loop`, every waiter whose position is now included (one wake-up of the
    loop per write that has waiters, instead of each waiter polling its clock).
    `current()` is the model's position, read when a waiter arrives.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, current: Callable[[], int]) -> None:
        self.loop = loop
        self.current = current
        self.waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def reached(self, position: int) -> None:
        """The model now includes `position` (any thread)."""
        if self.waiting:
            with contextlib.suppress(RuntimeError):  # the loop closed (shutting down)
                self.loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        position = self.current()
        while self.waiting and self.waiting[0][0] <= position:
            future = heapq.heappop(self.waiting)[2]
            if not future.done():
                future.set_result(None)

    async def wait(self, position: int, seconds: float) -> bool:
        """True once the model includes `position`, False after `seconds` (on the loop)."""
        if self.current() >= position:
            return True
        future = self.loop.create_future()
        entry = (position, next(self._order), future)
        heapq.heappush(self.waiting, entry)
        # Read again once registered: a write that came in between saw no waiter.
        self._wake()
        try:
            async with asyncio.timeout(seconds):
                await future
        except TimeoutError:
            if entry in self.waiting:
                self.waiting.remove(entry)
                heapq.heapify(self.waiting)
            return False
        return True
