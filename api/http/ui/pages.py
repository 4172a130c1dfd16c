"""The planner page (`/ui`): server-rendered Jinja pages with htmx for the what-if preview.

Every page reads through the application layer the JSON routes use (the ledger's policies,
the read model, `api.service.planner`, the named operations), never over HTTP. A visitor
without a session is sent to the sign-in page; a token needs `availability:read` or
`policy:write` to see the pages and `policy:write` to save (403 otherwise, and the save
buttons are disabled); every POST carries the session's CSRF token (403 without it) and is
read strictly (`api.http.ui.forms`): a bad field re-renders the form naming it, and nothing is
saved. No token or integration secret is ever rendered.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import msgspec
from litestar import Request, Response, get, post
from litestar.response import Redirect, Template

from adapters.ledger import history
from api.http import schemas as s
from api.http.controllers.admin import readiness
from api.http.controllers.common import (
    AVAILABILITY_READ,
    POLICY_WRITE,
    ledger,
    operations,
    path_code,
    query_code,
)
from api.http.controllers.reads import item_document
from api.http.problems import APPLICATION_STATUS, ApiProblem, domain_problem
from api.http.ui.forms import FormError, channel_request, location_request, safety_stock_request
from api.http.ui.session import (
    CSRF_FIELD,
    Visitor,
    csrf_ok,
    new_session,
    read_session,
    session_cookie,
    visitor,
)
from api.http.views import history_entry
from api.service.commands import Applied, Rejected
from api.service.errors import ApplicationError, InvalidQuery
from api.service.operations import Call
from api.service.planner import STATUSES, Planner, PolicyChange
from api.service.pushstatus import dead_letters, reports
from atp import commands as cmd
from atp.decide import POLICIES
from atp.errors import DomainError
from atp.state import Channel, Location

SIGN_IN = "/ui/sign-in"
HOME = "/ui/channels"
HISTORY_PAGE = 100
CHANGES_SHOWN = 20
"""Policy changes on the channels page (the newest)."""
PREVIEW_PAGE = 50
"""Changed SKUs per page of a preview."""
LIST_PAGE = 50
"""SKUs per page of the low-stock list."""


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
}
"""What a template may leave unset (the engine refuses any other undefined name)."""


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


def _may_save(who: Visitor) -> None:
    """Refused 403 unless the token holds policy:write (previews and saves need it)."""
    if not who.may(POLICY_WRITE):
        raise Refused(403, "this token lacks the scope policy:write: it cannot save")


def planner(request: Request[Any, Any, Any]) -> Planner:
    """The planner's queries (api.service.planner), as the JSON routes use them."""
    found: Planner = request.app.state.planner
    return found


# --- signing in and out --------------------------------------------------------------------


def _next(value: object) -> str:
    """Where to go after signing in: a page of /ui, never another site."""
    if isinstance(value, str) and value.startswith("/ui/") and not value.startswith("/ui//"):
        return value
    return HOME


@get("/", sync_to_thread=False)
def index() -> Redirect:
    return Redirect(HOME, status_code=303)


@get("/sign-in")
async def sign_in_page(request: Request[Any, Any, Any]) -> Template | Redirect:
    who = await visitor(request)
    if who.principal is not None:
        return Redirect(HOME, status_code=303)
    return render(request, who, "sign_in.html", next=_next(request.query_params.get("next")))


@post("/sign-in", status_code=303)
async def sign_in(request: Request[Any, Any, Any]) -> Response[Any]:
    """Checks the token with the token registry and starts a session holding it (a new CSRF
    token too). An unknown token re-renders the form (401); the token is never echoed."""
    who = await visitor(request)
    form = await form_of(request, who)
    token = form.get("token", "").strip()
    target = _next(form.get("next"))
    client = request.scope.get("client")
    principal = None
    if token and token.isascii() and token.isprintable() and len(token) <= 512:
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
    who = Visitor(read_session(request) or new_session(), None)
    await form_of(request, who)
    response = Redirect(SIGN_IN, status_code=303)
    response.set_cookie(session_cookie(request, new_session()))
    return response


# --- channels and locations ----------------------------------------------------------------


@get("/channels")
async def channels_page(request: Request[Any, Any, Any]) -> Template:
    """Every channel and location with its policy, in definition order, and the latest
    policy changes (who made them, before and after)."""
    who = await reader(request)
    changes = await planner(request).policy_history(limit=CHANGES_SHOWN)
    return render(
        request,
        who,
        "channels.html",
        nav="channels",
        channels=await planner(request).channels(),
        locations=await planner(request).locations(),
        changes=changes.items,
    )


