"""The planner page's forms are read as strictly as the JSON routes read a body, and its
session cookie opens only under the server key that sealed it, within its lifetime."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import api.http.ui
from api.http import schemas as s
from api.http.ui import HTMX_VERSION, forms
from api.http.ui.access import HOME, next_page, policy_text
from api.http.ui.forms import FormError
from api.http.ui.session import PURPOSE, SESSION_SECONDS, csrf_ok, new_session
from api.service.tokens import sealer

CHANNEL = {
    "locations": "WH1, WH2 ST1",
    "buffer": "2",
    "share_percent": "80",
    "backorder_limit": "0",
    "low_stock_threshold": "5",
}


def test_given_a_channel_form_when_read_then_it_is_the_put_body() -> None:
    """Given the channel form as a browser sends it, when read, then it is the request
    struct `PUT /v1/channels/{code}` decodes: codes in sourcing order, whole numbers."""
    assert forms.channel_request({**CHANNEL, "_csrf": "x"}) == s.ChannelRequest(
        locations=["WH1", "WH2", "ST1"],
        buffer=2,
        share_percent=80,
        backorder_limit=0,
        low_stock_threshold=5,
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("buffer", "1.5"),
        ("buffer", "1e3"),
        ("buffer", "-1"),
        ("buffer", " 2"),
        ("buffer", "²"),
        ("buffer", ""),
        ("buffer", "1000000001"),
        ("share_percent", "101"),
        ("locations", ""),
        ("locations", "WH1, bad code!"),
        ("locations", "WH1;WH2"),
        ("low_stock_threshold", "5 units"),
    ],
)
def test_given_a_bad_field_when_read_then_the_error_names_it(field: str, value: str) -> None:
    """Given a channel form with one bad field, when read, then FormError names that
    field (the page shows it beside the input) and no request comes out."""
    with pytest.raises(FormError) as raised:
        forms.channel_request({**CHANNEL, field: value})
    assert raised.value.field == field


def test_given_an_unknown_field_when_read_then_it_is_refused() -> None:
    with pytest.raises(FormError) as raised:
        forms.channel_request({**CHANNEL, "share": "80"})
    assert raised.value.field == "share"


def test_given_a_location_form_when_read_then_the_checkbox_is_active() -> None:
    """Given the location form, when read, then `active` is ticked ("on") or left out;
    anything else is refused."""
    form = {"name": "East", "kind": "store", "active": "on"}
    assert forms.location_request(form) == s.LocationRequest("East", "store", True)
    assert forms.location_request({"name": "East", "kind": "store"}).active is False
    for field, value in [("active", "yes"), ("kind", "shop"), ("name", "x" * 1001)]:
        with pytest.raises(FormError) as raised:
            forms.location_request({**form, field: value})
        assert raised.value.field == field


def test_given_a_safety_stock_form_when_every_is_ticked_then_the_rule_covers_every() -> None:
    """Given the safety-stock form with "every SKU" ticked and the SKU left empty, when
    read, then the rule covers every SKU (null in the PUT body); the same with the SKU
    left empty and nothing ticked is refused naming the empty field."""
    form = {"sku": "", "all_skus": "on", "location": "WH1", "quantity": "3"}
    rule = forms.safety_stock_request(form)
    assert rule == s.SafetyStockRequest(quantity=3, sku=None, location="WH1")
    everywhere = {"sku": "", "all_skus": "on", "location": "", "all_locations": "on"}
    assert forms.safety_stock_request({**everywhere, "quantity": "1"}) == s.SafetyStockRequest(
        quantity=1, sku=None, location=None
    )
    with pytest.raises(FormError) as empty:
        forms.safety_stock_request({"sku": "", "location": "WH1", "quantity": "3"})
    assert empty.value.field == "sku" and "sku left empty" in empty.value.message
    with pytest.raises(FormError) as both:
        forms.safety_stock_request({"sku": "", "location": "", "quantity": "1"})
    assert both.value.field == "sku" and "sku and location left empty" in both.value.message
    with pytest.raises(FormError) as raised:
        forms.safety_stock_request({"sku": "A", "location": "", "quantity": "-3"})
    assert raised.value.field == "quantity"


def test_a_session_opens_only_under_its_key_and_within_its_lifetime() -> None:
    """Invariant: the cookie's value is sealed (the token is not in it), opens under the
    key that sealed it and no other, and not after SESSION_SECONDS."""
    key = b"k" * 32
    box = sealer(key, PURPOSE)
    session = new_session("atp_secret-token")
    sealed = box.encrypt(json.dumps({"csrf": session.csrf, "token": session.token}).encode())
    assert b"atp_secret-token" not in sealed
    assert json.loads(box.decrypt(sealed, ttl=SESSION_SECONDS))["token"] == "atp_secret-token"
    with pytest.raises(Exception):  # noqa: B017 - InvalidToken
        sealer(b"o" * 32, PURPOSE).decrypt(sealed)
    stale = box.encrypt_at_time(b"{}", int(time.time()) - SESSION_SECONDS - 5)
    with pytest.raises(Exception):  # noqa: B017 - InvalidToken (expired)
        box.decrypt(stale, ttl=SESSION_SECONDS)


@pytest.mark.parametrize(
    ("sent", "goes_to"),
    [
        ("/ui/items/MUG-01?after=3", "/ui/items/MUG-01?after=3"),
        ("/ui/stock?channel=web&status=low_stock", "/ui/stock?channel=web&status=low_stock"),
        ("/ui/../v1/tokens", HOME),
        ("/ui/%2e%2E/v1/tokens", HOME),
        ("/ui/channels/./../../metrics", HOME),
        ("/ui/.%2E", HOME),
        ("/ui/channels\\..\\..\\v1", HOME),
        ("//evil.example/", HOME),
        ("/ui//evil.example/", HOME),
        ("https://evil.example/ui/", HOME),
        ("javascript:alert(1)", HOME),
        ("/ui/\tx", HOME),
        ("/uix", HOME),
        (None, HOME),
    ],
)
def test_after_sign_in_the_planner_stays_on_a_page_of_the_planner(
    sent: str | None, goes_to: str
) -> None:
    """Invariant: `next` leads only to a path under /ui/ that a browser resolves under
    /ui/ too (no dot segment, plain or percent-encoded; no backslash; no other site)."""
    assert next_page(sent) == goes_to


def test_a_csrf_token_matches_only_its_session() -> None:
    one, two = new_session(), new_session()
    assert csrf_ok(one, one.csrf)
    sent: list[Any] = [two.csrf, "", None, ["x"]]
    assert not any(csrf_ok(one, x) for x in sent)


def test_a_policy_reads_on_one_line() -> None:
    assert policy_text(None) == "none"
    assert policy_text({"buffer": 2, "locations": ["WH1", "WH2"]}) == "buffer 2, locations WH1 WH2"


@settings(deadline=None)  # a shared, loaded machine: no per-example time limit
@given(st.text(max_size=12))
def test_a_buffer_reads_only_as_ascii_digits_in_bounds(text: str) -> None:
    """Property: the buffer field reads as the number it spells when it is ASCII digits
    within 0..1,000,000,000 (the PUT's bound), and is refused naming `buffer` otherwise."""
    fits = text.isascii() and text.isdigit() and int(text) <= 1_000_000_000
    try:
        read = forms.channel_request({**CHANNEL, "buffer": text})
    except FormError as error:
        assert not fits and error.field == "buffer"
    else:
        assert fits and read.buffer == int(text)


def test_the_vendored_htmx_is_the_one_recorded() -> None:
    """Invariant: the page's htmx is the version and file VENDORED.md records (source,
    licence, checksum), so what the page runs is known and works offline."""
    static = Path(api.http.ui.__file__).parent / "static"
    script = (static / "htmx.min.js").read_bytes()
    record = (static / "VENDORED.md").read_text()
    assert f'version:"{HTMX_VERSION}"'.encode() in script
    assert hashlib.sha256(script).hexdigest() in record
    assert HTMX_VERSION in record and (static / "htmx.LICENSE").exists()
