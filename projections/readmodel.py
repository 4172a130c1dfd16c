"""Where projected documents live: Redis in production, process memory when embedded.

Redis key layout (documented in docs/read-model.md). `{SKU}` is a hash tag, so every key of
one SKU sits in one Redis Cluster slot:

    <prefix>:{<sku>}:ats    hash   <channel> -> {"sku","channel","available","status","position"}
                                   _position -> ledger position the SKU's documents reflect
    <prefix>:{<sku>}:item   string the GET /v1/items/{sku} document
    <prefix>:{<sku>}:state  string the projector's folded item state (msgspec JSON)
    <prefix>:{<sku>}:published hash <channel> -> "available|status" last published on RabbitMQ
    <prefix>:skus           set    every projected SKU
    <prefix>:meta           hash   position, policies, head_time, generation, heartbeat,
                                   build (set when a complete build ends: absent means the
                                   model is lost or incomplete), building (a build under way)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from adapters.redis_keys import RedisKeys as RedisKeys  # re-exported for importers
from atp.state import ItemState, Policies, state_dec_hook, state_enc_hook
from projections.views import SkuDocuments

_encoder = msgspec.json.Encoder(enc_hook=state_enc_hook)
_item_decoder = msgspec.json.Decoder(ItemState, dec_hook=state_dec_hook)
_policies_decoder = msgspec.json.Decoder(Policies)


@dataclass
class ProjectorState:
    """What a projector needs to resume: its position and the folded states."""

    position: int = 0
    policies: Policies = field(default_factory=Policies)
    items: dict[str, tuple[ItemState, int]] = field(default_factory=dict)
    published: dict[tuple[str, str], tuple[int, str]] = field(default_factory=dict)
    """(sku, channel) -> the (available, status) last published on RabbitMQ."""


@dataclass(frozen=True)
class SkuWrite:
    documents: SkuDocuments
    state: ItemState
    force: bool = False
    """Rewrite at the same position (a hold expired: time moved, the ledger did not)."""


class ReadModelStore(Protocol):
    """The projector's side: load to resume, write a batch of SKUs and the new position."""

    def load(self) -> ProjectorState: ...
    def write(
        self,
        writes: list[SkuWrite],
        position: int,
        policies: Policies | None,
        last_event_time: float | None,
    ) -> None: ...
    def heartbeat(self) -> None: ...
    def write_published(self, published: dict[tuple[str, str], tuple[int, str]]) -> None: ...


class ReadModelReader(Protocol):
    """The API's side (async)."""

    async def availability(self, channel: str, skus: list[str]) -> list[bytes | None]: ...
    async def item(self, sku: str) -> bytes | None: ...
    async def meta(self) -> dict[str, Any]: ...
    async def ping(self) -> bool: ...
    async def lost(self, skus: list[str]) -> list[str]: ...
    async def mark_incomplete(self) -> None: ...


# --- in process ----------------------------------------------------------------------------