@dataclass(frozen=True)
class PolicyPage:
    """One kind of policy the page edits: its template, how its form reads, what its saved
    form looks like, and the domain command that saves it."""

    template: str
    read: Callable[[dict[str, str]], Any]
    command: Callable[[str, Any], cmd.Command]
    change: Callable[[cmd.Command], PolicyChange]
    """The command as the change the preview computes."""


def _channel_form(channels: list[Channel], code: str) -> dict[str, str]:
    ch = next((c for c in channels if c.code == code), None)
    if ch is None:
        return {
            "locations": "",
            "buffer": "0",
            "share_percent": "100",
            "backorder_limit": "0",
            "low_stock_threshold": "5",
        }
    return {
        "locations": ", ".join(ch.locations),
        "buffer": str(ch.buffer),
        "share_percent": str(ch.share_percent),
        "backorder_limit": str(ch.backorder_limit),
        "low_stock_threshold": str(ch.low_stock_threshold),
    }


def _location_form(locations: list[Location], code: str) -> dict[str, str]:
    loc = next((x for x in locations if x.code == code), None)
    if loc is None:
        return {"name": "", "kind": "warehouse", "active": "on"}
    return {"name": loc.name, "kind": loc.kind, "active": "on" if loc.active else ""}


CHANNEL = PolicyPage(
    "channel.html",
    channel_request,
    lambda code, r: cmd.DefineChannel(
        code=code,
        locations=tuple(r.locations),
        buffer=r.buffer,
        share_percent=r.share_percent,
        backorder_limit=r.backorder_limit,
        low_stock_threshold=r.low_stock_threshold,
    ),
    lambda c: PolicyChange(channels=(c,)),  # type: ignore[arg-type]
)
LOCATION = PolicyPage(
    "location.html",
    location_request,
    lambda code, r: cmd.DefineLocation(code=code, name=r.name, kind=r.kind, active=r.active),
    lambda c: PolicyChange(locations=(c,)),  # type: ignore[arg-type]
)
SAFETY_STOCK = PolicyPage(
    "safety_stock.html",
    safety_stock_request,
    lambda _, r: cmd.SetSafetyStock(sku=r.sku, location=r.location, quantity=r.quantity),
    lambda c: PolicyChange(safety_stock=(c,)),  # type: ignore[arg-type]
)


def _saved(request: Request[Any, Any, Any]) -> str:
    raw = request.query_params.get("saved", "")
    return raw if raw.isascii() and raw.isdigit() else ""


@get("/channels/{code:str}")
async def channel_page(request: Request[Any, Any, Any], code: str) -> Template:
    who = await reader(request)
    code = path_code(code, "channel")
    form = _channel_form(await planner(request).channels(), code)
    return render(
        request,
        who,
        "channel.html",
        nav="channels",
        code=code,
        form=form,
        errors={},
        saved=_saved(request),
    )


@get("/locations/{code:str}")
async def location_page(request: Request[Any, Any, Any], code: str) -> Template:
    who = await reader(request)
    code = path_code(code, "location")
    form = _location_form(await planner(request).locations(), code)
    return render(
        request,
        who,
        "location.html",
        nav="channels",
        code=code,
        form=form,
        errors={},
        saved=_saved(request),
    )


async def _preview(request: Request[Any, Any, Any], page: PolicyPage, code: str) -> Template:
    """The what-if of the submitted form (`api.service.planner.Planner.preview`: the one
    ATS function over every SKU, nothing written), shown under the form. A bad field re-renders the form naming it (422); a
    change the PUT would refuse shows why (its status). `cursor` pages the changed SKUs."""
    who = await reader(request)
    form = await form_of(request, who)
    _may_save(who)  # as POST /v1/policies/preview: a change is previewed to be saved
    form.pop(CSRF_FIELD, None)
    cursor = form.pop("cursor", None) or None
    context: dict[str, Any] = {"code": code, "form": form, "proposal": form}
    status = 200
    try:
        command = page.command(code, page.read(form))
        preview = await planner(request).preview(page.change(command), PREVIEW_PAGE, cursor)
    except FormError as error:
        context |= {
            "errors": {error.field: error.message},
            "error": f"{error.field}: {error.message}",
        }
        status = 422
    except DomainError as error:
        status, _ = domain_problem(error)
        context["error"] = error.detail
    except InvalidQuery as error:
        context["error"] = str(error)
        status = 422
    else:
        context["preview"] = preview
        context["save_action"] = request.url.path.removesuffix("/preview")
        context["preview_action"] = request.url.path
    # htmx swaps the page's #editor (the form and the preview) from this same answer.
    return await _full_page(request, who, page, status, context)


