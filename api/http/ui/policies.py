"""The planner page's policy editors: channels and locations (sourcing order, buffer,
share, backorder limit, low-stock threshold; name, kind, active) and safety-stock rules,
each with a what-if preview (`api.service.planner.Planner.preview`: the one ATS function
over every SKU, nothing written) before the save, which runs the same domain command as
the policy PUTs through the named operations. Forms are read strictly
(`api.http.ui.forms`): a bad field re-renders the form naming it, and nothing is saved.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from litestar import Request, Response, get, post
from litestar.params import FromPath
from litestar.response import Redirect, Template

from api.http.controllers.common import (
    operations,
    path_code,
)
from api.http.problems import domain_problem
from api.http.ui.access import (
    Refused,
    form_of,
    may_save,
    planner,
    reader,
    render,
)
from api.http.ui.forms import (
    CHANNEL_FIELDS,
    LOCATION_FIELDS,
    SAFETY_STOCK_FIELDS,
    FormError,
    channel_request,
    location_request,
    safety_stock_request,
)
from api.http.ui.session import CSRF_FIELD, Visitor
from api.service.commands import Applied, Rejected
from api.service.errors import ApplicationError, InvalidQuery
from api.service.operations import Call
from api.service.planner import PolicyChange
from atp import commands as cmd
from atp.errors import DomainError
from atp.state import Channel, Location

CHANGES_SHOWN = 20
"""Policy changes on the channels page (the newest)."""
PREVIEW_PAGE = 50
"""Changed SKUs per page of a preview."""
LIST_PAGE = 50
"""Safety-stock rules per page."""


# --- channels and locations ----------------------------------------------------------------


@get("/channels")
async def channels_page(request: Request[Any, Any, Any]) -> Template:
    """Every channel and location with its policy, in definition order, and the latest
    policy changes (who made them, before and after)."""
    who = await reader(request)
    cursor = request.query_params.get("changes") or None
    changes = await planner(request).policy_history(limit=CHANGES_SHOWN, cursor=cursor)
    return render(
        request,
        who,
        "channels.html",
        nav="channels",
        channels=await planner(request).channels(),
        locations=await planner(request).locations(),
        changes=changes.items,
        changes_next=changes.next_cursor,
    )


@get("/new")
async def new_policy(request: Request[Any, Any, Any]) -> Redirect:
    """`?kind=channel|location&code=`: the editor of a channel or location not defined yet
    (a code that does not match the code pattern: 422 page naming `code`)."""
    await reader(request)
    kind = request.query_params.get("kind", "")
    if kind not in ("channel", "location"):
        raise Refused(422, "kind: must be channel or location")
    code = path_code(quote(request.query_params.get("code", ""), safe=""), kind, creating=True)
    return Redirect(f"/ui/{kind}s/{quote(code, safe='')}", status_code=303)


@dataclass(frozen=True)
class PolicyPage:
    """One kind of policy the page edits: its template, how its form reads, what its saved
    form looks like, and the domain command that saves it."""

    template: str
    fields: tuple[str, ...]
    """The form's fields (an unticked checkbox is not sent: shown as "")."""
    read: Callable[[dict[str, str]], Any]
    command: Callable[[str, Any], cmd.Command]
    change: Callable[[cmd.Command], PolicyChange]
    """The command as the change the preview computes."""

    def shown(self, form: dict[str, str]) -> dict[str, str]:
        """The form's fields as sent, to show again ("" for one not sent)."""
        return {name: form.get(name, "") for name in self.fields}


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
    CHANNEL_FIELDS,
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
    LOCATION_FIELDS,
    location_request,
    lambda code, r: cmd.DefineLocation(code=code, name=r.name, kind=r.kind, active=r.active),
    lambda c: PolicyChange(locations=(c,)),  # type: ignore[arg-type]
)
SAFETY_STOCK = PolicyPage(
    "safety_stock.html",
    SAFETY_STOCK_FIELDS,
    safety_stock_request,
    lambda _, r: cmd.SetSafetyStock(sku=r.sku, location=r.location, quantity=r.quantity),
    lambda c: PolicyChange(safety_stock=(c,)),  # type: ignore[arg-type]
)


def _saved(request: Request[Any, Any, Any]) -> str:
    raw = request.query_params.get("saved", "")
    return raw if raw.isascii() and raw.isdigit() else ""


@get("/channels/{code:str}")
async def channel_page(request: Request[Any, Any, Any], code: FromPath[str]) -> Template:
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
async def location_page(request: Request[Any, Any, Any], code: FromPath[str]) -> Template:
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
    may_save(who)  # as POST /v1/policies/preview: a change is previewed to be saved
    form.pop(CSRF_FIELD, None)
    cursor = form.pop("cursor", None) or None
    shown = page.shown(form)
    context: dict[str, Any] = {"code": code, "form": shown, "proposal": shown}
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
    may_save(who)
    form.pop(CSRF_FIELD, None)
    try:
        proposal = page.read(form)
    except FormError as error:
        context = {
            "code": code,
            "form": page.shown(form),
            "errors": {error.field: error.message},
            "error": f"{error.field}: {error.message}",
        }
        return await _full_page(request, who, page, 422, context)
    assert who.principal is not None
    call = Call(correlation_id=request.state.correlation_id, token_name=who.principal.name)
    result = await operations(request).handle(page.command(code, proposal), call)
    if isinstance(result, Rejected):
        status, _ = domain_problem(result.error)
        context = {"code": code, "form": page.shown(form), "error": result.error.detail}
        return await _full_page(request, who, page, status, context)
    assert isinstance(result, Applied)
    position = result.position or 0
    # The page says which position was saved; past ATP_READ_WAIT the read model follows.
    if (nudge := request.app.state.nudge) is not None:
        nudge.nudge()  # embedded: wake the in-process projector now
    with contextlib.suppress(ApplicationError):
        await request.app.state.read.wait_for(position)
    return Redirect(f"{back}?saved={position}", status_code=303)


@post("/channels/{code:str}/preview")
async def channel_preview(request: Request[Any, Any, Any], code: FromPath[str]) -> Template:
    return await _preview(request, CHANNEL, path_code(code, "channel", creating=True))


@post("/channels/{code:str}", status_code=303)
async def channel_save(request: Request[Any, Any, Any], code: FromPath[str]) -> Response[Any]:
    code = path_code(code, "channel", creating=True)
    return await _save(request, CHANNEL, code, f"/ui/channels/{quote(code, safe='')}")


@post("/locations/{code:str}/preview")
async def location_preview(request: Request[Any, Any, Any], code: FromPath[str]) -> Template:
    return await _preview(request, LOCATION, path_code(code, "location", creating=True))


@post("/locations/{code:str}", status_code=303)
async def location_save(request: Request[Any, Any, Any], code: FromPath[str]) -> Response[Any]:
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
    form = {"sku": "", "all_skus": "", "location": "", "all_locations": "", "quantity": "0"}
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


ROUTES = [
    channels_page,
    new_policy,
    channel_page,
    channel_preview,
    channel_save,
    location_page,
    location_preview,
    location_save,
    safety_stock_page,
    safety_stock_preview,
    safety_stock_save,
]
