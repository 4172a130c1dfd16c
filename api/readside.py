"""The API's view of the read model: documents, its position, and waiting for a position."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from api.problems import ApiProblem
from atp.state import Policies
from projections.readmodel import ReadModelReader

META_TTL = 0.5


@dataclass(frozen=True)
class Meta:
    position: int
    policies: Policies
    last_event_time: float | None
    heartbeat: float | None


class ReadSide:
    def __init__(self, model: ReadModelReader, wait_seconds: float = 1.0) -> None:
        self.model = model
        self.wait_seconds = wait_seconds
        self._meta: tuple[float, Meta] | None = None

    async def meta(self, fresh: bool = False) -> Meta:
        now = time.monotonic()
        if fresh or self._meta is None or now - self._meta[0] > META_TTL:
            raw: dict[str, Any] = await self.model.meta()
            meta = Meta(raw["position"], raw["policies"], raw["last_event_time"], raw["heartbeat"])
            self._meta = (now, meta)
        return self._meta[1]

    async def checked_channel(self, channel: str) -> Meta:
        """The meta, or 404 when the channel in the path is unknown."""
        meta = await self.meta()
        if channel not in meta.policies.channels:
            meta = await self.meta(fresh=True)
            if channel not in meta.policies.channels:
                raise ApiProblem(404, "not-found", f"channel {channel!r} not found")
        return meta

    async def wait_for(self, position: int) -> None:
        """Return once the read model includes `position`, or answer 409."""
        deadline = time.monotonic() + self.wait_seconds
        delay = 0.002
        while (meta := await self.meta(fresh=True)).position < position:
            if time.monotonic() >= deadline:
                raise ApiProblem(
                    409,
                    "read-model-behind",
                    f"the read model is at position {meta.position}, not yet {position}",
                    position=meta.position,
                    min_position=position,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
