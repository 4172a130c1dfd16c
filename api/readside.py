"""The API's view of the read model: documents, its position, and waiting for a position."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from api.problems import ApiProblem
from atp.state import Policies
from projections.readmodel import ReadModelReader

META_TTL = 0.5
T = TypeVar("T")


@dataclass(frozen=True)
class Meta:
    position: int
    policies: Policies
    last_event_time: float | None
    heartbeat: float | None
    build: str | None = None
    """The complete build the model holds; None while it is lost or being rebuilt."""


def rebuilding() -> ApiProblem:
    """503 while the read model is missing or incomplete: a missing document proves nothing."""
    return ApiProblem(
        503,
        "read-model-rebuilding",
        "the read model is being rebuilt from the ledger; retry shortly",
        headers={"Retry-After": "1"},
    )


class ReadSide:
    def __init__(self, model: ReadModelReader, wait_seconds: float = 1.0) -> None:
        self.model = model
        self.wait_seconds = wait_seconds
        self._meta: tuple[float, Meta] | None = None

    async def meta(self, fresh: bool = False) -> Meta:
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
        self, read: Callable[[], Awaitable[T]], missing: Callable[[T], bool]
    ) -> tuple[T, Meta]:
        """A read found a document missing: read again inside one complete build.

        Returns the new read and the meta of the build it was made in: a document still
        missing then is truly absent (an unknown SKU). Raises 503 (`rebuilding`) when the
        model is lost or incomplete (Redis flushed or restarted empty), or was replaced
        during the read, since a missing document then says nothing about the stock.
        """
        meta = await self.meta(fresh=True)
        if meta.build is None:
            raise rebuilding()
        value = await read()
        if missing(value):
            after = await self.meta(fresh=True)
            if after.build != meta.build:
                raise rebuilding()
        return value, meta

    @staticmethod
    def check_channel(meta: Meta, channel: str) -> None:
        """404 when the channel in the path is unknown to the (complete) model."""
        if channel not in meta.policies.channels:
            raise ApiProblem(404, "not-found", f"channel {channel!r} not found")

    async def wait_for(self, position: int) -> None:
        """Return once the (complete) read model includes `position`, or answer 409 (503
        while it is being rebuilt)."""
        deadline = time.monotonic() + self.wait_seconds
        delay = 0.002
        while (meta := await self.meta(fresh=True)).position < position or meta.build is None:
            if time.monotonic() >= deadline:
                if meta.build is None:
                    raise rebuilding()
                raise ApiProblem(
                    409,
                    "read-model-behind",
                    f"the read model is at position {meta.position}, not yet {position}",
                    position=meta.position,
                    min_position=position,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