class MemoryReadModel:
    """The embedded read model: the same documents, kept in this process."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ats: dict[str, dict[str, bytes]] = {}
        self.items: dict[str, bytes] = {}
        self.states: dict[str, tuple[ItemState, int]] = {}
        self.published: dict[tuple[str, str], tuple[int, str]] = {}
        self.position = 0
        self.policies = Policies()
        self.last_event_time: float | None = None
        self.heartbeat_at = time.time()

    # store

    def load(self) -> ProjectorState:
        with self.lock:
            return ProjectorState(
                self.position, self.policies, dict(self.states), dict(self.published)
            )

    def write(
        self,
        writes: list[SkuWrite],
        position: int,
        policies: Policies | None,
        last_event_time: float | None,
    ) -> None:
        with self.lock:
            for w in writes:
                docs = w.documents
                current = self.states.get(docs.sku)
                if current is not None and (
                    current[1] > docs.position or (current[1] == docs.position and not w.force)
                ):
                    continue
                self.ats[docs.sku] = dict(docs.availability)
                self.items[docs.sku] = docs.item
                self.states[docs.sku] = (w.state, docs.position)
            if policies is not None:
                self.policies = policies
            self.position = max(self.position, position)
            if last_event_time is not None:
                self.last_event_time = last_event_time
            self.heartbeat_at = time.time()

    def heartbeat(self) -> None:
        self.heartbeat_at = time.time()

    def write_published(self, published: dict[tuple[str, str], tuple[int, str]]) -> None:
        with self.lock:
            self.published.update(published)

    # reader

    async def availability(self, channel: str, skus: list[str]) -> list[bytes | None]:
        ats = self.ats
        return [ats.get(sku, {}).get(channel) for sku in skus]

    async def item(self, sku: str) -> bytes | None:
        return self.items.get(sku)

    async def lost(self, skus: list[str]) -> list[str]:
        """None: documents kept in this process are never lost on their own."""
        return []

    async def mark_incomplete(self) -> None:
        """Nothing to do: see `lost`."""

    async def meta(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "policies": self.policies,
            "last_event_time": self.last_event_time,
            "heartbeat": self.heartbeat_at,
            "build": "in-process",
        }

    async def ping(self) -> bool:
        return True


# --- Redis ---------------------------------------------------------------------------------

# Apply one SKU's documents unless the stored ones are newer: idempotent by ledger position.
_WRITE_SKU = """
local current = tonumber(redis.call('HGET', KEYS[1], '_position') or '-1')
local position = tonumber(ARGV[1])
if current > position or (current == position and ARGV[2] ~= '1') then
  return 0
end
redis.call('HSET', KEYS[1], '_position', ARGV[1], unpack(ARGV, 5))
redis.call('SET', KEYS[2], ARGV[3])
redis.call('SET', KEYS[3], ARGV[4])
return 1
"""


# The model's position only moves forward (a late or replayed write cannot pull it back).
_WRITE_META = """
local current = tonumber(redis.call('HGET', KEYS[1], 'position') or '0')
if tonumber(ARGV[1]) > current then
  redis.call('HSET', KEYS[1], 'position', ARGV[1])
