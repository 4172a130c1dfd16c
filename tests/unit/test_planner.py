"""The planner's pure parts: the what-if preview is the one ATS function applied to the
changed policies, the list indexes a SKU belongs to, and opaque cursors.

Given/when/then: given item states and policies, when a change is previewed, then each
figure is exactly `atp.ats.channel_availability` under the new policies, and what the
projector would serve after the same change is applied."""

from __future__ import annotations

from datetime import timedelta

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.service.errors import InvalidQuery
from api.service.planner import Cursors
from api.service.preview import PolicyChange, affected_channels, apply_change, preview_states
from atp import commands as cmd
from atp import events as ev
from atp.ats import channel_availability
from atp.decide import POLICIES, decide
from atp.errors import InvalidCommand, UnknownLocation
from atp.events import Hold
from atp.state import ItemState, Policies, evolve_item, evolve_policies
from projections.indexes import hold_changes, hold_memberships, memberships
from projections.views import sku_documents
from tests.unit.scenario import NOW

WH, ST = "WH1", "ST1"


def policies(**web: int) -> Policies:
    """WH1 (warehouse) and ST1 (store); channel web over both, pos over ST1."""
    events: list[ev.PolicyEvent] = [
        ev.LocationDefined(WH, "Main", "warehouse", True),
        ev.LocationDefined(ST, "Store", "store", True),
        ev.ChannelDefined(
            "web",
            (WH, ST),
            web.get("buffer", 0),
            web.get("share_percent", 100),
            web.get("backorder_limit", 0),
            web.get("low_stock_threshold", 3),
        ),
        ev.ChannelDefined("pos", (ST,), 0, 100, 0, 1),
    ]
    state = Policies()
    for e in events:
        state = evolve_policies(state, e)
    return state


def item(sku: str, wh: int = 0, st_: int = 0, held: int = 0) -> ItemState:
    state = ItemState(sku=sku)
    for location, quantity in ((WH, wh), (ST, st_)):
        if quantity:
            state = evolve_item(state, ev.StockReceived(sku, location, quantity, None, 0))
    if held:
        hold = ev.StockHeld(sku, f"r-{sku}", "web", (Hold(WH, held),), NOW + timedelta(minutes=15))
        state = evolve_item(state, hold)
    return state


def web_change(**fields: int) -> PolicyChange:
    channel = cmd.DefineChannel(
        "web",
        (WH, ST),
        fields.get("buffer", 0),
        fields.get("share_percent", 100),
        fields.get("backorder_limit", 0),
        fields.get("low_stock_threshold", 3),
    )
    return PolicyChange(channels=(channel,))


# --- the preview is the ATS function under the changed policies ----------------------------


def test_given_stock_when_the_web_buffer_rises_then_each_figure_is_the_ats_function() -> None:
    before = policies()
    items = [item("A", wh=1), item("B", wh=4, st_=1), item("C", wh=10, held=2), item("D")]
    after, changed = apply_change(web_change(buffer=3), before, {}, NOW)

    seen, totals, changes = preview_states(items, before, after, changed, NOW)

    assert seen == 4 and changed == {}
    old, web = before.channels["web"], after.channels["web"]
    expected = {(i.sku, channel_availability(i, after, web, NOW).available) for i in items} - {
        (i.sku, channel_availability(i, before, old, NOW).available) for i in items
    }
    assert {(c.sku, c.available_after) for c in changes} == expected
    # B and C drop by the whole buffer (ties in SKU order), A by its last unit; D had none.
    assert [(c.sku, c.available_before, c.available_after) for c in changes] == [
        ("B", 5, 2),
        ("C", 8, 5),
        ("A", 1, 0),
    ]
    assert [c.status_after for c in changes] == ["low_stock", "in_stock", "out_of_stock"]
    by_channel = {t.channel: t for t in totals}
    assert by_channel["web"].before is not None
    assert by_channel["web"].before.available == 14 and by_channel["web"].after.available == 7
    assert by_channel["web"].before.out_of_stock == 1 and by_channel["web"].after.out_of_stock == 2
    assert "pos" not in by_channel  # its figures cannot move: neither computed nor totalled


def test_given_an_unknown_location_when_previewed_then_the_put_error_names_the_field() -> None:
    change = PolicyChange(channels=(cmd.DefineChannel("web", (WH, "NOPE")),))
    with pytest.raises(UnknownLocation) as raised:
        apply_change(change, policies(), {}, NOW)
    assert raised.value.data["field"] == "channels.web.locations[1]"


