"""Events and snapshots written by an earlier atp load with today's code.

The fixture (`tests/support/fixtures/ledger_v1.sql`, made by `make_ledger_fixture.py` with
the code of commit 2d5e318, before the domain was split into packages) is a SQLite ledger
holding every event type and every service record, with a snapshot of each domain stream
and events after some of them. Stored names (topics `module:qualname`) are a contract:
moving a stored class without keeping its old topic resolvable fails here.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import msgspec
import pytest
from eventsourcing.utils import get_topic

from adapters import records
from adapters.ledger import Ledger, decode_payload, ledger_env
from atp import events as ev
from atp.ats import channel_availability
from atp.state import ItemState, Policies, state_enc_hook
from atp.streams import Stream
from atp.world import fold

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).parents[1] / "support" / "fixtures"
EXPECTED = json.loads((FIXTURES / "ledger_v1.json").read_text())


@pytest.fixture
def old_ledger(tmp_path: Path) -> Ledger:
    conn = sqlite3.connect(tmp_path / "ledger.sqlite")
    conn.executescript((FIXTURES / "ledger_v1.sql").read_text())
    conn.close()
    return Ledger(env=ledger_env(None, str(tmp_path), create_table=False))


def _stream(name: str) -> Stream:
    kind, key = name.split(":", 1)
    return cast(Stream, (kind, key))


def _encoded(state: Any) -> Any:
    return json.loads(msgspec.json.encode(state, enc_hook=state_enc_hook))


def test_every_stored_event_and_record_decodes_to_the_class_its_topic_names(
    old_ledger: Ledger, tmp_path: Path
) -> None:
    """Every stored row decodes, to a class whose topic today is the one it was stored
    under; and the fixture holds every event type and every record type there is."""
    rows = sqlite3.connect(tmp_path / "ledger.sqlite").execute(
        "SELECT topic, state FROM stored_events"
    )
    seen = set()
    for topic, state in rows:
        payload, _, _ = decode_payload(topic, bytes(state))
        assert get_topic(type(payload)) == topic
        seen.add(topic)
    assert {get_topic(t) for t in ev.ALL_EVENTS} <= seen
    stored_records = {get_topic(t) for t in records.Record.__subclasses__()}
    assert stored_records <= seen


def test_a_week_of_trading_written_before_the_split_folds_to_the_same_figures(
    old_ledger: Ledger,
) -> None:
    """Story: a shop traded for a week (receipts, a count, damaged stock, reservations
    extended, released, expired and committed, orders shipped from another location,
    returned, cancelled, edited after payment, a backorder filled by a purchase order,
    transfers lost and cancelled) and then upgraded atp.

    Invariant: after the upgrade every stream loads (from its snapshot plus the events
    after it, and from its events alone) to the state the old code had, at the same
    version, and every channel shows the same available-to-sell and status."""
    for name, want in EXPECTED["states"].items():
        stream = _stream(name)
        state, version = old_ledger.load(stream)
        assert (version, _encoded(state)) == (want["version"], want["state"]), name
        events: list[ev.Event] = []
        for stored in old_ledger.records(stream):
            assert isinstance(stored.event, ev.Event)
            events.append(stored.event)
        replayed = fold(stream, events)
        assert _encoded(replayed) == want["state"], name

    policies, _ = old_ledger.load(("policies", "global"))
    assert isinstance(policies, Policies)
    at = datetime.fromisoformat(EXPECTED["at"])
    figures = {}
    for key in EXPECTED["figures"]:
        channel, sku = key.split(":", 1)
        item, _ = old_ledger.load(("item", sku))
        assert isinstance(item, ItemState)
        a = channel_availability(item, policies, policies.channels[channel], at)
        figures[key] = {"available": a.available, "status": a.status}
    assert figures == EXPECTED["figures"]
