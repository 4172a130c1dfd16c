"""Where a pusher's true figures come from: the read model's per-channel available-to-sell."""

from __future__ import annotations

import logging
from typing import Any, Protocol

import msgspec

from adapters.pushers.base import (
    chunks,
)

# Re-exported: the pushers' metrics live in adapters.pushers.metrics.
from adapters.pushers.metrics import PusherMetrics as PusherMetrics
from adapters.pushers.metrics import serve_metrics as serve_metrics
from adapters.redis_keys import RedisKeys

log = logging.getLogger("atp.push")


class FigureSource(Protocol):
    async def figures(self, channel: str) -> dict[str, tuple[int, int]]:
        """Every SKU's current figure for the channel: sku -> (available, position)."""
        ...


class _AtsDoc(msgspec.Struct):
    available: int
    position: int


class RedisFigures:
    """The Redis read model: `<prefix>:skus` and `<prefix>:{sku}:ats` field <channel>."""

    def __init__(self, client: Any, prefix: str = "atp") -> None:
        self.client = client
        self.keys = RedisKeys(prefix)
        self._decoder = msgspec.json.Decoder(_AtsDoc)

    async def figures(self, channel: str) -> dict[str, tuple[int, int]]:
        skus = sorted(s.decode() for s in await self.client.smembers(self.keys.skus))
        out: dict[str, tuple[int, int]] = {}
        for chunk in chunks(skus, 1000):
            pipe = self.client.pipeline(transaction=False)
            for sku in chunk:
                pipe.hget(self.keys.ats(sku), channel)
            for sku, raw in zip(chunk, await pipe.execute(), strict=True):
                if raw is None:
                    continue
                try:
                    doc = self._decoder.decode(raw)
                except msgspec.DecodeError:
                    log.warning("read model: unreadable figure of %s/%s", channel, sku)
                    continue
                out[sku] = (doc.available, doc.position)
        return out
