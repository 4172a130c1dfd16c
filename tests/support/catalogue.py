"""A small catalogue (locations, channels, stock) set up through the command service."""

from __future__ import annotations

from atp import commands as c
from tests.integration.conftest import run


def setup_catalogue(service: object) -> None:
    for command in (
        c.DefineLocation(code="WH1", name="Main", kind="warehouse"),
        c.DefineLocation(code="ST1", name="Store", kind="store"),
        c.DefineChannel(code="web", locations=("WH1", "ST1")),
        c.ReceiveStock(location="WH1", lines=(c.Line("A", 5), c.Line("B", 2))),
        c.ReceiveStock(location="ST1", lines=(c.Line("A", 3),)),
    ):
        run(service, command)  # type: ignore[arg-type]
