"""Strict reading of the planner page's forms into the JSON routes' request structs.

A form sends every value as text. A whole number is ASCII digits only (`"1.5"`, `"1e3"`,
`" 3"` and `"²"` are refused); the rest is checked by the very decoder the JSON routes use
(`api.http.decoding.decode_body`: bounds, code patterns in full, unknown fields), so a form
accepts exactly what `PUT /v1/channels/{code}`, `PUT /v1/locations/{code}` and
`PUT /v1/safety-stock` accept. A bad field raises FormError naming it; nothing is saved.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec

from api.http import schemas as s
from api.http.decoding import decode_body
from api.http.problems import ApiProblem
from api.http.ui.session import CSRF_FIELD

T = TypeVar("T")
_WHOLE = re.compile(r"\A[0-9]{1,20}\Z")
_CODES = re.compile(r"[,\s]+")


class FormError(Exception):
    """A form field that does not hold what it must: `field` (the form's name for it) and
    a message for the planner."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _fields(form: Mapping[str, str], names: tuple[str, ...]) -> dict[str, str]:
    """The form's fields, refusing any field this form does not have (the CSRF token aside)."""
    for name in form:
        if name != CSRF_FIELD and name not in names:
            raise FormError(name, "is not a field of this form")
    return {name: form.get(name, "") for name in names}


def _whole(fields: dict[str, str], name: str) -> int:
    value = fields[name]
    if not _WHOLE.match(value):
        raise FormError(name, "must be a whole number (digits only)")
    return int(value)


def _decoded(body: dict[str, Any], type_: type[T]) -> T:
    """`body` through the JSON routes' strict decoder; its field becomes the FormError's."""
    try:
        return decode_body(msgspec.json.encode(body), type_)
    except ApiProblem as problem:
        field = str(problem.extra.get("field") or "form")
        message = problem.detail.removeprefix(f"{field}: ")
        raise FormError(field.split("[", 1)[0], message) from None


CHANNEL_FIELDS = ("locations", "buffer", "share_percent", "backorder_limit", "low_stock_threshold")


def channel_request(form: Mapping[str, str]) -> s.ChannelRequest:
    """A channel's policy from its form: `locations` is the sourcing order, codes separated
    by commas or spaces (`WH1, WH2, ST1`); the four figures are whole numbers. Raises
    FormError."""
    fields = _fields(form, CHANNEL_FIELDS)
    codes = [code for code in _CODES.split(fields["locations"]) if code]
    if not codes:
        raise FormError("locations", "name at least one location, in sourcing order")
    body = {"locations": codes} | {
        name: _whole(fields, name) for name in CHANNEL_FIELDS if name != "locations"
    }
    return _decoded(body, s.ChannelRequest)


LOCATION_FIELDS = ("name", "kind", "active")


def location_request(form: Mapping[str, str]) -> s.LocationRequest:
    """A location from its form: `name`, `kind` (warehouse, store or dropship) and the
    `active` checkbox (sent only when ticked, as "on"). Raises FormError."""
    fields = _fields(form, LOCATION_FIELDS)
    if fields["active"] not in ("", "on"):
        raise FormError("active", "is a checkbox: on, or left out")
    body = {"name": fields["name"], "kind": fields["kind"], "active": fields["active"] == "on"}
    return _decoded(body, s.LocationRequest)


SAFETY_STOCK_FIELDS = ("sku", "all_skus", "location", "all_locations", "quantity")
_EVERY = {"sku": ("all_skus", "every SKU"), "location": ("all_locations", "every location")}


def safety_stock_request(form: Mapping[str, str]) -> s.SafetyStockRequest:
    """A safety-stock rule from its form: `sku` and `location`, and `quantity` (0 removes
    the rule). A rule for every SKU or every location (the PUT's null) needs its checkbox
    ticked (`all_skus`, `all_locations` = "on") with the code left empty: a code left empty
    without it is refused (naming the empty fields), so a half-filled form never saves a
    rule that holds stock back everywhere. Raises FormError."""
    fields = _fields(form, SAFETY_STOCK_FIELDS)
    body = {
        "sku": fields["sku"] or None,
        "location": fields["location"] or None,
        "quantity": _whole(fields, "quantity"),
    }
    request = _decoded(body, s.SafetyStockRequest)
    empty = []
    for name, (box, every) in _EVERY.items():
        if fields[box] not in ("", "on"):
            raise FormError(box, "is a checkbox: on, or not sent")
        if fields[box] == "on" and fields[name]:
            raise FormError(name, f"give a {name} or tick {every}, not both")
        if fields[box] != "on" and not fields[name]:
            empty.append(name)
    if empty:
        everything = " / ".join(_EVERY[name][1] for name in empty)
        raise FormError(
            empty[0],
            f"{' and '.join(empty)} left empty: fill {'them' if len(empty) > 1 else 'it'} in,"
            f" or tick {everything} for a rule that covers them all",
        )
    return request
