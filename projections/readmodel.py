"""Where projected documents live: Redis in production, process memory when embedded.

Redis key layout (documented in docs/read-model.md). `{SKU}` is a hash tag, so every key of
one SKU sits in one Redis Cluster slot:

    <prefix>:{<sku>}:ats    hash   <channel> -> {"sku","channel","available","status","position"}
                                   _position -> ledger position the SKU's documents reflect
    <prefix>:{<sku>}:item   string the GET /v1/items/{sku} document
    <prefix>:{<sku>}:state  string the projector's folded item state without its holds
                                   (msgspec JSON)
    <prefix>:{<sku>}:holds  hash   <reservation id> -> [sequence number, hold] (msgspec
                                   JSON): the state's holds, changed one hold at a time
    <prefix>:{<sku>}:published hash <channel> -> "available|status" last published on RabbitMQ
    <prefix>:skus           set    every projected SKU
    <prefix>:{index}:<name> zset   a list index (projections.indexes), members scored 0
                                   so they sort by their bytes
    <prefix>:{index}:of     hash   <sku> -> "<position> [[name, member], ...]": the SKU's
                                   own memberships (JSON), replaced as a whole; its holds'
                                   are added and removed one hold at a time
    <prefix>:meta           hash   position, policies, head_time, generation, heartbeat,
                                   build (set when a complete build ends: absent means the
                                   model is lost or incomplete), building (a build under way),
                                   layout (LAYOUT: a model of another layout is rebuilt)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import msgspec
from redis.exceptions import NoScriptError
from sortedcontainers import SortedList

from adapters.redis_keys import RedisKeys as RedisKeys  # re-exported for importers
from atp.state import ItemState, Policies, state_dec_hook, state_enc_hook
from atp.state.items import NO_HOLDS, Holds, ItemHold
from projections.indexes import Membership, prefix_end
from projections.views import SkuDocuments

_encoder = msgspec.json.Encoder(enc_hook=state_enc_hook)
_item_decoder = msgspec.json.Decoder(ItemState, dec_hook=state_dec_hook)
_policies_decoder = msgspec.json.Decoder(Policies)
_hold_decoder = msgspec.json.Decoder(tuple[int, ItemHold])

LAYOUT = "2"
"""The Redis layout version, kept in `meta` with each complete build; a model of another
layout (written by an older atp) counts as incomplete, so the projector rebuilds it. 2: a
SKU's holds in their own hash (issue 12), not inside its state."""


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
    holds: Collection[str] | None = None
    """The reservation ids whose holds may have changed since the SKU's last write (each is
    set as the state has it, or deleted); None: the state's holds replace the stored ones."""


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
    async def index_page(
        self, name: str, after: str | None, prefix: str, count: int
    ) -> list[str]: ...
    async def index_has(self, name: str, members: Sequence[str]) -> list[bool]: ...
    async def item_documents(self, skus: Sequence[str]) -> list[bytes | None]: ...
    async def item_states(self, skus: Sequence[str]) -> list[ItemState | None]: ...


# --- in process ----------------------------------------------------------------------------


