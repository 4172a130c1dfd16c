"""Tokens and the operational endpoints (health, readiness, metrics)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import datetime
from functools import partial
from typing import Any

import msgspec
from cryptography.fernet import InvalidToken
from litestar import MediaType, Request, Response, delete, get, post
from litestar.params import FromPath, JSONBody

from adapters.ledger import decode_payload, sync_streams
from api.http import schemas as s
from api.http.auth import CHECK_SECONDS
from api.http.controllers.common import ADMIN, gateway, ledger, operations, service
from api.http.metrics import exposition, gauges_now
from api.http.openapi import returns
from api.http.problems import ApiProblem
from api.service import order_sync
from api.service.commands import ServiceWorld
from api.service.pushstatus import judge, merged_metrics, reports
from api.service.tokens import (
    REGISTRY,
    RESERVED_NAMES,
    active_tokens,
    last_use,
    new_token,
    revoked_last,
    sealer,
    token_hash,
    use_stream,
)

REPLAY_PURPOSE = b"atp: issued tokens in idempotency records"
SEALED = "sealed:"


@post(
    "/v1/tokens",
    opt={"scopes": (ADMIN,)},
    status_code=201,
    responses=returns(201, s.TokenView, "The token (its secret, shown once)"),
)
async def create_token(
    request: Request[Any, Any, Any], data: JSONBody[s.TokenRequest]
) -> Response[bytes]:
    """Issue a random token. Names are unique among live tokens (409), `admin` is reserved
    (422). The ledger keeps the token's sha256; an idempotency record keeps the token itself
    only encrypted with the server key, so a replay returns the same working token whatever
    became of the token that issued it or of ATP_ADMIN_TOKEN."""
    if data.name.lower() in RESERVED_NAMES:
        raise ApiProblem(
            422, "validation-failed", f"the token name {data.name!r} is reserved", field="name"
        )
    box = sealer(request.app.state.settings.token_secret, REPLAY_PURPOSE)
    token = new_token()
    digest = token_hash(token)
    scopes: list[str] = sorted(set(data.scopes))

    def render(_: ServiceWorld, __: datetime) -> tuple[int, Any]:
        return 201, s.TokenView(token, data.name, scopes, data.rate_limit)

    def seal(body: bytes) -> bytes:
        sealed = SEALED + box.encrypt(token.encode()).decode()
        return body.replace(token.encode(), sealed.encode())

    def unseal(body: bytes) -> bytes:
        view = msgspec.json.decode(body)
        sealed = view.get("token") if isinstance(view, dict) else None
        if not isinstance(sealed, str) or not sealed.startswith(SEALED):
            return body
        try:
            view["token"] = box.decrypt(sealed.removeprefix(SEALED).encode()).decode()
        except InvalidToken:
            raise ApiProblem(
                409,
                "token-unrecoverable",
                "this token was issued under another ATP_SECRET_KEY: delete it and issue a new one",
            ) from None
        return msgspec.json.encode(view)

    return await gateway(request).execute(
        request,
        partial(operations(request).issue_token, data.name, tuple(scopes), digest, data.rate_limit),
        render,
        on_replay=unseal,
        stored_body=seal,
    )


@get("/v1/tokens", opt={"scopes": (ADMIN,)})
async def list_tokens(request: Request[Any, Any, Any]) -> s.TokenList:
    """Live tokens by name: scopes, limit, when issued and last used; never a secret."""
    lg = ledger(request)

    def load() -> list[s.TokenInfo]:
        registry, _ = lg.load(REGISTRY)
        active = active_tokens(registry)
        uses = sync_streams(lg, {use_stream(t.token_hash): None for t in active.values()})
        return [
            s.TokenInfo(
                name,
                list(t.scopes),
                t.rate_limit,
                t.issued_at,
                last_use(uses[use_stream(t.token_hash)][0]),
            )
            for name, t in sorted(active.items())
        ]

    return s.TokenList(await asyncio.to_thread(load))


@delete(
    "/v1/tokens/{name:str}",
    opt={"scopes": (ADMIN,)},
    status_code=200,
    responses=returns(200, s.TokenDeleted, "The revoked token"),
)
async def delete_token(request: Request[Any, Any, Any], name: FromPath[str]) -> Response[bytes]:
    """Revoke the live token `name`: every API process refuses it from the answer on (which
    comes CHECK_SECONDS after the revocation is recorded)."""
    if name.lower() in RESERVED_NAMES:
        raise ApiProblem(
            409,
            "reserved-name",
            "`admin` is ATP_ADMIN_TOKEN: remove it from the environment and restart",
        )

    def render(world: ServiceWorld, _: datetime) -> tuple[int, Any]:
        revoked = revoked_last(world)
        return 200, s.TokenDeleted(revoked.name, revoked.revoked_at)

    revoke = partial(operations(request).revoke_token, name)
    response = await gateway(request).execute(request, revoke, render)
    if response.status_code == 200:
        # Every process's last check of the token began before the revocation committed, or
        # sees it: answer once the older checks have expired.
        await asyncio.sleep(CHECK_SECONDS)
    return response


@get("/health", media_type=MediaType.JSON)
async def health() -> dict[str, str]:
    return {"status": "ok"}


STALE_SECONDS = 10.0


async def _lag(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Where the read model stands against the ledger."""
    read = request.app.state.read
    meta = await read.meta(fresh=True)
    lg = ledger(request)
    head = await asyncio.wait_for(asyncio.to_thread(lg.ping), timeout=3)
    behind = max(0, head - meta.position)
    seconds_behind = 0.0
    if behind:
        oldest = await asyncio.to_thread(lg.recorder.select_notifications, meta.position + 1, 1)
        if oldest:
            _, occurred_at, _ = decode_payload(oldest[0].topic, oldest[0].state)
            seconds_behind = max(0.0, time.time() - occurred_at.timestamp())
    heartbeat_age = None if meta.heartbeat is None else max(0.0, time.time() - meta.heartbeat)
    return {
        "head": head,
        "position": meta.position,
        "events_behind": behind,
        "seconds_behind": seconds_behind,
        "heartbeat_age": heartbeat_age,
    }


