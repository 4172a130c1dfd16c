"""The planner page's access rules: who is signed in, the checks every page and form
runs, how pages are rendered, signing in and out, and the error pages.

A visitor without a session is sent to the sign-in page; a token needs `availability:read`
or `policy:write` to see the pages and `policy:write` to preview or save (403 otherwise);
every POST carries the session's CSRF token (403 without it). No token or integration
secret is ever rendered.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote, urlsplit

from litestar import Request, Response, get, post
from litestar.exceptions import HTTPException
from litestar.response import Redirect, Template

from api.http.auth import MAX_TOKEN_LENGTH
from api.http.controllers.common import (
    AVAILABILITY_READ,
    POLICY_WRITE,
)
from api.http.problems import APPLICATION_STATUS, ApiProblem
from api.http.ui.session import (
    CSRF_FIELD,
    Visitor,
    csrf_ok,
    ends,
    new_session,
    read_session,
    session_cookie,
    visitor,
)
from api.service.errors import ApplicationError
from api.service.planner import Planner

SIGN_IN = "/ui/sign-in"
HOME = "/ui/channels"


class SignInRequired(Exception):
    """The visitor has no valid session: answered with a redirect to the sign-in page."""


class Refused(Exception):
    """The visitor may not do this: answered with an error page of `status`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


TITLES = {
    400: "Bad request",
    403: "Not allowed",
    404: "Not found",
    409: "Conflict",
    422: "Not saved",
    429: "Too many requests",
    503: "Unavailable",
}


DEFAULTS: dict[str, Any] = {
    "nav": "",
    "error": None,
    "errors": {},
    "saved": "",
    "preview": None,
    "proposal": {},
    "next_after": None,
    "rules_next": None,
    "next_cursor": None,
    "changes_next": None,
}
"""What a template may leave unset (the engine refuses any other undefined name)."""


def policy_text(policy: dict[str, Any] | None) -> str:
    """A policy (as the policy history gives it) on one line: `buffer 2, share_percent
    100, locations WH1 WH2`; "none" when it did not exist."""
    if policy is None:
        return "none"
    parts = []
    for name, value in policy.items():
        shown = " ".join(map(str, value)) if isinstance(value, list | tuple) else value
        parts.append(f"{name} {shown}")
    return ", ".join(parts)