class MemoryReadModel:
    """The embedded read model: the same documents, kept in this process."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ats: dict[str, dict[str, bytes]] = {}
        self.items: dict[str, bytes] = {}
        self.states: dict[str, tuple[ItemState, int]] = {}
        self.published: dict[tuple[str, str], tuple[int, str]] = {}
        self.indexes: dict[str, SortedList] = {}
        self.memberships: dict[str, tuple[Membership, ...]] = {}
        self.position = 0
        self.policies = Policies()
        self.last_event_time: float | None = None
        self.heartbeat_at = time.time()
        self.on_write: Callable[[int], None] | None = None
        """Called with the model's position after each write (on the writing thread)."""

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
                self._index(docs)
            if policies is not None:
                self.policies = policies
            self.position = max(self.position, position)
            if last_event_time is not None:
                self.last_event_time = last_event_time
            self.heartbeat_at = time.time()
        if self.on_write is not None:
            self.on_write(self.position)

    def _index(self, docs: SkuDocuments) -> None:
        """Replace the SKU's own memberships, add and remove its touched holds' (under the
        lock)."""
        old = set(self.memberships.get(docs.sku, ()))
        new = set(docs.index)
        for name, member in old - new:
            self.indexes[name].discard(member)
        for name, member in new - old:
            self.indexes.setdefault(name, SortedList()).add(member)
        self.memberships[docs.sku] = docs.index
        for name, member in docs.holds_out:
            index = self.indexes.get(name)
            if index is not None:
                index.discard(member)
        for name, member in docs.holds_in:
            index = self.indexes.setdefault(name, SortedList())
            if member not in index:
                index.add(member)

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

    async def index_page(self, name: str, after: str | None, prefix: str, count: int) -> list[str]:
        """Up to `count` members of index `name` after `after` (exclusive) that start with
        `prefix`, in order."""
        start = max(after or "", prefix)
        end = prefix_end(prefix) or None
        with self.lock:
            members = self.indexes.get(name)
            if members is None:
                return []
            found = members.irange(start, end, inclusive=(after is None or start != after, False))
            return [m for _, m in zip(range(count), found, strict=False)]

    async def index_has(self, name: str, members: Sequence[str]) -> list[bool]:
        """Whether each of `members` is in index `name`."""
        with self.lock:
            index = self.indexes.get(name) or SortedList()
            return [m in index for m in members]

    async def item_documents(self, skus: Sequence[str]) -> list[bytes | None]:
        """The item documents of `skus` (None where absent)."""
        return [self.items.get(sku) for sku in skus]

    async def item_states(self, skus: Sequence[str]) -> list[ItemState | None]:
        """The projector's folded states of `skus` (None where absent)."""
        states = self.states
        return [found[0] if (found := states.get(sku)) else None for sku in skus]

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
# ARGV: position, force, item document, state (without holds), replace holds ('1': the
# given holds are all of them), then the counts of the channel, hold-set and hold-delete
# arguments, then those arguments: channel/document pairs, reservation id/hold pairs, and
# reservation ids. Holds are set and deleted in chunks (Lua's unpack has a stack limit).
_WRITE_SKU = """
local current = tonumber(redis.call('HGET', KEYS[1], '_position') or '-1')
local position = tonumber(ARGV[1])
if current > position or (current == position and ARGV[2] ~= '1') then
  return 0
end
local i = 9
local stop = i + tonumber(ARGV[6]) - 1
redis.call('HSET', KEYS[1], '_position', ARGV[1], unpack(ARGV, i, stop))
redis.call('SET', KEYS[2], ARGV[3])
redis.call('SET', KEYS[3], ARGV[4])
if ARGV[5] == '1' then
  redis.call('DEL', KEYS[4])
end
local function chunked(command, first, count)
  local stop = first + count - 1
  while first <= stop do
    local last = math.min(first + 999, stop)
    redis.call(command, KEYS[4], unpack(ARGV, first, last))
    first = last + 1
  end
  return stop + 1
end
i = chunked('HSET', stop + 1, tonumber(ARGV[7]))
chunked('HDEL', i, tonumber(ARGV[8]))
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
redis.call('HSET', KEYS[1], 'build', ARGV[1], 'layout', ARGV[2])
redis.call('HDEL', KEYS[1], 'building')
return 1
"""


# Replace each SKU's own memberships of the list indexes unless the stored ones are newer
# (the rule of _WRITE_SKU), and add and remove its touched holds' memberships under the same
# rule: ARGV[1] is the indexes' key prefix, then (sku, position, force, memberships, holds
# to add, holds to remove, each a JSON array of [name, member]) per SKU. KEYS[1] keeps each
# SKU's "<position> <memberships>": unchanged memberships (most SKUs of a policy fan-out)
# cost a string comparison; changed ones are diffed. A hold's change costs one ZADD or ZREM
# however many holds the SKU has. Members of an index score 0, so the index sorts them by
# their bytes.
_WRITE_INDEX = """
local base = ARGV[1]
for i = 2, #ARGV, 6 do
  local sku, position, force, raw = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2], ARGV[i + 3]
  local stored = redis.call('HGET', KEYS[1], sku)
  local old_raw = nil
  local skip = false
  if stored then
    local space = string.find(stored, ' ', 1, true)
    local old_position = tonumber(string.sub(stored, 1, space - 1))
    old_raw = string.sub(stored, space + 1)
    skip = old_position > position or (old_position == position and force ~= '1')
  end
  if not skip then
    if old_raw ~= raw then
      local old = {}
      if old_raw then
        for _, m in ipairs(cjson.decode(old_raw)) do old[m[1] .. '\31' .. m[2]] = m end
      end
      local seen = {}
      for _, m in ipairs(cjson.decode(raw)) do
        local k = m[1] .. '\31' .. m[2]
        seen[k] = true
        if not old[k] then redis.call('ZADD', base .. m[1], 0, m[2]) end
      end
      for k, m in pairs(old) do
        if not seen[k] then redis.call('ZREM', base .. m[1], m[2]) end
      end
    end
    redis.call('HSET', KEYS[1], sku, ARGV[i + 1] .. ' ' .. raw)
    if ARGV[i + 5] ~= '[]' then
      for _, m in ipairs(cjson.decode(ARGV[i + 5])) do redis.call('ZREM', base .. m[1], m[2]) end
    end
    if ARGV[i + 4] ~= '[]' then
      for _, m in ipairs(cjson.decode(ARGV[i + 4])) do redis.call('ZADD', base .. m[1], 0, m[2]) end
    end
  end
end
return 1
"""


