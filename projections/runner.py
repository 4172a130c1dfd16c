"""Runs the projector against Redis: one active projector at a time, and rebuilds.

Projectors take a lease (`<prefix>:lock`); others wait as standbys and take over when it
lapses, resuming from what Redis holds. A rebuild replays the whole ledger into a scratch
database, asks the active projector to hand over, catches up past where it stopped, and
switches the databases with SWAPDB: readers see the old model, then the new one, never a
partial one, and no figure's position ever goes backwards.

A model is complete when `<prefix>:meta` holds `build` (written at the end of a complete
build). When it is missing (Redis flushed or restarted empty, or a fresh Redis) the
projector holding the lease rebuilds the model in place: it folds the whole ledger in memory
first and then writes each SKU's documents once, at their latest position, so every
document a reader finds is right at its position, and readers answer 503 for the ones not
written yet until `build` is set again. (There is no old model left to keep serving, so a
scratch database would not shorten that window; and swapping whole databases is only safe
for a dedicated one, which `atp project --rebuild` is told by ATP_REDIS_REBUILD_DB.)
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse, urlunparse

import redis

from adapters.amqp import Publisher
from adapters.ledger import Ledger
from projections.projector import Projector, waiter_for
from projections.readmodel import LAYOUT, RedisStore

log = logging.getLogger("atp.projector")
LEASE_MS = 10_000
CHECK_SECONDS = 0.1
"""How often a projecting loop renews its lease and checks for a handover request or a lost
model (three Redis round trips): every tick cost a fifth of the projector's CPU under load
(issue 12). A lost model or a rebuild's request waits at most this much longer."""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
# Take the lease if it is free, or keep it if it is already ours (after an error).
_ACQUIRE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class ModelLost(Exception):
    """The read model was flushed (or the lease lost) while the projector relied on it."""


