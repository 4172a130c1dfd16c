"""Tokens and the operational endpoints (health, readiness, metrics)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import msgspec
from litestar import MediaType, Request, Response, get, post

from adapters.records import TokenIssued
from api import schemas as s
from api.auth import new_token, token_hash
from api.routes.common import ADMIN, gateway, ledger, service
from api.service import ServiceWorld


@post("/v1/tokens", opt={"scopes": (ADMIN,)}, status_code=201)
async def create_token(request: Request[Any, Any, Any], data: s.TokenRequest) -> Response[bytes]:
    key = request.headers.get("idempotency-key")
    secret: bytes = request.app.state.settings.token_secret
    derive = None
    if key is not None:
        # Idempotent issue: the token is derived from the key, so a replay can answer with it
        # again although the ledger keeps only its hash.
        derive = f"{request.state.principal.name}\x1f{key}\x1f{msgspec.json.encode(data).decode()}"
    token = new_token(secret, derive)
    digest = token_hash(token)
    scopes = sorted(set(data.scopes))

    def decider(world: ServiceWorld, _: datetime) -> list[tuple[Any, Any]]:
        return [
            (
                ("token", digest),
                TokenIssued(
                    name=data.name,
                    scopes=tuple(scopes),
                    token_hash=digest,
                    rate_limit=data.rate_limit,
                ),
            )
        ]

    def render(_: ServiceWorld, __: datetime) -> tuple[int, Any]:
        return 201, s.TokenView(token, data.name, scopes, data.rate_limit)

    def redact(body: bytes) -> bytes:
        return body.replace(token.encode(), b"<redacted>")

    def unredact(body: bytes) -> bytes:
        return body.replace(b"<redacted>", token.encode())

    return await gateway(request).execute(
        request, decider, render, on_replay=unredact, stored_body=redact
    )


@get("/health", media_type=MediaType.JSON)
async def health() -> dict[str, str]:
    return {"status": "ok"}


@get("/ready", media_type=MediaType.JSON)
async def ready(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    checks: dict[str, Any] = {}
    ok = True
    try:
        head = await asyncio.wait_for(asyncio.to_thread(ledger(request).ping), timeout=3)
        checks["ledger"] = {"status": "ok", "head": head}
    except Exception as exc:
        ok = False
        checks["ledger"] = {"status": "down", "error": type(exc).__name__}
    writer = service(request).thread
    checks["writer"] = {"status": "ok" if writer is not None and writer.is_alive() else "down"}
    ok = ok and checks["writer"]["status"] == "ok"
    body = {"status": "ready" if ok else "not_ready", "checks": checks}
    headers = {} if ok else {"Retry-After": "1"}
    return Response(body, status_code=200 if ok else 503, headers=headers)


@get("/metrics", media_type="text/plain; version=0.0.4")
async def metrics(request: Request[Any, Any, Any]) -> str:
    svc = service(request)
    try:
        head = await asyncio.wait_for(asyncio.to_thread(ledger(request).ping), timeout=3)
    except Exception:
        head = -1
    lines = [
        "# HELP atp_ledger_head_position Highest ledger position.",
        "# TYPE atp_ledger_head_position gauge",
        f"atp_ledger_head_position {head}",
        "# HELP atp_writer_batches_total Transactions committed by this process's writer.",
        "# TYPE atp_writer_batches_total counter",
        f"atp_writer_batches_total {svc.batches}",
        "# HELP atp_writer_jobs_total Commands decided by this process's writer.",
        "# TYPE atp_writer_jobs_total counter",
        f"atp_writer_jobs_total {svc.jobs}",
        "# HELP atp_writer_conflicts_total Batches decided again after a version conflict.",
        "# TYPE atp_writer_conflicts_total counter",
        f"atp_writer_conflicts_total {svc.conflicts}",
        "# HELP atp_writer_queue_depth Commands waiting for the writer.",
        "# TYPE atp_writer_queue_depth gauge",
        f"atp_writer_queue_depth {svc.queue.qsize()}",
    ]
    return "\n".join(lines) + "\n"


ROUTES = [create_token, health, ready, metrics]
