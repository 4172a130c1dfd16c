"""A SKU's live holds as a persistent map (issue 12: flat in live holds).

The item state keeps its holds in `Holds` (a HAMT), so a hold is added or dropped without
copying the others, and keeps `next_expiry` incrementally. What must not change: the holds
read as the dict they were (insertion order, a replaced hold keeps its place), the earliest
expiry is exact after any sequence of holds, releases and extensions, and the stored JSON
has the shape it had (`{reservation_id: hold}` in insertion order), so old snapshots and
Redis state documents decode.
"""

from __future__ import annotations

import json
from datetime import timedelta

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from atp import events as ev
from atp.events import Hold
from atp.state import Holds, ItemHold, ItemState, evolve_item, state_dec_hook, state_enc_hook
from tests.unit.scenario import NOW

encode = msgspec.json.Encoder(enc_hook=state_enc_hook).encode
decode = msgspec.json.Decoder(ItemState, dec_hook=state_dec_hook).decode


def held(rid: str, minutes: int, quantity: int = 1) -> ev.StockHeld:
    return ev.StockHeld(
        sku="A",
        reservation_id=rid,
        channel="web",
        holds=(Hold("WH1", quantity),),
        expires_at=NOW + timedelta(minutes=minutes),
    )


def fold(*events: ev.ItemEvent) -> ItemState:
    state = ItemState(sku="A")
    for event in events:
        state = evolve_item(state, event)
    return state


class TestHolds:
    def test_given_holds_when_one_is_released_then_the_others_keep_their_order(self):
        state = fold(held("r3", 30), held("r1", 10), held("r2", 20))

        after = evolve_item(state, ev.HoldReleased(sku="A", reservation_id="r1"))

        assert list(after.holds) == ["r3", "r2"]
        assert list(state.holds) == ["r3", "r1", "r2"]  # the earlier state is untouched
        assert after.at("WH1").held == 2 and state.at("WH1").held == 3

    def test_given_a_hold_when_it_is_extended_then_it_keeps_its_place(self):
        state = fold(held("r1", 10), held("r2", 20))

        after = evolve_item(
            state, ev.HoldExtended(sku="A", reservation_id="r1", expires_at=NOW + timedelta(1))
        )

        assert list(after.holds) == ["r1", "r2"]
        assert after.next_expiry == NOW + timedelta(minutes=20)

    def test_holds_compare_equal_to_the_dict_they_stand_for(self):
        state = fold(held("r1", 10))

        assert state.holds == {
            "r1": ItemHold("r1", "web", (Hold("WH1", 1),), NOW + timedelta(minutes=10))
        }
        assert Holds() == {} and len(state.holds) == 1 and "r1" in state.holds

    def test_the_stored_json_keeps_the_shape_of_a_dict_in_insertion_order(self):
        state = fold(held("r2", 20), held("r1", 10))

        stored = json.loads(encode(state))

        assert list(stored["holds"]) == ["r2", "r1"]
        assert stored["holds"]["r1"]["reservation_id"] == "r1"
        assert decode(encode(state)) == state
        assert list(decode(encode(state)).holds) == ["r2", "r1"]

    def test_a_state_stored_before_holds_were_persistent_decodes(self):
        old = {
            "sku": "A",
            "locations": {"WH1": {"on_hand": 5, "held": 1}},
            "holds": {
                "r1": {
                    "reservation_id": "r1",
                    "channel": "web",
                    "holds": [{"location": "WH1", "quantity": 1, "backorder": False}],
                    "expires_at": "2026-01-01T00:10:00Z",
                }
            },
            "next_expiry": "2026-01-01T00:10:00Z",
        }

        state = decode(json.dumps(old).encode())

        assert state.holds.get("r1") == ItemHold(
            "r1", "web", (Hold("WH1", 1),), NOW + timedelta(minutes=10)
        )
        # It goes on as any other state.
        after = evolve_item(state, held("r2", 5))
        assert list(after.holds) == ["r1", "r2"] and after.next_expiry == NOW + timedelta(minutes=5)


step = st.one_of(
    st.tuples(st.just("hold"), st.sampled_from("abcdef"), st.integers(1, 60)),
    st.tuples(st.just("release"), st.sampled_from("abcdef"), st.just(0)),
    st.tuples(st.just("extend"), st.sampled_from("abcdef"), st.integers(1, 60)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(step, max_size=40))
def test_holds_and_their_earliest_expiry_match_a_plain_dict_after_any_history(steps):
    """Whatever holds are taken, released and extended in whatever order, the persistent
    holds equal (in content and order) a plain dict folded the way holds were folded before,
    `held` is their sum, and `next_expiry` is exactly their earliest expiry."""
    state = ItemState(sku="A")
    model: dict[str, ItemHold] = {}
    for kind, rid, minutes in steps:
        expires = NOW + timedelta(minutes=minutes)
        if kind == "hold" and rid in model:
            continue  # a reservation holds a SKU once (atp.decide); extending moves it
        if kind == "hold":
            state = evolve_item(state, held(rid, minutes))
            model = {**model, rid: ItemHold(rid, "web", (Hold("WH1", 1),), expires)}
        elif kind == "release":
            state = evolve_item(state, ev.HoldReleased(sku="A", reservation_id=rid))
            model = {k: v for k, v in model.items() if k != rid}
        else:
            state = evolve_item(
                state, ev.HoldExtended(sku="A", reservation_id=rid, expires_at=expires)
            )
            if rid in model:
                model = {**model, rid: msgspec.structs.replace(model[rid], expires_at=expires)}
        assert state.holds.items() == list(model.items())
        assert state.at("WH1").held == sum(h.holds[0].quantity for h in model.values())
        assert state.next_expiry == min((h.expires_at for h in model.values()), default=None)
        assert decode(encode(state)) == state