def test_given_a_negative_rule_when_previewed_then_refused_like_the_put() -> None:
    change = PolicyChange(safety_stock=(cmd.SetSafetyStock(None, WH, -1),))
    with pytest.raises(InvalidCommand) as raised:
        apply_change(change, policies(), {}, NOW)
    assert raised.value.data["field"] == "safety_stock[0].quantity"


def test_given_a_new_location_when_a_channel_uses_it_in_the_same_change_then_it_is_known() -> None:
    change = PolicyChange(
        locations=(cmd.DefineLocation("DS1", "Drop", "dropship"),),
        channels=(cmd.DefineChannel("market", ("DS1", WH)),),
    )
    after, _ = apply_change(change, policies(), {}, NOW)
    _, totals, changes = preview_states([item("A", wh=2)], policies(), after, {}, NOW)
    market = next(t for t in totals if t.channel == "market")
    assert market.before is None and market.after.available == 2
    assert [(c.sku, c.channel, c.available_before, c.available_after) for c in changes] == [
        ("A", "market", 0, 2)
    ]


def test_given_a_sku_rule_when_previewed_then_only_that_sku_changes() -> None:
    items = [item("A", wh=5), item("B", wh=5)]
    change = PolicyChange(safety_stock=(cmd.SetSafetyStock("A", None, 4),))
    after, changed = apply_change(change, policies(), {i.sku: i for i in items}, NOW)
    _, _, changes = preview_states(items, policies(), after, changed, NOW)
    assert [(c.sku, c.channel, c.available_after) for c in changes] == [("A", "web", 1)]


def test_affected_channels_follow_locations_and_rules() -> None:
    base = policies()
    store_rule = evolve_policies(base, ev.SafetyStockSet(None, ST, 2))
    assert affected_channels(base, store_rule) == {"web", "pos"}
    warehouse_rule = evolve_policies(base, ev.SafetyStockSet(None, WH, 2))
    assert affected_channels(base, warehouse_rule) == {"web"}
    global_rule = evolve_policies(base, ev.SafetyStockSet(None, None, 1))
    assert affected_channels(base, global_rule) == {"web", "pos"}
    closed = evolve_policies(base, ev.LocationDefined(WH, "Main", "warehouse", False))
    assert affected_channels(base, closed) == {"web"}
    assert affected_channels(base, base) == set()


# --- property: the preview's "after" is what the projector serves after the PUT -------------

units = st.integers(min_value=0, max_value=12)


@st.composite
def changes(draw: st.DrawFn) -> PolicyChange:
    channels = []
    if draw(st.booleans()):
        channels.append(
            cmd.DefineChannel(
                "web",
                tuple(draw(st.permutations([WH, ST]))[: draw(st.integers(1, 2))]),
                draw(units),
                draw(st.integers(0, 100)),
                draw(units),
                draw(units),
            )
        )
    rules = draw(
        st.lists(
            st.builds(
                cmd.SetSafetyStock,
                st.sampled_from([None, "A", "B"]),
                st.sampled_from([None, WH, ST]),
                units,
            ),
            max_size=3,
        )
    )
    locations = []
    if draw(st.booleans()):
        locations.append(cmd.DefineLocation(ST, "Store", "store", draw(st.booleans())))
    return PolicyChange(tuple(locations), tuple(channels), tuple(rules))


@settings(max_examples=200, deadline=None)
@given(
    change=changes(),
    stock=st.lists(st.tuples(units, units, st.integers(0, 3)), min_size=3, max_size=3),
)
def test_preview_after_equals_the_projection_after_the_change(
    change: PolicyChange, stock: list[tuple[int, int, int]]
) -> None:
    """Invariant: for any policy change, each figure the preview reports after it is the
    figure the projector's documents show once the change is applied (event by event, as
    the ledger records the PUTs), and each unreported figure does not move."""
    before = policies()
    items = {
        sku: item(sku, wh, st_, min(held, wh))
        for sku, (wh, st_, held) in zip("ABC", stock, strict=True)
    }
    after, changed = apply_change(change, before, items, NOW)
    _, totals, reported = preview_states(list(items.values()), before, after, changed, NOW)

    # What the projector does with the PUTs' events: fold them, then write documents.
    projected_policies = before
    projected = dict(items)
    for _, command in change.commands():
        for stream, event in decide(command, _World(projected_policies, projected), NOW):
            if isinstance(event, ev.SafetyStockSet) and event.sku is not None:
                projected[event.sku] = evolve_item(projected[event.sku], event)
            else:
                assert stream == POLICIES and isinstance(event, ev.PolicyEvent)
                projected_policies = evolve_policies(projected_policies, event)
    served = {}
    for sku, state in projected.items():
        docs = sku_documents(state, projected_policies, NOW, 1)
        for channel, body in docs.availability.items():
            served[(sku, channel)] = msgspec.json.decode(body)
    moved = {(c.sku, c.channel): c for c in reported}
    for (sku, channel), doc in served.items():
        if (sku, channel) in moved:
            assert moved[(sku, channel)].available_after == doc["available"]
            assert moved[(sku, channel)].status_after == doc["status"]
        else:
            was = channel_availability(items[sku], before, before.channels[channel], NOW)
            assert (was.available, was.status) == (doc["available"], doc["status"])
    for t in totals:
        assert t.after.available == sum(
            d["available"] for (_, c), d in served.items() if c == t.channel
        )


