"""The planner page's session: a sealed cookie that carries the signed-in token and the
session's CSRF token, and the checks every page and form runs.

The cookie (`atp_ui`, path /ui) is HttpOnly, SameSite=Strict, Secure when the page is served
over https, and holds a Fernet token (AES-128-CBC + HMAC-SHA256, `adapters.sealing`) keyed
from the server secret (`Settings.token_secret`) for this purpose only: the browser can
neither read nor forge it, every API worker process opens it, and it expires after
SESSION_SECONDS. The atp token inside is resolved on every request with the same token
registry as the JSON routes (`api.http.auth.TokenStore`), so a revoked token signs its
sessions out. Each session has a random id; signing out records its end in the ledger
(`api.service.ui_sessions`), and a signed-in session is checked against that record on
every request, so a copy of the cookie taken before sign-out is refused by every process. CSRF: the synchronizer-token pattern (OWASP CSRF Prevention Cheat Sheet): each
session (an anonymous one too, for the sign-in form) has a random token, every form sends
it back in the `_csrf` field, and a POST without it, or with another, is refused (403)
before anything else runs.
"""

from __future__ import annotations

import hmac
import json
import secrets
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from litestar import Request
from litestar.datastructures import Cookie

from api.service.tokens import Principal, sealer
from api.service.ui_sessions import SessionEnds

COOKIE = "atp_ui"
PATH = "/ui"
PURPOSE = b"atp: planner page session v1"
SESSION_SECONDS = 8 * 3600
"""A session lasts one working day; then the planner signs in again."""
CSRF_FIELD = "_csrf"


@dataclass(frozen=True)
class Session:
    """What the cookie holds: the session's random id, its CSRF token, and the atp token
    once signed in."""

    id: str
    csrf: str
    token: str | None = None


@dataclass(frozen=True)
class Visitor:
    """Who is looking at a page: the session, and its principal (None: signed out)."""

    session: Session
    principal: Principal | None

    def may(self, scope: str) -> bool:
        """Whether the signed-in token holds `scope` (admin holds every scope)."""
        return self.principal is not None and self.principal.allows(scope)


def _box(request: Request[Any, Any, Any]) -> Fernet:
    return _fernet(request.app.state.settings.token_secret)


@lru_cache(maxsize=4)
def _fernet(secret: bytes) -> Fernet:
    # One key derivation (HKDF) per server key, not one per page.
    return sealer(secret, PURPOSE)


def new_session(token: str | None = None) -> Session:
    """A fresh session (a new CSRF token: sign-in and sign-out rotate it)."""
    return Session(secrets.token_urlsafe(16), secrets.token_urlsafe(32), token)


def read_session(request: Request[Any, Any, Any]) -> Session | None:
    """The session the request's cookie carries; None without one, or for one that is
    expired, forged or sealed under another server key (or sealed before sessions had an
    id). Whether it was signed out is `visitor`'s check."""
    raw = request.cookies.get(COOKIE)
    if not raw:
        return None
    try:
        opened = json.loads(_box(request).decrypt(raw.encode(), ttl=SESSION_SECONDS))
    except (InvalidToken, ValueError):
        return None
    if not isinstance(opened, dict):
        return None
    sid, csrf, token = opened.get("id"), opened.get("csrf"), opened.get("token")
    if not isinstance(sid, str) or not isinstance(csrf, str):
        return None
    if not (token is None or isinstance(token, str)):
        return None
    return Session(sid, csrf, token)


def session_cookie(request: Request[Any, Any, Any], session: Session) -> Cookie:
    """The cookie that keeps `session` (sealed; Secure when the request came over https)."""
    sealed = _box(request).encrypt(
        json.dumps({"id": session.id, "csrf": session.csrf, "token": session.token}).encode()
    )
    return Cookie(
        key=COOKIE,
        value=sealed.decode(),
        path=PATH,
        max_age=SESSION_SECONDS,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


async def visitor(request: Request[Any, Any, Any]) -> Visitor:
    """The request's session (a new anonymous one without a valid cookie) and the principal
    of its token, resolved against the token registry (None: not signed in, the session
    was signed out, or the token is unknown or revoked; a signed-out session is replaced
    by a new anonymous one). Raises what TokenStore.resolve and SessionEnds.ended raise
    (429 for an address that sent too many unknown tokens; the ledger unreachable)."""
    session = read_session(request) or new_session()
    if session.token is not None and await ends(request).ended(session.id):
        session = new_session()
    principal = None
    if session.token is not None:
        client = request.scope.get("client")
        principal = await request.app.state.tokens.resolve(
            session.token, client[0] if client else ""
        )
    return Visitor(session, principal)


def ends(request: Request[Any, Any, Any]) -> SessionEnds:
    """The app's record of signed-out sessions (api.service.ui_sessions)."""
    found: SessionEnds = request.app.state.ui_sessions
    return found


def csrf_ok(session: Session, sent: object) -> bool:
    """Whether a form sent the session's CSRF token (compared in constant time)."""
    return isinstance(sent, str) and hmac.compare_digest(sent.encode(), session.csrf.encode())
