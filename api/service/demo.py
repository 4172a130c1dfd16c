"""The demo catalogue: 3 locations, 3 channels, 50 SKUs with stock, supply and policies.

Loading it twice leaves the same figures: policies are PUT-like and stock is set by cycle counts.
"""

from __future__ import annotations

import itertools
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

from api.service.commands import (
    Applied,
    CommandService,
    Job,
    Rejected,
    Result,
    command_decider,
    decider,
)
from atp import commands as cmd

LOCATIONS = [
    cmd.DefineLocation(code="WH1", name="Central distribution centre", kind="warehouse"),
    cmd.DefineLocation(code="WH2", name="East fulfilment centre", kind="warehouse"),
    cmd.DefineLocation(code="ST1", name="Flagship store", kind="store"),
]
CHANNELS = [
    cmd.DefineChannel(
        code="web",
        locations=("WH1", "WH2", "ST1"),
        buffer=2,
        backorder_limit=10,
        low_stock_threshold=5,
    ),
    cmd.DefineChannel(
        code="amazon",
        locations=("WH1", "WH2"),
        buffer=1,
        share_percent=60,
        low_stock_threshold=3,
    ),
    cmd.DefineChannel(code="pos", locations=("ST1",), low_stock_threshold=2),
]
PRODUCTS = {"TEE": ["BLK", "WHT", "NVY"], "HOODIE": ["GRY", "BLK"], "CAP": ["RED"]}
SIZES = ["S", "M", "L", "XL"]


def demo_skus() -> list[str]:
    """The demo catalogue's SKU codes."""
    skus = [
        f"{product}-{colour}-{size}"
        for product, colours in PRODUCTS.items()
        for colour, size in itertools.product(colours, SIZES)
    ]
    skus += [f"MUG-{i:02d}" for i in range(1, 51 - len(skus))]
    return skus[:50]


def _quantity(sku: str, location: str, top: int) -> int:
    return zlib.crc32(f"{sku}@{location}".encode()) % top


def demo_commands() -> list[cmd.Command]:
    """The domain commands that set up the demo: locations, channels, safety stock, counts."""
    commands: list[cmd.Command] = [*LOCATIONS, *CHANNELS]
    commands.append(cmd.SetSafetyStock(sku=None, location="ST1", quantity=1))
    skus = demo_skus()
    commands.append(cmd.SetSafetyStock(sku=skus[0], location=None, quantity=3))
    for location, top in (("WH1", 120), ("WH2", 60), ("ST1", 12)):
        lines = tuple(cmd.CountLine(sku, _quantity(sku, location, top)) for sku in skus)
        commands.append(cmd.CountStock(location=location, lines=lines))
    return commands


def load_demo(service: CommandService) -> int:
    """Submit the demo catalogue; returns how many commands changed something."""
    changed = 0
    for command in demo_commands():
        result = _applied(service.run_sync(Job(command_decider(command), "demo")))
        changed += result.position is not None
    eta = datetime.now(UTC) + timedelta(days=7)
    incoming = cmd.ExpectIncoming(
        location="WH2",
        lines=tuple(cmd.Line(sku, 24) for sku in demo_skus()[:5]),
        eta=eta,
        reference="PO-DEMO-1",
    )

    def only_once(world, now):  # type: ignore[no-untyped-def]
        if any(world.item(line.sku).at("WH2").incoming for line in incoming.lines):
            return []
        return command_decider(incoming)(world, now)

    result = _applied(service.run_sync(Job(decider(only_once), "demo")))
    return changed + (result.position is not None)


def _applied(result: Result) -> Applied[Any]:
    """The result of a demo command; a rejected one stops the demo with its domain error."""
    if isinstance(result, Rejected):
        raise result.error
    assert isinstance(result, Applied)  # no idempotency key: never a replay
    return result
