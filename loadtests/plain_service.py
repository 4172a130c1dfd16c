"""The baseline for `loadtests.bench_checkout`: checkout the way most shops write it.

A minimal Litestar + asyncpg service with atp's request and response shapes for
`POST /v1/reservations` (one or more lines), `POST /v1/reservations/{id}/commit`,
`POST /v1/reservations/{id}/release` and `POST /v1/orders` (a direct order). Each request is
ONE PostgreSQL transaction, ordered so that the stock row locks are held for as short as
possible (the conditional UPDATEs come last, then COMMIT):

1. the idempotency row with the answer (known before the effect: the reservation id is made
   here); `INSERT ... ON CONFLICT DO NOTHING`, so a duplicate key waits on the first one's
   row, then replays its stored answer;
2. the reservation and hold rows (or the allocation rows);
3. per line, in SKU order (two baskets never deadlock), the conditional
   `UPDATE stock SET held = held + q WHERE sku = $1 AND on_hand - held - allocated >= q`.
   If a line updates no row the transaction rolls back (all or nothing) and a second one
   stores the 409 `insufficient-stock` with `lines: [{"sku", "requested", "available"}]`.

One location, no channels, no policies, no ledger, no read model, no auth: a lower bound on
what a correct checkout costs with a row lock per SKU. `Idempotency-Key` is required (400).

    PLAIN_DATABASE_URL=postgresql://postgres@127.0.0.1/plain \\
        python -m loadtests.plain_service --migrate --port 8200 --workers 2
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import msgspec
from litestar import Litestar, Request, Response, get, post

from loadtests.harness import serving

LOCATION = "BENCH-WH"
PROBLEM = "application/problem+json"

SCHEMA = """
CREATE TABLE IF NOT EXISTS stock (
    sku text PRIMARY KEY,
    on_hand bigint NOT NULL,
    held bigint NOT NULL DEFAULT 0,
    allocated bigint NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS idempotency (
    key text PRIMARY KEY,
    request bytea NOT NULL,
    status int,
    response bytea,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS reservations (
    reservation_id uuid PRIMARY KEY,
    status text NOT NULL,
    expires_at timestamptz NOT NULL,
    order_id text
);
CREATE TABLE IF NOT EXISTS holds (
    reservation_id uuid NOT NULL REFERENCES reservations,
    sku text NOT NULL,
    quantity bigint NOT NULL,
    PRIMARY KEY (reservation_id, sku)
);
CREATE TABLE IF NOT EXISTS allocations (
    order_id text NOT NULL,
    sku text NOT NULL,
    quantity bigint NOT NULL,
    PRIMARY KEY (order_id, sku)
);
"""


class Line(msgspec.Struct, forbid_unknown_fields=True):
    """One line of a reservation or order: a SKU and a quantity (units, 1..1,000,000)."""

    sku: str
    quantity: int


class ReserveBody(msgspec.Struct, forbid_unknown_fields=True):
    """`POST /v1/reservations`, as atp takes it (the channel is accepted and not used)."""

    channel: str
    lines: list[Line]
    ttl_seconds: int = 900
    reference: str | None = None


class CommitBody(msgspec.Struct, forbid_unknown_fields=True):
    """`POST /v1/reservations/{id}/commit`."""

    order_id: str


class OrderBody(msgspec.Struct, forbid_unknown_fields=True):
    """`POST /v1/orders`, a direct order (allocated without a prior hold)."""

    order_id: str
    channel: str
    lines: list[Line]


class Refused(Exception):
    """A 4xx answer; stored on the idempotency row like a success."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body.get("title", ""))
        self.status = status
        self.body = body


def _problem(status: int, title: str, **extra: Any) -> dict[str, Any]:
    return {"type": "about:blank", "title": title, "status": status, **extra}


def _answer(status: int, body: bytes) -> Response[bytes]:
    media = "application/json" if status < 400 else PROBLEM
    return Response(body, status_code=status, media_type=media)


def _decode(raw: bytes, kind: type[Any]) -> Any:
    try:
        value = msgspec.json.decode(raw, type=kind, strict=True)
    except msgspec.ValidationError as e:
        raise Refused(422, _problem(422, "Invalid body", detail=str(e))) from None
    except msgspec.DecodeError as e:
        raise Refused(400, _problem(400, "Unparsable body", detail=str(e))) from None
    lines: list[Line] = getattr(value, "lines", [])
    if hasattr(value, "lines") and not lines:
        raise Refused(422, _problem(422, "at least one line", detail="lines"))
    if len(lines) > 100:
        raise Refused(413, _problem(413, "at most 100 lines", detail="lines"))
    if any(not 1 <= line.quantity <= 1_000_000 for line in lines):
        raise Refused(422, _problem(422, "quantity out of range", detail="lines.quantity"))
    if len({line.sku for line in lines}) != len(lines):
        raise Refused(422, _problem(422, "a SKU appears twice", detail="lines.sku"))
    return value


async def _take(conn: asyncpg.Connection, lines: list[Line], column: str) -> None:
    """The conditional UPDATE per line, in SKU order (two baskets never deadlock).

    Raises Refused (409 `insufficient-stock`, with what the short line could still get)
    when a line updates no row; the caller's transaction then rolls back every line.
    """
    sql = (
        f"UPDATE stock SET {column} = {column} + $2 "
        "WHERE sku = $1 AND on_hand - held - allocated >= $2 RETURNING sku"
    )
    for line in sorted(lines, key=lambda x: x.sku):
        if await conn.fetchval(sql, line.sku, line.quantity) is None:
            available = await conn.fetchval(
                "SELECT on_hand - held - allocated FROM stock WHERE sku = $1", line.sku
            )
            short = {"sku": line.sku, "requested": line.quantity, "available": available or 0}
            raise Refused(409, _problem(409, "insufficient-stock", lines=[short]))


Effect = Callable[[asyncpg.Connection], Awaitable[None]]
Plan = tuple[int, dict[str, Any], Effect | None]
"""(status, answer, effect): the answer if the effect succeeds; the effect raises Refused."""


async def _remember(
    conn: asyncpg.Connection, key: str, raw: bytes, status: int, answer: dict[str, Any]
) -> Response[bytes] | None:
    """Inserts the idempotency row with its answer; None if the key is new, else the answer
    to give (the stored one replayed; 422 if the body differs). A duplicate in flight waits
    here on the unique index until the first transaction ends."""
    first = await conn.fetchval(
        "INSERT INTO idempotency (key, request, status, response) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT DO NOTHING RETURNING true",
        key,
        raw,
        status,
        msgspec.json.encode(answer),
    )
    if first:
        return None
    row = await conn.fetchrow(
        "SELECT request, status, response FROM idempotency WHERE key = $1", key
    )
    if row["request"] != raw:
        problem = _problem(422, "idempotency-key-reused", detail="Idempotency-Key")
        return _answer(422, msgspec.json.encode(problem))
    replay = _answer(row["status"], row["response"])
    replay.headers["Idempotent-Replayed"] = "true"
    return replay


async def _once(request: Request[Any, Any, Any], plan: Callable[[bytes], Plan]) -> Response[bytes]:
    """One transaction: the idempotency row (with the answer, known in advance), then the
    effect, then COMMIT, so the row locks of the effect are held for as short as possible.
    If the effect is refused, that transaction rolls back and a second one stores the
    refusal (or replays what a duplicate stored meanwhile)."""
    key = request.headers.get("idempotency-key")
    if not key or len(key) > 255:
        body = _problem(400, "Idempotency-Key required", detail="Idempotency-Key")
        return _answer(400, msgspec.json.encode(body))
    raw = await request.body()
    scoped = f"{request.url.path}:{key}"
    try:
        status, answer, effect = plan(raw)
    except Refused as refused:
        status, answer, effect = refused.status, refused.body, None
    pool: asyncpg.Pool = request.app.state.pool
    async with pool.acquire() as conn:
        if effect is not None:
            try:
                async with conn.transaction():
                    stored = await _remember(conn, scoped, raw, status, answer)
                    if stored is not None:
                        return stored
                    await effect(conn)
                return _answer(status, msgspec.json.encode(answer))
            except Refused as refused:  # rolled back: nothing of the effect stays
                status, answer = refused.status, refused.body
        async with conn.transaction():
            stored = await _remember(conn, scoped, raw, status, answer)
        return stored or _answer(status, msgspec.json.encode(answer))


@post("/v1/reservations")
async def reserve(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Holds every line or none: 201 with the holds, 409 `insufficient-stock`."""

    def plan(raw: bytes) -> Plan:
        body: ReserveBody = _decode(raw, ReserveBody)
        if not 1 <= body.ttl_seconds <= 86_400:
            raise Refused(422, _problem(422, "ttl out of range", detail="ttl_seconds"))
        rid = uuid.uuid4()
        expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=body.ttl_seconds)

        async def effect(conn: asyncpg.Connection) -> None:
            await conn.execute(
                "INSERT INTO reservations VALUES ($1, 'held', $2, NULL)", rid, expires
            )
            await conn.executemany(
                "INSERT INTO holds VALUES ($1, $2, $3)",
                [(rid, line.sku, line.quantity) for line in body.lines],
            )
            await _take(conn, body.lines, "held")

        lines = [
            {
                "sku": line.sku,
                "quantity": line.quantity,
                "holds": [{"location": LOCATION, "quantity": line.quantity}],
            }
            for line in body.lines
        ]
        answer = {
            "reservation_id": str(rid),
            "status": "held",
            "expires_at": expires.isoformat().replace("+00:00", "Z"),
            "lines": lines,
        }
        return 201, answer, effect

    return await _once(request, plan)


async def _end_hold(
    conn: asyncpg.Connection, reservation_id: str, status: str, order_id: str | None
) -> list[asyncpg.Record]:
    """Marks a held reservation `status`; 404 unknown, 409 not held. Returns its holds."""
    try:
        rid = uuid.UUID(reservation_id)
    except ValueError:
        raise Refused(404, _problem(404, "no such reservation")) from None
    done = await conn.fetchval(
        "UPDATE reservations SET status = $2, order_id = $3 "
        "WHERE reservation_id = $1 AND status = 'held' AND expires_at > now() RETURNING true",
        rid,
        status,
        order_id,
    )
    if not done:
        known = await conn.fetchval("SELECT 1 FROM reservations WHERE reservation_id = $1", rid)
        raise Refused(409 if known else 404, _problem(409 if known else 404, "not held"))
    return list(
        await conn.fetch(
            "SELECT sku, quantity FROM holds WHERE reservation_id = $1 ORDER BY sku", rid
        )
    )


@post("/v1/reservations/{reservation_id:str}/commit")
async def commit(request: Request[Any, Any, Any], reservation_id: str) -> Response[bytes]:
    """The holds become the order's allocations: 201."""

    def plan(raw: bytes) -> Plan:
        body: CommitBody = _decode(raw, CommitBody)

        async def effect(conn: asyncpg.Connection) -> None:
            holds = await _end_hold(conn, reservation_id, "committed", body.order_id)
            await conn.executemany(
                "INSERT INTO allocations VALUES ($1, $2, $3)",
                [(body.order_id, sku, quantity) for sku, quantity in holds],
            )
            for sku, quantity in holds:
                await conn.execute(
                    "UPDATE stock SET held = held - $2, allocated = allocated + $2 WHERE sku = $1",
                    sku,
                    quantity,
                )

        return 201, {"reservation_id": reservation_id, "status": "committed"}, effect

    return await _once(request, plan)


@post("/v1/reservations/{reservation_id:str}/release", status_code=200)
async def release(request: Request[Any, Any, Any], reservation_id: str) -> Response[bytes]:
    """The holds return to stock: 200."""

    def plan(raw: bytes) -> Plan:
        async def effect(conn: asyncpg.Connection) -> None:
            holds = await _end_hold(conn, reservation_id, "released", None)
            for sku, quantity in holds:
                await conn.execute(
                    "UPDATE stock SET held = held - $2 WHERE sku = $1", sku, quantity
                )

        return 200, {"reservation_id": reservation_id, "status": "released"}, effect

    return await _once(request, plan)


@post("/v1/orders")
async def order(request: Request[Any, Any, Any]) -> Response[bytes]:
    """A direct order, allocated without a prior hold; all lines or none (409)."""

    def plan(raw: bytes) -> Plan:
        body: OrderBody = _decode(raw, OrderBody)

        async def effect(conn: asyncpg.Connection) -> None:
            await conn.executemany(
                "INSERT INTO allocations VALUES ($1, $2, $3)",
                [(body.order_id, line.sku, line.quantity) for line in body.lines],
            )
            await _take(conn, body.lines, "allocated")

        lines = [{"sku": line.sku, "quantity": line.quantity} for line in body.lines]
        return 201, {"order_id": body.order_id, "status": "allocated", "lines": lines}, effect

    return await _once(request, plan)


@get("/health")
async def health() -> dict[str, str]:
    """Liveness."""
    return {"status": "ok"}


def create_app() -> Litestar:
    """The app; `PLAIN_DATABASE_URL` names the database, `PLAIN_POOL` the pool size (16)."""
    url = os.environ.get("PLAIN_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/plain")
    size = int(os.environ.get("PLAIN_POOL", "16"))

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        app.state.pool = await asyncpg.create_pool(url, min_size=size, max_size=size)
        try:
            yield
        finally:
            await app.state.pool.close()

    return Litestar(route_handlers=[reserve, commit, release, order, health], lifespan=[lifespan])


async def migrate(url: str) -> None:
    """Creates the tables (idempotent)."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(SCHEMA)
    finally:
        await conn.close()


def main(argv: list[str] | None = None) -> None:
    p = serving.server_parser("python -m loadtests.plain_service", __doc__, port=8200, workers=2)
    p.add_argument("--migrate", action="store_true", help="create the tables first")
    args = p.parse_args(argv)
    if args.migrate:
        asyncio.run(
            migrate(os.environ.get("PLAIN_DATABASE_URL", "postgresql://postgres@127.0.0.1/plain"))
        )
    serving.run("loadtests.plain_service:create_app", args)


if __name__ == "__main__":
    main()