async def _full_page(
    request: Request[Any, Any, Any],
    who: Visitor,
    page: PolicyPage,
    status: int,
    context: dict[str, Any],
) -> Template:
    if page is SAFETY_STOCK:
        context.update(await _rules(request))
    nav = "safety" if page is SAFETY_STOCK else "channels"
    return render(request, who, page.template, status, nav=nav, **context)


async def _save(
    request: Request[Any, Any, Any], page: PolicyPage, code: str, back: str
) -> Response[Any]:
    """Saves the previewed form as the domain command (as the PUT route does), waits until
    the read model includes it, and shows the page again with the saved position."""
    who = await reader(request)
    form = await form_of(request, who)
    _may_save(who)
    form.pop(CSRF_FIELD, None)
    try:
        proposal = page.read(form)
    except FormError as error:
        context = {
            "code": code,
            "form": form,
            "errors": {error.field: error.message},
            "error": f"{error.field}: {error.message}",
        }
        return await _full_page(request, who, page, 422, context)
    assert who.principal is not None
    call = Call(correlation_id=request.state.correlation_id, token_name=who.principal.name)
    result = await operations(request).handle(page.command(code, proposal), call)
    if isinstance(result, Rejected):
        status, _ = domain_problem(result.error)
        context = {"code": code, "form": form, "errors": {}, "error": result.error.detail}
        return await _full_page(request, who, page, status, context)
    assert isinstance(result, Applied)
    position = result.position or 0
    # The page says which position was saved; past ATP_READ_WAIT the read model follows.
    with contextlib.suppress(ApplicationError):
        await request.app.state.read.wait_for(position)
    return Redirect(f"{back}?saved={position}", status_code=303)


@post("/channels/{code:str}/preview")
async def channel_preview(request: Request[Any, Any, Any], code: str) -> Template:
    return await _preview(request, CHANNEL, path_code(code, "channel", creating=True))


@post("/channels/{code:str}", status_code=303)
async def channel_save(request: Request[Any, Any, Any], code: str) -> Response[Any]:
    code = path_code(code, "channel", creating=True)
    return await _save(request, CHANNEL, code, f"/ui/channels/{quote(code, safe='')}")


@post("/locations/{code:str}/preview")
async def location_preview(request: Request[Any, Any, Any], code: str) -> Template:
    return await _preview(request, LOCATION, path_code(code, "location", creating=True))


@post("/locations/{code:str}", status_code=303)
async def location_save(request: Request[Any, Any, Any], code: str) -> Response[Any]:
    code = path_code(code, "location", creating=True)
    return await _save(request, LOCATION, code, f"/ui/locations/{quote(code, safe='')}")


# --- safety stock --------------------------------------------------------------------------