class _World:
    """The decide World over policies and item states (what the command service loads)."""

    def __init__(self, policies: Policies, items: dict[str, ItemState]) -> None:
        self._p, self._i = policies, items

    def policies(self) -> Policies:
        return self._p

    def item(self, sku: str) -> ItemState:
        return self._i.get(sku) or ItemState(sku=sku)


# --- indexes and cursors ------------------------------------------------------------------


def test_a_sku_is_listed_by_status_location_rule_and_live_hold() -> None:
    state = evolve_item(item("A", wh=2, held=1), ev.SafetyStockSet("A", None, 1))
    found = set(memberships(state, {"web": "low_stock", "pos": "out_of_stock"}, NOW))
    found |= set(hold_memberships(state, NOW))
    assert found == {
        ("catalog", "A"),
        ("status:web:low_stock", "A"),
        ("status:pos:out_of_stock", "A"),
        ("location:WH1", "A"),
        ("safety", "A"),
        ("holds", "A\x1fr-A"),
        ("holds:web", "A\x1fr-A"),
    }
    assert hold_memberships(state, NOW + timedelta(hours=1)) == ()


def test_a_touched_hold_is_added_while_live_and_removed_once_it_ends_or_expires() -> None:
    """Only the holds an event or an expiry touched are looked at (issue 12: a SKU with
    10,000 live holds projects at the cost of one); a live one is listed, an ended or
    expired one is not."""
    state = item("A", wh=2, held=1)
    assert hold_changes(state, {"r-A": "web"}, NOW) == (
        (("holds", "A\x1fr-A"), ("holds:web", "A\x1fr-A")),
        (),
    )
    later = NOW + timedelta(hours=1)
    gone = (("holds", "A\x1fr-A"), ("holds:web", "A\x1fr-A"))
    assert hold_changes(state, {"r-A": "web"}, later) == ((), gone)
    assert hold_changes(state, {"r-gone": "pos"}, NOW) == (
        (),
        (("holds", "A\x1fr-gone"), ("holds:pos", "A\x1fr-gone")),
    )


def test_cursors_round_trip_and_refuse_anything_else() -> None:
    """Given a cursor a list gave, when it comes back to the same list with the same
    filters, then it names the same position; anything else (made up, cut short, another
    list's, other filters', another service key's) is refused naming `cursor`."""
    cursors = Cursors(b"k" * 32)
    scope = ["web", None, "low_stock", ""]
    cursor = cursors.encode("items", "TEE/BLK-M", scope)
    assert cursors.decode(cursor, "items", str, scope) == "TEE/BLK-M"
    assert cursors.decode(None, "items", str, scope) is None
    text = cursor.partition(".")[0]
    refused = [
        "",
        "%%%",
        "bm90IGpzb24",
        "é.é",
        text,  # the position without its signature (the old unsigned cursor)
        text + "." + "A" * 22,  # a made-up signature
        cursor[:-2],
        cursors.encode("preview", "TEE/BLK-M", scope),
        cursors.encode("items", "TEE/BLK-M", ["amazon", None, "low_stock", ""]),
        Cursors(b"j" * 32).encode("items", "TEE/BLK-M", scope),
    ]
    for bad in refused:
        with pytest.raises(InvalidQuery) as raised:
            cursors.decode(bad, "items", str, scope)
        assert raised.value.data["field"] == "cursor"


@given(st.text(max_size=80))
def test_no_made_up_cursor_is_taken(made_up: str) -> None:
    """Given any text a client makes up, when it is sent as a cursor, then it is refused
    naming `cursor` (a cursor is only ever one the service signed)."""
    with pytest.raises(InvalidQuery):
        Cursors(b"k" * 32).decode(made_up, "policy-history", int)
