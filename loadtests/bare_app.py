"""The baseline for `loadtests.bench_reads`: a bare Litestar app doing one Redis HGET.

It serves the same paths as atp's availability endpoints and answers with the same bytes,
read the same way (redis.asyncio, one HGET of `<prefix>:{SKU}:ats <channel>`; 100 HGETs in
one pipeline for the bulk route), and nothing else: no auth, no middleware, no validation,
no fallback for unknown SKUs. Served by uvicorn exactly as `atp serve` serves atp.

    BARE_REDIS_URL=redis://127.0.0.1:6379/14 BARE_REDIS_PREFIX=atp \\
        python -m loadtests.bare_app --port 8100 --workers 2
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import redis.asyncio as aioredis
from litestar import Litestar, Request, Response, get
from litestar.params import Parameter

from loadtests.harness import serving

JSON = "application/json"


def create_app() -> Litestar:
    url = os.environ.get("BARE_REDIS_URL", "redis://127.0.0.1:6379/0")
    prefix = os.environ.get("BARE_REDIS_PREFIX", "atp")

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        client = aioredis.Redis.from_url(url)
        app.state.redis = client
        try:
            yield
        finally:
            await client.aclose()

    @get("/v1/availability/{channel:str}/{sku:str}")
    async def one(request: Request[Any, Any, Any], channel: str, sku: str) -> Response[bytes]:
        body = await request.app.state.redis.hget(f"{prefix}:{{{sku}}}:ats", channel)
        return Response(body or b"null", media_type=JSON)

    @get("/v1/availability/{channel:str}")
    async def many(
        request: Request[Any, Any, Any],
        channel: str,
        sku: Annotated[list[str], Parameter(query="sku", required=True)],
    ) -> Response[bytes]:
        pipe = request.app.state.redis.pipeline(transaction=False)
        for code in sku:
            pipe.hget(f"{prefix}:{{{code}}}:ats", channel)
        bodies = await pipe.execute()
        return Response(
            b'{"items":[' + b",".join(b or b"null" for b in bodies) + b"]}", media_type=JSON
        )

    return Litestar(route_handlers=[one, many], lifespan=[lifespan], debug=False)


def main(argv: list[str] | None = None) -> None:
    p = serving.server_parser("python -m loadtests.bare_app", __doc__, port=8100, workers=1)
    serving.run("loadtests.bare_app:create_app", p.parse_args(argv))


if __name__ == "__main__":
    main()
