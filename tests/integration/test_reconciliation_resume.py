"""A reconciliation interrupted half-way is finished by its retry, on SQLite and on
PostgreSQL (issue 13 §3: applying the same reconciliation twice changes nothing)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from adapters.ledger_sql import reader_for
from api.service.reconciliation import (
    KeyReusedError,
    Reconciliations,
    Request,
    SnapshotLine,
    reconciliation_id,
)
from atp import commands as cmd
from tests.integration.conftest import Backend, run

pytestmark = pytest.mark.integration


class Crash(Exception):
    """The process died while reading the file."""


async def test_a_retry_after_a_crash_half_way_applies_each_part_once(backend: Backend) -> None:
    """Story: the nightly job applies a two-part snapshot and the API process dies after the
    first part; cron runs it again with the same key. Invariant: the first part's drift is
    applied once (its report lines were recorded in the same transaction), the second part
    is applied by the retry, the report then covers both, a third run only replays it, and
    the key with another file is refused."""
    service = backend.service()
    run(service, cmd.DefineLocation(code="WH", name="WH", kind="warehouse"))
    run(service, cmd.DefineChannel(code="web", locations=("WH",)))
    lines = (cmd.Line("A", 10), cmd.Line("B", 10))
    run(service, cmd.ReceiveStock(location="WH", lines=lines, reference=None))
    backend.clock.advance(60)
    request = Request(location="WH", as_of=backend.clock.now - timedelta(seconds=1), apply=True)
    backend.clock.advance(60)
    reader = reader_for(service.ledger, backend.database_url)
    recon = Reconciliations(service, reader, backend.clock)
    rid = reconciliation_id("token", "nightly-1")
    parts: list[list[SnapshotLine]] = [[("A", 12)], [("B", 7)]]

    def crashing_after(n: int):  # type: ignore[no-untyped-def]
        async def snapshot() -> AsyncIterator[list[SnapshotLine]]:
            for i, part in enumerate(parts):
                if i == n:
                    raise Crash
                yield part

        return snapshot

    try:
        with pytest.raises(Crash):
            await recon.run(rid, request, "h1", crashing_after(1), {"A", "B"})
        half = await recon.report(rid)
        assert half is not None and half.status == "in_progress"
        assert [line.sku for line in half.lines] == ["A"]
        report, replayed, _ = await recon.run(rid, request, "h1", crashing_after(9), {"A", "B"})
        assert (replayed, report.status) == (False, "finished")
        assert {line.sku: line.drift for line in report.lines} == {"A": 2, "B": -3}
        items = service.ledger.load(("item", "A"))[0], service.ledger.load(("item", "B"))[0]
        assert [i.at("WH").on_hand for i in items] == [12, 7]
        again, replayed, _ = await recon.run(rid, request, "h1", crashing_after(9), {"A", "B"})
        assert replayed and again == report
        with pytest.raises(KeyReusedError):
            await recon.run(rid, request, "h2", crashing_after(9), {"A", "B"})
        assert service.ledger.load(("item", "A"))[0].at("WH").on_hand == 12
    finally:
        await reader.close()