PAGE_HEADERS = {
    # Everything the page loads is atp's own (no inline script or style); no framing
    # (clickjacking) and forms post only to atp.
    "Content-Security-Policy": (
        "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    # A page holds the session's CSRF token: never cached.
    "Cache-Control": "no-store",
}


def render(
    request: Request[Any, Any, Any],
    who: Visitor,
    template: str,
    status_code: int = 200,
    **context: Any,
) -> Template:
    """`template` with the visitor's context (its name, whether it may save, the CSRF
    token) and the session cookie (a new session's, or the refreshed one)."""
    return Template(
        template_name=template,
        context={
            **DEFAULTS,
            "principal": who.principal,
            "can_save": who.may(POLICY_WRITE),
            "csrf": who.session.csrf,
            **context,
        },
        status_code=status_code,
        cookies=[session_cookie(request, who.session)],
        headers=PAGE_HEADERS,
        media_type="text/html",
    )


async def reader(request: Request[Any, Any, Any]) -> Visitor:
    """The signed-in visitor, who may read the pages (SignInRequired, Refused 403)."""
    who = await visitor(request)
    if who.principal is None:
        raise SignInRequired
    if not (who.may(AVAILABILITY_READ) or who.may(POLICY_WRITE)):
        raise Refused(403, "this token lacks availability:read and policy:write")
    return who


async def form_of(request: Request[Any, Any, Any], who: Visitor) -> dict[str, str]:
    """The POSTed form as one text value per field, once its CSRF token is checked
    (Refused 403 without the session's token, 400 for a field sent twice or a file)."""
    form = await request.form()
    if not csrf_ok(who.session, form.get(CSRF_FIELD)):
        raise Refused(403, "this form's CSRF token is missing or wrong: reload the page")
    values: dict[str, str] = {}
    for name, sent in form.dict().items():
        if len(sent) != 1 or not isinstance(sent[0], str):
            raise Refused(400, f"{name}: one text value expected")
        values[name] = sent[0]
    return values


def may_save(who: Visitor) -> None:
    """Refused 403 unless the token holds policy:write (previews and saves need it)."""
    if not who.may(POLICY_WRITE):
        raise Refused(403, "this token lacks the scope policy:write: it cannot save")


def planner(request: Request[Any, Any, Any]) -> Planner:
    """The planner's queries (api.service.planner), as the JSON routes use them."""
    found: Planner = request.app.state.planner
    return found


# --- signing in and out --------------------------------------------------------------------


def next_page(value: object) -> str:
    """Where to go after signing in: a path under /ui/, else HOME. Refused (HOME): another
    site or scheme (`https://…`, `//…`, `javascript:`), a backslash or control character,
    and a dot segment, plain or percent-encoded (`/ui/../v1/tokens`, `/ui/%2e%2e/v1`),
    which a browser resolves (WHATWG URL Standard, path state) to a path outside /ui."""
    if not (isinstance(value, str) and value.isascii() and value.isprintable()):
        return HOME
    if "\\" in value or not value.startswith("/ui/") or value.startswith("/ui//"):
        return HOME
    path = urlsplit(value).path
    if any(segment in (".", "..") for segment in unquote(path).lower().split("/")):
        return HOME
    return value


@get("/", sync_to_thread=False)
def index() -> Redirect:
    return Redirect(HOME, status_code=303)


@get("/sign-in")
async def sign_in_page(request: Request[Any, Any, Any]) -> Template | Redirect:
    who = await visitor(request)
    if who.principal is not None:
        return Redirect(HOME, status_code=303)
    return render(request, who, "sign_in.html", next=next_page(request.query_params.get("next")))


@post("/sign-in", status_code=303)
async def sign_in(request: Request[Any, Any, Any]) -> Response[Any]:
    """Checks the token with the token registry and starts a session holding it (a new CSRF
    token too). An unknown token re-renders the form (401); the token is never echoed."""
    who = await visitor(request)
    form = await form_of(request, who)
    token = form.get("token", "").strip()
    target = next_page(form.get("next"))
    client = request.scope.get("client")
    principal = None
    # As the bearer check (api.http.auth.authenticate): anything else is unknown unlooked-up.
    if token and token.isascii() and token.isprintable() and len(token) <= MAX_TOKEN_LENGTH:
        principal = await request.app.state.tokens.resolve(token, client[0] if client else "")
    if principal is None:
        return render(request, who, "sign_in.html", 401, next=target, error="unknown token")
    if not (principal.allows(AVAILABILITY_READ) or principal.allows(POLICY_WRITE)):
        message = "this token lacks availability:read and policy:write"
        return render(request, who, "sign_in.html", 403, next=target, error=message)
    response: Redirect = Redirect(target, status_code=303)
    response.set_cookie(session_cookie(request, new_session(token)))
    return response


@post("/sign-out", status_code=303)
async def sign_out(request: Request[Any, Any, Any]) -> Redirect:
    """Ends the session for good: its end is recorded where every process sees it, so even
    a copy of the cookie is refused from this answer on; the browser gets a new anonymous
    session (a new CSRF token)."""
    who = Visitor(read_session(request) or new_session(), None)
    await form_of(request, who)
    if who.session.token is not None:
        await ends(request).end(who.session.id)
    response = Redirect(SIGN_IN, status_code=303)
    response.set_cookie(session_cookie(request, new_session()))
    return response


# --- errors --------------------------------------------------------------------------------


def _error_page(request: Request[Any, Any, Any], status: int, message: str) -> Response[Any]:
    session = read_session(request) or new_session()
    who = Visitor(session, None)
    return render(
        request,
        who,
        "error.html",
        status,
        code=status,
        title=TITLES.get(status, "Error"),
        message=message,
    )


def _on_sign_in_required(request: Request[Any, Any, Any], _: SignInRequired) -> Response[Any]:
    # Back to the page asked for (a form's page: each form posts to its page's path, or
    # to that path + /preview).
    asked = request.url.path.removesuffix("/preview")
    if request.method == "GET" and request.url.query:
        asked += f"?{request.url.query}"
    target = f"{SIGN_IN}?next={quote(asked, safe='/')}"
    if request.headers.get("hx-request") == "true":
        return Response(b"", status_code=204, headers={"HX-Redirect": target})
    return Redirect(target, status_code=303)


def under_ui(path: str) -> bool:
    """Whether `path` is the planner page's (its errors are HTML pages, never JSON)."""
    return path == "/ui" or path.startswith("/ui/")


def on_unrouted(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    """The HTML error page of a refusal the router raised before any /ui handler ran: an
    unknown page under /ui (404) or a method it does not take (405, with its Allow)."""
    response = _error_page(request, exc.status_code, exc.detail)
    response.headers.update(exc.headers or {})
    return response


def _on_refused(request: Request[Any, Any, Any], exc: Refused) -> Response[Any]:
    return _error_page(request, exc.status, exc.message)


def _on_application_error(request: Request[Any, Any, Any], exc: ApplicationError) -> Response[Any]:
    status, headers = APPLICATION_STATUS.get(type(exc), (409, {}))
    response = _error_page(request, status, str(exc))
    response.headers.update(headers)
    return response


def _on_problem(request: Request[Any, Any, Any], exc: ApiProblem) -> Response[Any]:
    response = _error_page(request, exc.status, exc.detail)
    response.headers.update(exc.headers)
    return response


def _on_http(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    # Litestar's own refusals inside a /ui handler (e.g. a form body it cannot parse).
    if exc.status_code >= 500:
        raise exc
    return _error_page(request, exc.status_code, exc.detail)


EXCEPTION_HANDLERS: dict[Any, Any] = {
    SignInRequired: _on_sign_in_required,
    Refused: _on_refused,
    ApiProblem: _on_problem,
    ApplicationError: _on_application_error,
    HTTPException: _on_http,
}


ROUTES = [index, sign_in_page, sign_in, sign_out]