async def readiness(request: Request[Any, Any, Any]) -> tuple[bool, dict[str, Any]]:
    """Whether the service can answer (the ledger, the writer and the read model answer),
    and the body of /ready: `{"status": "ready"|"degraded"|"not_ready", "checks": {...}}`
    with the projector's lag and each pusher's delay (also shown by the planner page's
    operations view)."""
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
    read = request.app.state.read
    kind = "redis" if request.app.state.settings.redis_url else "in-process"
    try:
        if not await asyncio.wait_for(read.model.ping(), timeout=2):
            raise ConnectionError("no answer")
        # Missing or being rebuilt (Redis flushed or restarted empty): reads answer 503 for
        # what it lacks, writes go on, so the service stays in rotation ("degraded").
        complete = (await read.meta(fresh=True)).build is not None
        checks["read_model"] = {"status": "ok" if complete else "rebuilding", "kind": kind}
    except Exception as exc:
        ok = False
        checks["read_model"] = {"status": "down", "kind": kind, "error": type(exc).__name__}
    if ok:
        lag = await _lag(request)
        fresh = lag["seconds_behind"] < STALE_SECONDS and (
            lag["heartbeat_age"] is None or lag["heartbeat_age"] < STALE_SECONDS
        )
        checks["projector"] = {"status": "ok" if fresh else "stale", **lag}
    redis_client = request.app.state.redis
    if ok and redis_client is not None:
        settings = request.app.state.settings
        pushers = judge(
            await reports(redis_client, settings.redis_prefix), settings.push_alert_seconds
        )
        if pushers:
            checks["pushers"] = pushers
    fine = (
        checks["read_model"]["status"] == "ok"
        and checks.get("projector", {}).get("status") == "ok"
        and all(p["status"] == "ok" for p in checks.get("pushers", {}).values())
    )
    status = ("ready" if fine else "degraded") if ok else "not_ready"
    return ok, {"status": status, "checks": checks}


@get("/ready", media_type=MediaType.JSON)
async def ready(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    ok, body = await readiness(request)
    headers = {} if ok else {"Retry-After": "1"}
    return Response(body, status_code=200 if ok else 503, headers=headers)


@get("/metrics", media_type="text/plain; version=0.0.4")
async def metrics(request: Request[Any, Any, Any]) -> str:
    try:
        lag = await _lag(request)
        now = [
            ("atp_ledger_head_position", "Highest ledger position.", lag["head"]),
            ("atp_projector_position", "Ledger position the read model includes.", lag["position"]),
            (
                "atp_projector_events_behind",
                "Ledger events the read model lacks.",
                lag["events_behind"],
            ),
            (
                "atp_projector_seconds_behind",
                "Age of the oldest ledger event the read model lacks.",
                round(lag["seconds_behind"], 6),
            ),
        ]
    except Exception:
        now = [("atp_ledger_up", "Whether the ledger answered.", 0)]
    lines = gauges_now(now).decode().splitlines()
    request.app.state.writer_sampler.sample()
    lines.extend(exposition().decode().splitlines())
    webhooks = [{"metrics": "\n".join(order_sync.METRICS.render())}]
    redis_client = request.app.state.redis
    if redis_client is not None:
        with contextlib.suppress(Exception):
            prefix = request.app.state.settings.redis_prefix
            webhooks += await order_sync.reported(redis_client, prefix)
            lines.extend(merged_metrics(await reports(redis_client, prefix)))
    lines.extend(merged_metrics(webhooks))
    return "\n".join(lines) + "\n"


ROUTES = [create_token, list_tokens, delete_token, health, ready, metrics]
