"""A projector that crashed after storing a SKU but before storing its own position must not
apply that SKU's events twice when it resumes."""

from __future__ import annotations

from pathlib import Path

import pytest

from atp import commands as c
from atp.world import fold
from projections.projector import Projector
from projections.readmodel import MemoryReadModel
from tests.integration.conftest import Backend, Clock, run
from tests.support.catalogue import setup_catalogue

pytestmark = pytest.mark.integration


def test_resume_after_a_crash_between_sku_and_position(tmp_path: Path) -> None:
    backend = Backend(None, tmp_path, Clock())
    try:
        service = backend.service()
        setup_catalogue(service)
        ledger = backend.ledger()
        model = MemoryReadModel()
        projector = Projector(ledger, model, clock=backend.clock)
        projector.catch_up()
        stored_position = model.position
        run(service, c.ReceiveStock(location="WH1", lines=(c.Line("A", 4),)))
        projector.catch_up()
        # The crash: the SKU's documents were stored, the projector's position was not.
        model.position = stored_position
        resumed = Projector(ledger, model, clock=backend.clock)
        resumed.resume()
        resumed.catch_up()
        expected = fold(("item", "A"), [e.event for e in ledger.records(("item", "A"))])
        assert resumed.items["A"][0] == expected
        assert expected.at("WH1").on_hand == 9
        ledger.close()
    finally:
        backend.close()