async def _rules(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """One page of the safety-stock rules (`?cursor=`): location-wide first, then by SKU."""
    cursor = request.query_params.get("cursor") or None
    rules = await planner(request).safety_stock_rules(limit=LIST_PAGE, cursor=cursor)
    return {"rules": rules.items, "rules_next": rules.next_cursor}


@get("/safety-stock")
async def safety_stock_page(request: Request[Any, Any, Any]) -> Template:
    who = await reader(request)
    form = {"sku": "", "location": "", "quantity": "0"}
    return render(
        request,
        who,
        "safety_stock.html",
        nav="safety",
        form=form,
        errors={},
        saved=_saved(request),
        **await _rules(request),
    )


@post("/safety-stock/preview")
async def safety_stock_preview(request: Request[Any, Any, Any]) -> Template:
    return await _preview(request, SAFETY_STOCK, "")


@post("/safety-stock", status_code=303)
async def safety_stock_save(request: Request[Any, Any, Any]) -> Response[Any]:
    return await _save(request, SAFETY_STOCK, "", "/ui/safety-stock")


# --- low and out of stock -----------------------------------------------------------------


@get("/stock")
async def stock_page(request: Request[Any, Any, Any]) -> Template:
    """The SKUs of one channel with one status (low_stock by default: the low-stock
    report), LIST_PAGE per page in SKU order, paged by the list's cursor
    (`Planner.list_items`, the read model's indexes)."""
    who = await reader(request)
    channels = [c.code for c in await planner(request).channels()]
    channel = request.query_params.get("channel") or (channels[0] if channels else "")
    status = request.query_params.get("status") or "low_stock"
    context: dict[str, Any] = {
        "channels": channels,
        "channel": channel,
        "status": status,
        "items": [],
    }
    if status not in STATUSES:
        raise Refused(422, f"status: must be one of {', '.join(STATUSES)}")
    if channel:
        cursor = request.query_params.get("cursor") or None
        page = await planner(request).list_items(
            channel=query_code(channel, "channel"), status=status, limit=LIST_PAGE, cursor=cursor
        )
        rows = [{"sku": r.sku, **msgspec.to_builtins(r.channels[0])} for r in page.items]
        context |= {"items": rows, "next_cursor": page.next_cursor}
    return render(request, who, "stock.html", nav="stock", **context)


# --- items ---------------------------------------------------------------------------------


@get("/items")
async def items_page(request: Request[Any, Any, Any]) -> Template | Redirect:
    who = await reader(request)
    sku = request.query_params.get("sku", "")
    if sku:
        return Redirect(f"/ui/items/{quote(sku, safe='')}", status_code=303)
    return render(request, who, "items.html", nav="items", sku="")


_SHOWN = ("position", "type", "occurred_at", "location", "quantity")


def _history_row(entry: dict[str, Any]) -> dict[str, Any]:
    """A history entry (as `GET /v1/items/{sku}/history` gives it) as a table row: its
    position, time, type, location and quantity, and the rest of its fields as details."""
    hidden = {*_SHOWN, "correlation_id", "sku"}
    details = ", ".join(
        f"{k} {v}" for k, v in entry.items() if k not in hidden and v not in (None, [], {})
    )
    return {name: entry.get(name) for name in _SHOWN} | {"details": details}


@get("/items/{sku:str}")
async def item_page(request: Request[Any, Any, Any], sku: str) -> Template:
    """Per-location figures and each channel's derivation (the read model's item document,
    as `GET /v1/items/{sku}` answers it) and the item's history (as
    `GET /v1/items/{sku}/history`), `?after=` paging on."""
    who = await reader(request)
    sku = path_code(sku, "sku")
    raw_after = request.query_params.get("after", "0")
    if not (raw_after.isascii() and raw_after.isdigit() and int(raw_after) <= s.MAX_POSITION):
        raise Refused(422, f"after: must be a ledger position 0..{s.MAX_POSITION}")
    item = msgspec.json.decode(await item_document(request, sku))
    rows = await asyncio.to_thread(
        history, ledger(request), [("item", sku), POLICIES], int(raw_after), HISTORY_PAGE
    )
    entries = [
        _history_row(history_entry(r.position, r.occurred_at, r.metadata, r.event)) for r in rows
    ]
    next_after = rows[-1].position if len(rows) == HISTORY_PAGE else None
    return render(
        request, who, "item.html", nav="items", item=item, history=entries, next_after=next_after
    )


# --- operations ----------------------------------------------------------------------------


@get("/operations")
async def operations_page(request: Request[Any, Any, Any]) -> Template:
    """The projector's lag, the backing services and each pusher's delay and dead letters:
    what /ready computes (`readiness`), with the pushers' reported dead-letter counts."""
    who = await reader(request)
    _, body = await readiness(request)
    checks = body["checks"]
    found: list[dict[str, str]] = []
    redis_client = request.app.state.redis
    if redis_client is not None:
        with contextlib.suppress(Exception):
            found = await reports(redis_client, request.app.state.settings.redis_prefix)
    dead = dead_letters(found)
    pushers = [
        {"name": name, **check, "dead_letters": f"{dead.get(name, 0):g}"}
        for name, check in sorted(checks.get("pushers", {}).items())
    ]
    services = [(n, checks[n]) for n in ("ledger", "writer", "read_model") if n in checks]
    return render(
        request,
        who,
        "operations.html",
        nav="operations",
        health=body["status"],
        projector=checks.get("projector"),
        checks=services,
        pushers=pushers,
        embedded=request.app.state.settings.embedded,
    )


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
    asked = request.url.path
    if request.method == "GET" and request.url.query:
        asked += f"?{request.url.query}"
    target = f"{SIGN_IN}?next={quote(asked, safe='/')}"
    if request.headers.get("hx-request") == "true":
        return Response(b"", status_code=204, headers={"HX-Redirect": target})
    return Redirect(target, status_code=303)


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


EXCEPTION_HANDLERS: dict[Any, Any] = {
    SignInRequired: _on_sign_in_required,
    Refused: _on_refused,
    ApiProblem: _on_problem,
    ApplicationError: _on_application_error,
}

ROUTES = [
    index,
    sign_in_page,
    sign_in,
    sign_out,
    channels_page,
    channel_page,
    channel_preview,
    channel_save,
    location_page,
    location_preview,
    location_save,
    safety_stock_page,
    safety_stock_preview,
    safety_stock_save,
    items_page,
    item_page,
    operations_page,
    stock_page,
]


async def _what_if(request: Request[Any, Any, Any], body: dict[str, Any]) -> Any:
    raise NotImplementedError  # filled in on api.service.planner.preview