end
if #ARGV > 1 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 2))
end
return 1
"""


# A build is complete only if nothing flushed the model since it began (FLUSHALL removes
# the `building` mark along with every document written so far).
_COMPLETE_BUILD = """
if redis.call('HGET', KEYS[1], 'building') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'build', ARGV[1])
redis.call('HDEL', KEYS[1], 'building')
return 1
"""


class RedisStore:
    """The projector's synchronous Redis writer (pipelined: one round trip per batch)."""

    def __init__(self, client: Any, prefix: str = "atp") -> None:
        self.client = client
        self.keys = RedisKeys(prefix)
        self.script = client.register_script(_WRITE_SKU)
        self.meta_script = client.register_script(_WRITE_META)
        self.complete_script = client.register_script(_COMPLETE_BUILD)

    def build(self) -> str | None:
        """The id of the complete build the model holds; None when it is lost or incomplete
        (Redis flushed or restarted empty, or a build under way)."""
        value = self.client.hget(self.keys.meta, "build")
        return None if value is None else str(value.decode())

    def begin_build(self, build: str) -> None:
        """Mark a build under way: readers answer 503 for documents it has not written yet."""
        self.client.hset(self.keys.meta, "building", build)
        self.client.hdel(self.keys.meta, "build")

    def complete_build(self, build: str) -> bool:
        """Mark the model complete; False if it was flushed since `begin_build` (build again)."""
        return bool(self.complete_script(keys=[self.keys.meta], args=[build]))

    def load(self) -> ProjectorState:
        meta = self.client.hgetall(self.keys.meta)
        state = ProjectorState(position=int(meta.get(b"position", 0)))
        if b"policies" in meta:
            state.policies = _policies_decoder.decode(meta[b"policies"])
        skus = sorted(s.decode() for s in self.client.smembers(self.keys.skus))
        for chunk in _chunks(skus, 1000):
            pipe = self.client.pipeline(transaction=False)
            for sku in chunk:
                pipe.get(self.keys.state(sku))
                pipe.hget(self.keys.ats(sku), "_position")
                pipe.hgetall(self.keys.published(sku))
            values = pipe.execute()
            for i, sku in enumerate(chunk):
                raw, position, published = values[3 * i : 3 * i + 3]
                if raw is not None:
                    state.items[sku] = (_item_decoder.decode(raw), int(position or 0))
                for channel, figure in published.items():
                    available, status = figure.decode().split("|", 1)
                    state.published[(sku, channel.decode())] = (int(available), status)
        return state

    def write(
        self,
        writes: list[SkuWrite],
        position: int,
        policies: Policies | None,
        last_event_time: float | None,
    ) -> None:
        for chunk in _chunks(writes, 1000):
            pipe = self.client.pipeline(transaction=False)
            for w in chunk:
                docs = w.documents
                pairs: list[Any] = []
                for channel, body in docs.availability.items():
                    pairs += [channel, body]
                keys = [
                    self.keys.ats(docs.sku),
                    self.keys.item(docs.sku),
                    self.keys.state(docs.sku),
                ]
                args = [docs.position, "1" if w.force else "0", docs.item, _encoder.encode(w.state)]
                self.script(keys=keys, args=args + pairs, client=pipe)
            pipe.sadd(self.keys.skus, *[w.documents.sku for w in chunk])
            pipe.execute()
        meta: list[Any] = ["heartbeat", time.time()]
        if policies is not None:
            meta += ["policies", _encoder.encode(policies)]
        if last_event_time is not None:
            meta += ["last_event_time", last_event_time]
        self.meta_script(keys=[self.keys.meta], args=[position, *meta])

    def heartbeat(self) -> None:
        self.client.hset(self.keys.meta, "heartbeat", time.time())

    def write_published(self, published: dict[tuple[str, str], tuple[int, str]]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for (sku, channel), (available, status) in published.items():
            pipe.hset(self.keys.published(sku), channel, f"{available}|{status}")
        pipe.execute()


class RedisReader:
    """The API's asynchronous Redis reader: one command for one SKU, one round trip for 100."""

    def __init__(self, client: Any, prefix: str = "atp") -> None:
        self.client = client
        self.keys = RedisKeys(prefix)

    async def availability(self, channel: str, skus: list[str]) -> list[bytes | None]:
        if len(skus) == 1:
            return [await self.client.hget(self.keys.ats(skus[0]), channel)]
        pipe = self.client.pipeline(transaction=False)
        for sku in skus:
            pipe.hget(self.keys.ats(sku), channel)
        return list(await pipe.execute())

    async def item(self, sku: str) -> bytes | None:
        value: bytes | None = await self.client.get(self.keys.item(sku))
        return value

    async def meta(self) -> dict[str, Any]:
        raw = await self.client.hgetall(self.keys.meta)
        meta: dict[str, Any] = {
            "position": int(raw.get(b"position", 0)),
            "policies": _policies_decoder.decode(raw[b"policies"])
            if b"policies" in raw
            else Policies(),
            "last_event_time": float(raw[b"last_event_time"])
            if b"last_event_time" in raw
            else None,
            "heartbeat": float(raw[b"heartbeat"]) if b"heartbeat" in raw else None,
            "build": raw[b"build"].decode() if b"build" in raw else None,
        }
        return meta

    async def ping(self) -> bool:
        return bool(await self.client.ping())

    async def lost(self, skus: list[str]) -> list[str]:
        """SKUs the model lists (`skus`) whose documents are gone (evicted under `maxmemory`,
        a partial restore, a half-done flush): the model is then incomplete. One round trip."""
        pipe = self.client.pipeline(transaction=False)
        for sku in skus:
            pipe.sismember(self.keys.skus, sku)
            pipe.exists(self.keys.ats(sku), self.keys.item(sku))
        answers = await pipe.execute()
        return [
            sku
            for sku, listed, present in zip(skus, answers[::2], answers[1::2], strict=True)
            if listed and present < 2
        ]

    async def mark_incomplete(self) -> None:
        """Drop the complete build's id, so the projector rebuilds the model (see
        `projections.projector`: a model without a build id is lost or incomplete)."""
        await self.client.hdel(self.keys.meta, "build")


def _chunks(items: list[Any] | Iterable[Any], size: int) -> Iterable[list[Any]]:
    items = list(items)
    for i in range(0, len(items), size):
        yield items[i : i + size]
