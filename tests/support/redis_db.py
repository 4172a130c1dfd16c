"""Redis for read-model tests: unique key prefixes, scratch databases, and key dumps.

Tests share one Redis server with other engineers' runs. A test that only writes under its
own prefix uses `prefixed()` (its keys are deleted afterwards). A test that swaps whole
databases (`RedisProjection.rebuild` runs SWAPDB) uses `scratch_databases()`, which picks
databases that are empty at the time, starting from an offset derived from the process id,
and flushes them before and after.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any
from urllib.parse import urlparse

import redis

REDIS_BASE = os.environ.get("ATP_TEST_REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")
DATABASES = range(2, 16)
VOLATILE_META = frozenset({"heartbeat", "build", "layout"})
"""Meta fields that record wall-clock time of the projector process or the id and layout
of a build (written by a projection run, not by a bare Projector), not ledger content."""
SERVICE_KEYS = frozenset({"lock", "handover"})
"""Keys of the projector's lease and rebuild handover: coordination, not read-model content."""


def redis_url(db: int) -> str:
    return f"{REDIS_BASE}/{db}"


def client(db: int) -> redis.Redis:
    return redis.Redis.from_url(redis_url(db))


def unique_prefix(tag: str = "t") -> str:
    return f"atptest-{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def delete_prefix(r: redis.Redis, prefix: str) -> None:
    keys = list(r.scan_iter(f"{prefix}:*", count=1000))
    for i in range(0, len(keys), 1000):
        r.delete(*keys[i : i + 1000])


@contextmanager
def prefixed(db: int = 0, tag: str = "t") -> Iterator[tuple[redis.Redis, str]]:
    """A client on `db` and a key prefix no one else uses; its keys are deleted afterwards."""
    r = client(db)
    prefix = unique_prefix(tag)
    try:
        yield r, prefix
    finally:
        delete_prefix(r, prefix)
        r.close()


@contextmanager
def scratch_databases(count: int = 2) -> Iterator[list[int]]:
    """`count` database numbers that were empty when picked; flushed before and after."""
    probe = client(0)
    try:
        n = len(DATABASES)
        start = os.getpid() % n
        chosen: list[int] = []
        for i in range(n):
            db = DATABASES[(start + i) % n]
            probe.execute_command("SELECT", db)
            if probe.dbsize() == 0:
                chosen.append(db)
            if len(chosen) == count:
                break
        if len(chosen) < count:
            raise RuntimeError("not enough empty Redis databases for a rebuild test")
    finally:
        probe.close()
    clients = [client(db) for db in chosen]
    for c in clients:
        c.flushdb()
    try:
        yield chosen
    finally:
        for c in clients:
            c.flushdb()
            c.close()


def dump(
    r: redis.Redis, prefix: str, volatile_meta: frozenset[str] = VOLATILE_META
) -> dict[str, Any]:
    """Every key under `prefix` with its value (by type), minus time-of-day meta fields and
    the projector's lease keys: two read models of the same ledger must dump equal."""
    out: dict[str, Any] = {}
    meta_key = f"{prefix}:meta"
    for raw in r.scan_iter(f"{prefix}:*", count=1000):
        key = raw.decode()
        if key[len(prefix) + 1 :] in SERVICE_KEYS:
            continue
        kind = r.type(raw).decode()
        value: Any
        if kind == "string":
            value = r.get(raw)
        elif kind == "hash":
            value = {k.decode(): v for k, v in r.hgetall(raw).items()}
            if key == meta_key:
                value = {k: v for k, v in value.items() if k not in volatile_meta}
        elif kind == "set":
            value = {m.decode() for m in r.smembers(raw)}
        elif kind == "zset":  # the list indexes: members in order (not DUMP's encoding)
            value = [(m.decode(), score) for m, score in r.zrange(raw, 0, -1, withscores=True)]
        elif kind == "none":  # deleted while scanning
            continue
        else:
            value = (kind, r.dump(raw))
        out[key] = value
    return out


def rename_prefix(data: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    """A dump's keys as if written under another prefix (to compare two prefixes)."""
    return {new + key[len(old) :]: value for key, value in data.items()}


class TcpProxy:
    """A TCP relay in front of Redis that a test can cut (as if Redis went away) and mend,
    on the same port."""

    def __init__(self) -> None:
        parsed = urlparse(REDIS_BASE)
        self.target = (parsed.hostname or "127.0.0.1", parsed.port or 6379)
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = int(probe.getsockname()[1])
        probe.close()
        self._listener: Any = None
        self._sockets: list[Any] = []
        self._lock = threading.Lock()

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: Any) -> None:
        while True:
            try:
                downstream, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                downstream.close()
                continue
            with self._lock:
                self._sockets += [downstream, upstream]
            for a, b in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: Any, sink: Any) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        """Refuse new connections and cut the open ones."""
        if self._listener is not None:
            with suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
            self._listener.close()
            self._listener = None
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for s in sockets:
            with suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