class RedisStore:
    """The projector's synchronous Redis writer: one round trip per batch of up to 1,000
    SKUs (`write`)."""

    def __init__(self, client: Any, prefix: str = "atp") -> None:
        self.client = client
        self.keys = RedisKeys(prefix)
        self.script = client.register_script(_WRITE_SKU)
        self.meta_script = client.register_script(_WRITE_META)
        self.complete_script = client.register_script(_COMPLETE_BUILD)
        self.index_script = client.register_script(_WRITE_INDEX)

    def build(self) -> str | None:
        """The id of the complete build the model holds; None when it is lost or incomplete
        (Redis flushed or restarted empty, or a build under way) or of another LAYOUT."""
        value, layout = self.client.hmget(self.keys.meta, "build", "layout")
        if value is None or layout != LAYOUT.encode():
            return None
        return str(value.decode())

    def begin_build(self, build: str) -> None:
        """Mark a build under way: readers answer 503 for documents it has not written yet."""
        self.client.hset(self.keys.meta, "building", build)
        self.client.hdel(self.keys.meta, "build")

    def complete_build(self, build: str) -> bool:
        """Mark the model complete; False if it was flushed since `begin_build` (build again)."""
        return bool(self.complete_script(keys=[self.keys.meta], args=[build, LAYOUT]))

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
                pipe.hgetall(self.keys.holds(sku))
                pipe.hget(self.keys.ats(sku), "_position")
                pipe.hgetall(self.keys.published(sku))
            values = pipe.execute()
            for i, sku in enumerate(chunk):
                raw, holds, position, published = values[4 * i : 4 * i + 4]
                if raw is not None:
                    state.items[sku] = (decode_item_state(raw, holds), int(position or 0))
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
        """Apply `writes`, then the model's meta (its `position`, the heartbeat, the
        `policies` and the time of the last event applied). Two pipelined round trips per
        1,000 SKUs: their documents and list indexes, then, once those succeeded, their
        catalogue membership (`SADD`) and, after the last chunk, the meta. So neither the
        position nor the catalogue ever names a SKU document not yet written: a pipeline
        goes on after a failed command, so the meta could not share the documents' one.

        The scripts are called by their SHA1 (EVALSHA) inside the pipelines: redis-py's
        registered scripts would first ask SCRIPT EXISTS, one more round trip per pipeline
        (issue 12: with the meta's own call, about a third of the projector's time). When
        Redis answers NOSCRIPT (it restarted, or its scripts were flushed), the scripts are
        loaded and that pipeline is sent again: every command in it is idempotent (the
        position rules of _WRITE_SKU, _WRITE_INDEX and _WRITE_META, and SADD). Raises
        redis-py's errors."""
        meta: list[Any] = ["heartbeat", time.time()]
        if policies is not None:
            meta += ["policies", _encoder.encode(policies)]
        if last_event_time is not None:
            meta += ["last_event_time", last_event_time]
        chunks = list(_chunks(writes, 1000)) or [[]]
        for number, chunk in enumerate(chunks, start=1):
            if chunk:
                self._execute(partial(self._queue_documents, chunk=chunk))
            tail = [position, *meta] if number == len(chunks) else None
            self._execute(partial(self._queue_listing, chunk=chunk, meta=tail))

    def _execute(self, fill: Callable[[Any], None]) -> None:
        """Send the commands `fill` queues as one pipeline; after NOSCRIPT, load the scripts
        and send them again."""
        for attempt in (1, 2):
            pipe = self.client.pipeline(transaction=False)
            fill(pipe)
            try:
                pipe.execute()
                return
            except NoScriptError:
                if attempt == 2:
                    raise
                self._load_scripts()

    def _queue_listing(self, pipe: Any, chunk: list[SkuWrite], meta: list[Any] | None) -> None:
        if chunk:
            pipe.sadd(self.keys.skus, *[w.documents.sku for w in chunk])
        if meta is not None:
            pipe.evalsha(self.meta_script.sha, 1, self.keys.meta, *meta)

    def _queue_documents(self, pipe: Any, chunk: list[SkuWrite]) -> None:
        for w in chunk:
            docs = w.documents
            pairs: list[Any] = []
            for channel, body in docs.availability.items():
                pairs += [channel, body]
            keys = [
                self.keys.ats(docs.sku),
                self.keys.item(docs.sku),
                self.keys.state(docs.sku),
                self.keys.holds(docs.sku),
            ]
            holds = w.state.holds
            sets: list[Any] = []
            deletes: list[str] = []
            if w.holds is None:
                for rid, seq, hold in holds.entries():
                    sets += [rid, _encoder.encode((seq, hold))]
            else:
                for rid in w.holds:
                    entry = holds.entry(rid)
                    if entry is None:
                        deletes.append(rid)
                    else:
                        sets += [rid, _encoder.encode(entry)]
            args = [
                docs.position,
                "1" if w.force else "0",
                docs.item,
                _encoder.encode(msgspec.structs.replace(w.state, holds=NO_HOLDS)),
                "1" if w.holds is None else "0",
                len(pairs),
                len(sets),
                len(deletes),
            ]
            pipe.evalsha(self.script.sha, len(keys), *keys, *args, *pairs, *sets, *deletes)
        self.write_indexes(chunk, pipe)

    def _load_scripts(self) -> None:
        for script in (self.script, self.meta_script, self.complete_script, self.index_script):
            self.client.script_load(script.script)

    def write_indexes(self, writes: list[SkuWrite], pipe: Any) -> None:
        """Queue on `pipe` the script that replaces the SKUs' list-index memberships (one
        call for the batch; see _WRITE_INDEX)."""
        args: list[Any] = [self.keys.index_base]
        for w in writes:
            docs = w.documents
            args += [
                docs.sku,
                docs.position,
                "1" if w.force else "0",
                _encoder.encode(docs.index),
                _encoder.encode(docs.holds_in),
                _encoder.encode(docs.holds_out),
            ]
        pipe.evalsha(self.index_script.sha, 1, self.keys.index_of, *args)

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

    async def index_page(self, name: str, after: str | None, prefix: str, count: int) -> list[str]:
        """Up to `count` members of index `name` after `after` (exclusive) that start with
        `prefix`, in order: one ZRANGEBYLEX."""
        if after is not None and after >= prefix:
            low = "(" + after
        else:
            low = "[" + prefix if prefix else "-"
        high = "(" + prefix_end(prefix) if prefix else "+"
        found = await self.client.zrangebylex(self.keys.index(name), low, high, 0, count)
        return [m.decode() for m in found]

    async def index_has(self, name: str, members: Sequence[str]) -> list[bool]:
        """Whether each of `members` is in index `name`: one ZMSCORE."""
        if not members:
            return []
        scores = await self.client.zmscore(self.keys.index(name), list(members))
        return [score is not None for score in scores]

    async def item_documents(self, skus: Sequence[str]) -> list[bytes | None]:
        """The item documents of `skus` (None where absent): one MGET.

        One command, not a pipeline of GETs: about a tenth of the client's CPU per key
        (`loadtests/bench_preview.py`). The keys are in several Cluster slots, so on Redis
        Cluster this needs a client that splits MGET by slot."""
        if not skus:
            return []
        return list(await self.client.mget([self.keys.item(sku) for sku in skus]))

    async def item_states(self, skus: Sequence[str]) -> list[ItemState | None]:
        """The projector's folded states of `skus` (None where absent): one round trip, an
        MGET of the states (see `item_documents`) and each one's holds."""
        if not skus:
            return []
        pipe = self.client.pipeline(transaction=False)
        pipe.mget([self.keys.state(sku) for sku in skus])
        for sku in skus:
            pipe.hgetall(self.keys.holds(sku))
        found, *holds = await pipe.execute()
        return [
            None if raw is None else decode_item_state(raw, held)
            for raw, held in zip(found, holds, strict=True)
        ]

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


def decode_item_state(raw: bytes, holds: dict[bytes, bytes]) -> ItemState:
    """An item state from its `state` key and its `holds` hash (see the module docstring)."""
    state = _item_decoder.decode(raw)
    if not holds:
        return state
    entries = []
    for rid, value in holds.items():
        seq, hold = _hold_decoder.decode(value)
        entries.append((rid.decode(), seq, hold))
    return msgspec.structs.replace(state, holds=Holds.from_entries(entries))