class RedisProjection:
    def __init__(
        self,
        ledger: Ledger,
        redis_url: str,
        prefix: str = "atp",
        rebuild_db: int | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        publisher: Publisher | None = None,
        client: Any = None,
    ) -> None:
        self.ledger = ledger
        self.redis_url = redis_url
        self.client: Any = redis.Redis.from_url(redis_url) if client is None else client
        self.prefix = prefix
        self.store = RedisStore(self.client, prefix)
        self.clock = clock
        self.live_db = int(self.client.connection_pool.connection_kwargs.get("db", 0))
        self.rebuild_db = self.live_db + 1 if rebuild_db is None else rebuild_db
        self.owner = uuid.uuid4().hex
        self.lock_key = f"{prefix}:lock"
        self.handover_key = f"{prefix}:handover"
        self._renew = self.client.register_script(_RENEW)
        self._acquire = self.client.register_script(_ACQUIRE)
        self._release = self.client.register_script(_RELEASE)
        self.projector = Projector(ledger, self.store, clock, publisher=publisher)
        self.build: str | None = None
        """The complete build this projector is keeping (None: not holding the lease)."""

    # --- the lease -----------------------------------------------------------------------------

    def acquire(self) -> bool:
        return bool(self._acquire(keys=[self.lock_key], args=[self.owner, LEASE_MS]))

    def renew(self) -> bool:
        return bool(self._renew(keys=[self.lock_key], args=[self.owner, LEASE_MS]))

    def release(self) -> None:
        self._release(keys=[self.lock_key], args=[self.owner])

    def handover_requested(self) -> bool:
        requester = self.client.get(self.handover_key)
        return requester is not None and requester.decode() != self.owner

    # --- running -------------------------------------------------------------------------------

    def run(self, stop: threading.Event, poll_interval: float = 0.5) -> None:
        """Project until `stop`; as a standby while another projector holds the lease."""
        waiter = waiter_for(self.ledger)
        holding = False
        failures = 0
        checked = 0.0
        try:
            while not stop.is_set():
                try:
                    if not holding:
                        if self.handover_requested() or not self.acquire():
                            stop.wait(0.2)
                            continue
                        self.take_over()
                        holding = True
                        log.info("projecting from position %d", self.projector.position)
                    if time.monotonic() - checked >= CHECK_SECONDS:
                        if self.handover_requested():
                            self.release()
                            holding = False
                            log.info("handed over to a rebuild")
                            continue
                        if not self.renew() or self.store.build() != self.build:
                            # The lease went with the model (FLUSHALL, Redis restarted empty).
                            holding = False
                            continue
                        checked = time.monotonic()
                    self.projector.tick(waiter, poll_interval)
                    failures = 0
                except ModelLost as exc:
                    log.warning("%s; taking over again", exc)
                    holding = False
                except Exception:
                    # A dropped connection costs one retry, at once (the pools replace dead
                    # connections); a backing service that stays down, one try a second.
                    failures += 1
                    log.exception("projection failed; resuming from the stored position")
                    holding = False
                    waiter.close()
                    if failures > 1:
                        stop.wait(1.0)
                    waiter = waiter_for(self.ledger)
        finally:
            waiter.close()
            with contextlib.suppress(Exception):
                self.release()

    def take_over(self) -> None:
        """With the lease: resume from the model if it is complete, else rebuild it in place.

        Raises ModelLost if the model was flushed or the lease lost meanwhile (the caller
        tries again)."""
        build = self.store.build()
        if build is None:
            self.recover()
            return
        self.projector.resume()
        if self.store.build() != build or not self.renew():
            raise ModelLost("the read model changed while it was being loaded")
        self.build = build

    def recover(self) -> None:
        """Rebuild a lost or incomplete model in place (see the module's docstring)."""
        build = uuid.uuid4().hex
        log.warning("the read model is missing or incomplete: rebuilding it (build %s)", build)
        started = time.monotonic()
        self.build = None
        self.store.begin_build(build)
        folded = self.projector.replay(on_page=self._keep_lease)
        self.projector.catch_up()
        if not self.store.complete_build(build):
            raise ModelLost("the read model was flushed during its rebuild")
        self._keep_lease()
        self.build = build
        log.warning(
            "read model rebuilt at position %d from %d event(s) in %.1fs",
            self.projector.position,
            folded,
            time.monotonic() - started,
        )

    def _keep_lease(self) -> None:
        if not self.renew():
            raise ModelLost("lost the lease during a rebuild")

    def rebuild(self, handover_timeout: float = 30.0) -> int:
        """Replay the ledger into fresh keys and switch readers over; returns the position."""
        scratch_url = urlunparse(urlparse(self.redis_url)._replace(path=f"/{self.rebuild_db}"))
        scratch_client: Any = redis.Redis.from_url(scratch_url)
        scratch_client.flushdb()
        scratch = Projector(self.ledger, RedisStore(scratch_client, self.prefix), self.clock)
        scratch.replay()
        # Ask the active projector to stop, and take the lease ourselves.
        self.client.set(self.handover_key, self.owner, px=int(handover_timeout * 1000) + LEASE_MS)
        deadline = time.monotonic() + handover_timeout + LEASE_MS / 1000
        while not self.acquire():
            if time.monotonic() > deadline:
                self.client.delete(self.handover_key)
                raise TimeoutError("the active projector did not hand over")
            time.sleep(0.1)
        try:
            scratch.catch_up()  # now past wherever the active projector stopped
            live_position = int(self.client.hget(self.store.keys.meta, "position") or 0)
            assert scratch.position >= live_position, (scratch.position, live_position)
            generation = int(self.client.hget(self.store.keys.meta, "generation") or 0) + 1
            scratch_client.hset(
                scratch.store.keys.meta,  # type: ignore[attr-defined]
                mapping={"generation": generation, "build": uuid.uuid4().hex, "layout": LAYOUT},
            )
            self.client.swapdb(self.live_db, self.rebuild_db)
        except BaseException:
            self.client.delete(self.handover_key)
            self.release()
            raise
        # The lease and the handover request stayed behind with the old model.
        scratch_client.flushdb()
        scratch_client.close()
        log.info("read model rebuilt at position %d (generation %d)", scratch.position, generation)
        return scratch.position
