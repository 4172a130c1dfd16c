"""What the projection tests share: the domain's truth about a SKU loaded from the ledger,
the read model's documents compared with it, a small catalogue, and a way to drop every
connection to a database."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
import psycopg
import redis

from adapters.ledger import Ledger, history, stream_id
from api.service.commands import CommandService
from atp import commands as c
from atp.ats import channel_availability, location_figures
from atp.decide import POLICIES
from atp.state import ItemState, Policies, state_dec_hook
from projections.readmodel import decode_item_state
from projections.views import sku_documents
from tests.integration.conftest import run
from tests.support.pg import ADMIN_URL

_item_decoder = msgspec.json.Decoder(ItemState, dec_hook=state_dec_hook)


def ledger_truth(ledger: Ledger, sku: str) -> tuple[ItemState, Policies, int]:
    """The SKU's state and the policies loaded from the ledger, and the position its
    documents must carry: its last item event, or a later policy change."""
    item, _ = ledger.load(("item", sku))
    policies, _ = ledger.load(POLICIES)
    rows = history(ledger, [("item", sku), POLICIES], 0, 1_000_000)
    own = stream_id(("item", sku))
    item_rows = [r.position for r in rows if r.originator_id == own]
    assert item_rows, f"SKU {sku} has no item events"
    position = max(r.position for r in rows if r.position >= item_rows[0])
    return item, policies, position


def redis_documents(r: redis.Redis, prefix: str, sku: str) -> tuple[dict[str, bytes], bytes | None]:
    ats = {k.decode(): v for k, v in r.hgetall(f"{prefix}:{{{sku}}}:ats").items()}
    return ats, r.get(f"{prefix}:{{{sku}}}:item")


def assert_matches_domain(
    r: redis.Redis, prefix: str, ledger: Ledger, skus: list[str], now: datetime
) -> None:
    """Every key of the SKUs equals the domain's documents, byte for byte, and the figures
    equal the ATS function's, per channel and per location."""
    for sku in skus:
        item, policies, position = ledger_truth(ledger, sku)
        expected = sku_documents(item, policies, now, position)
        ats, item_doc = redis_documents(r, prefix, sku)
        assert ats.pop("_position") == str(position).encode(), sku
        assert ats == expected.availability, sku
        assert item_doc == expected.item, sku
        raw = r.get(f"{prefix}:{{{sku}}}:state")
        assert raw is not None, sku
        state = decode_item_state(raw, r.hgetall(f"{prefix}:{{{sku}}}:holds"))
        assert state == item, sku
        assert state.holds.items() == item.holds.items(), sku  # in the order they were taken
        assert sku.encode() in r.smembers(f"{prefix}:skus")
        # The same figures straight from the ATS function the reservation check uses.
        view = msgspec.json.decode(item_doc)
        for code, channel in policies.channels.items():
            a = channel_availability(item, policies, channel, now)
            doc = msgspec.json.decode(ats[code])
            assert (doc["available"], doc["status"], doc["position"]) == (
                a.available,
                a.status,
                position,
            ), (sku, code)
            (published,) = [ch for ch in view["channels"] if ch["channel"] == code]
            assert (published["available"], published["status"]) == (a.available, a.status)
            assert published["derivation"]["pool"] == a.pool
        for loc in view["locations"]:
            f = location_figures(item, policies, loc["location"], now)
            for name in ("on_hand", "allocated", "held", "damaged", "in_transit", "incoming"):
                assert loc[name] == getattr(f, name), (sku, loc["location"], name)
            assert (loc["safety_stock"], loc["sellable"]) == (f.safety_stock, f.sellable)


def meta_position(r: redis.Redis, prefix: str) -> int:
    return int(r.hget(f"{prefix}:meta", "position") or 0)


def figures(r: redis.Redis, prefix: str, sku: str) -> dict[str, Any]:
    """The published item document, indexed for hand-written expectations."""
    raw = r.get(f"{prefix}:{{{sku}}}:item")
    assert raw is not None, sku
    view = msgspec.json.decode(raw)
    out: dict[str, Any] = {}
    for loc in view["locations"]:
        for name, value in loc.items():
            out[f"{loc['location']}.{name}"] = value
    for ch in view["channels"]:
        out[ch["channel"]] = ch["available"]
        out[f"{ch['channel']}.status"] = ch["status"]
    return out


def define_catalogue(service: CommandService) -> None:
    for command in (
        c.DefineLocation(code="WH1", name="Main", kind="warehouse"),
        c.DefineLocation(code="ST1", name="Store", kind="store"),
        c.DefineChannel(code="web", locations=("WH1", "ST1")),
        c.DefineChannel(code="pos", locations=("ST1",), buffer=1, share_percent=50),
        c.DefineChannel(code="bo", locations=("WH1",), backorder_limit=10),
    ):
        run(service, command)


def terminate_backends(database_url: str) -> int:
    name = database_url.rsplit("/", 1)[1]
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        ).fetchall()
    return len(rows)
