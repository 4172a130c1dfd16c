"""Reconciliation with ERP/WMS snapshots over HTTP, on the embedded SQLite ledger and on
PostgreSQL (issue 13). Each story is one a retailer lived; its docstring states the invariant.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.route_helpers import Env, assert_problem, created, history, loc, make_env
from tests.support.physical import deliver, item_at_head, register_store
from tests.support.server import ADMIN_TOKEN, Server, running_service, service_env

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("recon")
    env = service_env(None, str(Path(data)), ATP_DRIFT_ALERT_UNITS="5")
    with running_service(env, log=data / "service.log") as srv:
        yield srv


@pytest.fixture(params=["sqlite", "postgres"])
def env(request: pytest.FixtureRequest, unique: str) -> Iterator[Env]:
    """Warehouses WH and ST, channel `web` sourcing WH then ST, on either backend."""
    srv: Server = request.getfixturevalue("embedded" if request.param == "sqlite" else "server")
    with srv.client() as c:
        yield make_env(c, unique)


def moment() -> datetime:
    """A time strictly between the writes before and after it (the server shares our clock)."""
    time.sleep(0.02)
    at = datetime.now(UTC)
    time.sleep(0.02)
    return at


def reconcile(env: Env, as_of: datetime, key: str | None = None, **body: Any) -> httpx.Response:
    payload = {"location": env.wh, "as_of": as_of.isoformat(), "source": "erp", **body}
    return env.client.post(
        "/v1/reconciliations", json=payload, headers={"Idempotency-Key": key or env.key()}
    )


def on_hand(env: Env, name: str = "A") -> int:
    return int(loc(item_at_head(env.client, env.sku(name)), env.wh)["on_hand"])


def test_movements_while_the_erp_exports_are_not_drift(env: Env) -> None:
    """The ERP exports at 02:00 (10 on hand), the warehouse receives 3 and adjusts -1 until
    02:10, the file arrives at 02:15: compared as of 02:00 there is no drift, and the two
    later movements show as `movements_after_as_of`, never as drift."""
    env.receive(env.wh, A=10)
    exported = moment()
    env.receive(env.wh, A=3)
    adjust = {"location": env.wh, "sku": env.sku(), "delta": -1, "reason": "broken"}
    created(env.client.post("/v1/adjustments", json=adjust))
    report = created(reconcile(env, exported, lines=[{"sku": env.sku(), "on_hand": 10}]))
    assert (report["skus_compared"], report["skus_drifted"], report["units_drifted"]) == (1, 0, 0)
    assert report["lines"] == [] and report["status"] == "finished"
    before = created(
        env.client.get(f"/v1/items/{env.sku()}", params={"as_of": exported.isoformat()}), 200
    )
    assert loc(before, env.wh)["on_hand"] == 10
    assert on_hand(env) == 12


def test_a_missed_receipt_is_found_applied_and_fills_the_backorder_first(env: Env) -> None:
    """A receipt of 5 never reached atp before the 02:00 export; an order of 2 sold meanwhile
    is owed (shortfall). Applied, the drift of +5 moves today's on-hand by 5 (movements after
    the export survive), the owed order is filled first, and a retry of the same cron job
    (same key) changes nothing and answers the same report."""
    store = f"{env.prefix}-shop"
    created(env.client.put(f"/v1/channels/{env.web}", json={"locations": [env.wh]}), 200)
    register_store(env.client, store, env.web)
    env.receive(env.wh, A=1)
    deliver(env.client, store, 7, **{env.sku(): 3})
    assert item_at_head(env.client, env.sku())["shortfall"] == 2
    exported = moment()
    env.receive(env.wh, A=2)  # after the export: not drift
    key = env.key()
    lines = [{"sku": env.sku(), "on_hand": 6}]
    first = reconcile(env, exported, key=key, apply=True, lines=lines)
    report = created(first)
    (line,) = report["lines"]
    assert (line["ledger_on_hand"], line["snapshot_on_hand"], line["drift"]) == (1, 6, 5)
    assert (line["movements_after_as_of"], line["applied"]) == (2, True)
    item = item_at_head(env.client, env.sku())
    wh = loc(item, env.wh)
    assert (wh["on_hand"], wh["allocated"]) == (8, 3)
    assert item["shortfall"] == 0
    again = reconcile(env, exported, key=key, apply=True, lines=lines)
    assert created(again) == report and again.headers["idempotent-replayed"] == "true"
    other = created(reconcile(env, exported, apply=True, lines=lines))
    assert other["skus_drifted"] == 0  # the correction counts as of the export: not twice
    assert item_at_head(env.client, env.sku()) == item
    cid = first.headers["x-correlation-id"]
    everything = history(env.client, env.sku())  # every page: policy events share it
    fixed = [e for e in everything if e["type"] == "StockReconciled"]
    assert [(e["drift"], e["correlation_id"]) for e in fixed] == [(5, cid)]
    explained = created(env.client.get(line["history"]), 200)
    assert [e["type"] for e in explained["entries"]][-1] == "ShortfallRecorded"
    page = created(env.client.get(f"/v1/reconciliations/{report['reconciliation_id']}"), 200)
    assert page["lines"] == report["lines"]
    listed = created(env.client.get(f"/v1/reconciliations?location={env.wh}&limit=5"), 200)
    ids = [r["reconciliation_id"] for r in listed["reconciliations"]]
    assert ids == [other["reconciliation_id"], report["reconciliation_id"]]


def test_a_count_during_a_flash_sale_records_the_over_promise_and_never_oversells(
    env: Env,
) -> None:
    """10 on hand, 6 sold in a flash sale; the WMS snapshot says 4. Applied: on-hand 4 with
    6 allocated: 2 over-promised (recorded, the order named), nothing left to sell."""
    env.receive(env.wh, A=10)
    created(env.client.put(f"/v1/channels/{env.web}", json={"locations": [env.wh]}), 200)
    created(env.order(f"{env.prefix}-o1", A=6))
    counted = moment()
    report = created(reconcile(env, counted, apply=True, lines=[{"sku": env.sku(), "on_hand": 4}]))
    assert report["units_drifted"] == 6
    wh = loc(item_at_head(env.client, env.sku()), env.wh)
    assert (wh["on_hand"], wh["allocated"], wh["over_promised"], wh["sellable"]) == (4, 6, 2, 0)
    sold = env.client.get(f"/v1/availability/{env.web}/{env.sku()}")
    assert created(sold, 200)["available"] == 0
    metrics = env.client.get("/metrics").text
    assert f'atp_reconciliation_units_drifted{{location="{env.wh}"}} 6.0' in metrics
    assert f'atp_reconciliation_skus_drifted{{location="{env.wh}"}} 1.0' in metrics


def test_drift_above_the_alert_threshold_is_logged(embedded: Server, unique: str) -> None:
    """With ATP_DRIFT_ALERT_UNITS=5, a reconciliation finding 6 units of drift logs a
    warning naming the location; one finding 1 does not."""
    with embedded.client() as c:
        env = make_env(c, unique)
        env.receive(env.wh, A=10, B=10)
        at = moment()
        created(reconcile(env, at, lines=[{"sku": env.sku("A"), "on_hand": 9}]))
        created(reconcile(env, at, lines=[{"sku": env.sku("B"), "on_hand": 4}]))
    log = (Path(embedded.env["ATP_DATA_DIR"]) / "service.log").read_text()
    alerts = [line for line in log.splitlines() if "units of drift" in line and env.wh in line]
    assert len(alerts) == 1 and "found 6 units of drift" in alerts[0]


def test_complete_csv_report_with_tolerance(env: Env) -> None:
    """A complete CSV snapshot omits SKU B (atp has 4): B counts as 0 there; A drifts by 1,
    within a tolerance of 1, so only B is applied; the CSV report lists both."""
    env.receive(env.wh, A=5, B=4)
    at = moment()
    body = f"sku,on_hand\n{env.sku('A')}, 6\n"
    params = {
        "location": env.wh,
        "as_of": at.isoformat(),
        "complete": "true",
        "apply": "true",
        "tolerance": "1",
    }
    r = env.client.post(
        "/v1/reconciliations",
        params=params,
        content=body,
        headers={"content-type": "text/csv", "Idempotency-Key": env.key()},
    )
    report = created(r)
    lines = {line["sku"]: line for line in report["lines"]}
    assert lines[env.sku("A")]["applied"] is False and lines[env.sku("B")]["applied"] is True
    assert (on_hand(env, "A"), on_hand(env, "B")) == (5, 0)
    rid = report["reconciliation_id"]
    text = env.client.get(f"/v1/reconciliations/{rid}", headers={"accept": "text/csv"}).text
    assert text.splitlines()[0].startswith("sku,ledger_on_hand,snapshot_on_hand,drift")
    assert len(text.splitlines()) == 3
    first = created(env.client.get(f"/v1/reconciliations/{rid}", params={"limit": 1}), 200)
    assert (len(first["lines"]), first["next_after"]) == (1, 1)
    rest = created(env.client.get(f"/v1/reconciliations/{rid}", params={"after": 1}), 200)
    assert rest["next_after"] is None
    assert first["lines"] + rest["lines"] == report["lines"]


def test_bad_input_changes_nothing(env: Env) -> None:
    """Unknown location 422, a bad CSV line 400 naming it, a SKU listed twice 422, an as_of
    in the future 422, no key 400: nothing is recorded, no figure moves."""
    env.receive(env.wh, A=5)
    now = moment()
    before = item_at_head(env.client, env.sku())
    line = [{"sku": env.sku(), "on_hand": 1}]
    r = env.client.post(
        "/v1/reconciliations",
        json={
            "location": f"{env.prefix}-XX",
            "as_of": now.isoformat(),
            "apply": True,
            "lines": line,
        },
    )
    assert_problem(r, 422, field="location")
    assert_problem(reconcile(env, now, apply=True, lines=line * 2), 422, field="lines[1].sku")
    future = now + timedelta(hours=1)
    assert_problem(reconcile(env, future, apply=True, lines=line), 422, field="as_of")
    assert_problem(reconcile(env, now, apply=True, lines=[{"sku": env.sku(), "on_hand": "1"}]), 422)
    bad = f"sku,on_hand\n{env.sku()},1\n{env.sku('B')},x\n"
    r = env.client.post(
        "/v1/reconciliations",
        params={"location": env.wh, "as_of": now.isoformat(), "apply": "true"},
        content=bad,
        headers={"content-type": "text/csv", "Idempotency-Key": env.key()},
    )
    assert "line 3" in assert_problem(r, 400)["detail"]
    dup = f"sku,on_hand\n{env.sku()},1\n{env.sku()},2\n"
    r = env.client.post(
        "/v1/reconciliations",
        params={"location": env.wh, "as_of": now.isoformat(), "apply": "true"},
        content=dup,
        headers={"content-type": "text/csv", "Idempotency-Key": env.key()},
    )
    assert_problem(r, 422, field="line 3")
    r = env.client.get(f"/v1/items/{env.sku()}", params={"as_of": future.isoformat()})
    assert_problem(r, 422, field="as_of")
    # A finance script that passes Unix seconds (as its other systems take them) is told
    # so, not answered with the figures of 1970 (found by the schema fuzzer: as_of=0).
    for bad in ("0", "1700000000", "1.5", "2026-11-27", "yesterday"):
        r = env.client.get(f"/v1/items/{env.sku()}", params={"as_of": bad})
        assert_problem(r, 422, field="as_of")
    assert_problem(env.client.get("/v1/reconciliations/nope"), 404)
    body = {"location": env.wh, "as_of": now.isoformat(), "apply": True, "lines": line}
    assert_problem(env.post_without_key("/v1/reconciliations", json=body), 400)
    key = env.key()
    created(reconcile(env, now, key=key, lines=[{"sku": env.sku(), "on_hand": 5}]))
    reused = reconcile(env, now, key=key, apply=True, lines=line)
    assert_problem(reused, 422, "idempotency-key-reused")
    assert item_at_head(env.client, env.sku()) == before
    listed = created(env.client.get(f"/v1/reconciliations?location={env.wh}"), 200)
    assert [r["skus_drifted"] for r in listed["reconciliations"]] == [0]


def test_as_of_reads_policies_as_they_were(env: Env) -> None:
    """A channel's buffer set after a time does not change that time's figures."""
    env.receive(env.wh, A=10)
    created(env.client.put(f"/v1/channels/{env.web}", json={"locations": [env.wh]}), 200)
    before = moment()
    body = {"locations": [env.wh], "buffer": 4}
    created(env.client.put(f"/v1/channels/{env.web}", json=body), 200)
    then = created(
        env.client.get(f"/v1/items/{env.sku()}", params={"as_of": before.isoformat()}), 200
    )
    web = next(c for c in then["channels"] if c["channel"] == env.web)
    assert web["available"] == 10
    now = item_at_head(env.client, env.sku())
    assert next(c for c in now["channels"] if c["channel"] == env.web)["available"] == 6


def test_the_cli_streams_a_generated_file_and_exits_3_on_drift(
    embedded: Server, unique: str, tmp_path: Path
) -> None:
    """A nightly cron job: `atp reconcile --apply` on a 2,500-line file (three parts) where
    7 SKUs drifted exits 3 and prints them; the retried job (same file, same derived key)
    applies nothing again; a clean file exits 0."""
    with embedded.client() as c:
        env = make_env(c, unique)
        skus = [f"{unique}-{i}" for i in range(2500)]
        for start in range(0, len(skus), 100):
            lines = [{"sku": sku, "quantity": 5} for sku in skus[start : start + 100]]
            created(c.post("/v1/receipts", json={"location": env.wh, "lines": lines}))
        at = moment()
        drifted = set(skus[::400])
        rows = [f"{sku},{7 if sku in drifted else 5}" for sku in skus]
        path = tmp_path / "snapshot.csv"
        path.write_text("sku,on_hand\n" + "\n".join(rows) + "\n")
        cli_env = {**embedded.env, "ATP_URL": embedded.url, "ATP_TOKEN": ADMIN_TOKEN}
        args = ["reconcile", "--location", env.wh, "--as-of", at.isoformat(), "--apply", str(path)]
        first = cli(args, cli_env)
        assert first.returncode == 3, first.stderr
        assert "2500 SKUs compared, 7 drifted (14 units)" in first.stdout
        again = cli(args, cli_env)
        assert again.returncode == 3 and again.stdout == first.stdout
        embedded.catch_up()
        assert sum(on_hand(env, sku.removeprefix(f"{unique}-")) for sku in drifted) == 49
        clean = tmp_path / "clean.csv"
        clean.write_text("sku,on_hand\n" + "\n".join(f"{sku},5" for sku in skus[1:10]) + "\n")
        ok = cli(
            ["reconcile", "--location", env.wh, "--as-of", at.isoformat(), str(clean)], cli_env
        )
        assert ok.returncode == 0, ok.stderr


def cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_checkouts_racing_an_applied_snapshot_never_oversell(env: Env) -> None:
    """20 on hand; 30 shoppers each try to hold 1 unit while a snapshot of 12 (taken before
    the sale) is applied. Invariant: whatever the interleaving, on-hand ends at 12, every
    accepted hold is counted, what holds claim beyond on-hand is exactly the recorded
    over-promise, and nothing more is for sale than on-hand minus the holds."""
    env.receive(env.wh, A=20)
    created(env.client.put(f"/v1/channels/{env.web}", json={"locations": [env.wh]}), 200)
    before_sale = moment()
    base, headers = str(env.client.base_url), dict(env.client.headers)

    def shopper(i: int) -> int:
        with httpx.Client(base_url=base, headers=headers, timeout=60) as c:
            body = {"channel": env.web, "lines": [{"sku": env.sku(), "quantity": 1}]}
            r = c.post(
                "/v1/reservations", json=body, headers={"Idempotency-Key": f"{env.prefix}-{i}"}
            )
            assert r.status_code in (201, 409), r.text
            return int(r.status_code == 201)

    with ThreadPoolExecutor(8) as pool:
        held = pool.map(shopper, range(30))
        applied = reconcile(env, before_sale, apply=True, lines=[{"sku": env.sku(), "on_hand": 12}])
        accepted = sum(held)
    assert created(applied)["units_drifted"] == 8
    item = created(
        env.client.get(f"/v1/items/{env.sku()}", params={"min_position": head(env)}), 200
    )
    wh = loc(item, env.wh)
    assert wh["on_hand"] == 12 and wh["held"] == accepted <= 20
    assert wh.get("over_promised", 0) == max(0, accepted - 12)
    web = next(c for c in item["channels"] if c["channel"] == env.web)
    assert web["available"] == max(0, 12 - accepted)


def head(env: Env) -> int:
    return int(created(env.client.get("/ready"), 200)["checks"]["ledger"]["head"])


def test_a_cron_job_fired_six_times_at_once_with_one_key_answers_one_run_and_five_replays(
    env: Env,
) -> None:
    """Story: a cron host fires the same reconciliation job six times at once (a retry loop
    with a fixed Idempotency-Key). The drift is applied once; one request did the work and
    the five others wait for it and answer its report as replays.

    Invariant: of concurrent requests with one key, exactly one answers without
    `Idempotent-Replayed: true`, every answer carries the same reconciliation and an
    `ATP-Position` that a read with `min_position` can wait for to see the correction, and
    the SKU's on-hand moves once."""
    env.receive(env.wh, A=11)
    as_of = moment()
    base, headers = str(env.client.base_url), dict(env.client.headers)
    key = env.key()

    def cron(_: int) -> httpx.Response:
        with httpx.Client(base_url=base, headers=headers, timeout=60) as c:
            body = {
                "location": env.wh,
                "as_of": as_of.isoformat(),
                "apply": True,
                "lines": [{"sku": env.sku(), "on_hand": 300}],
            }
            return c.post("/v1/reconciliations", json=body, headers={"Idempotency-Key": key})

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(cron, range(6)))
    reports = [created(r) for r in answers]
    replayed = [r.headers.get("Idempotent-Replayed") == "true" for r in answers]
    assert replayed.count(False) == 1, [dict(r.headers) for r in answers]
    assert len({r.headers["Location"] for r in answers}) == 1
    assert all(r["skus_applied"] == 1 and r["units_drifted"] == 289 for r in reports)
    for position in {int(r.headers["ATP-Position"]) for r in answers}:
        item = created(
            env.client.get(f"/v1/items/{env.sku()}", params={"min_position": position}), 200
        )
        assert loc(item, env.wh)["on_hand"] == 300


def test_the_same_snapshot_sent_six_times_at_once_applies_its_drift_once(env: Env) -> None:
    """Two cron hosts and a retried job under new keys send the same snapshot (500 units,
    atp has 11) at the same moment, six times. Invariant: the drift is applied exactly once
    (one StockReconciled of +489, on-hand 500), whatever the interleaving and however many
    worker processes answer; the other five reports apply nothing."""
    env.receive(env.wh, A=11)
    exported = moment()
    base, headers = str(env.client.base_url), dict(env.client.headers)
    body = {
        "location": env.wh,
        "as_of": exported.isoformat(),
        "apply": True,
        "lines": [{"sku": env.sku(), "on_hand": 500}],
    }

    def cron(i: int) -> dict[str, Any]:
        with httpx.Client(base_url=base, headers=headers, timeout=120) as c:
            key = {"Idempotency-Key": f"{env.prefix}-cron-{i}"}
            return created(c.post("/v1/reconciliations", json=body, headers=key))

    with ThreadPoolExecutor(6) as pool:
        reports = list(pool.map(cron, range(6)))
    assert sorted(r["skus_applied"] for r in reports) == [0, 0, 0, 0, 0, 1]
    assert on_hand(env) == 500
    everything = history(env.client, env.sku())
    assert [e["drift"] for e in everything if e["type"] == "StockReconciled"] == [489]


def test_an_older_export_processed_late_never_applies_the_drift_again(env: Env) -> None:
    """10 received, the ERP exports at T0 and again at T1 (15 units both times: 5 missed),
    then 2 more arrive. The T1 export is applied (on-hand 12 -> 17); the T0 export, delayed,
    arrives afterwards under its own key, and so does a stray file dated 1970. Invariant:
    a snapshot older than a correction already applied at the location never applies its
    drift again: its line is reported `superseded`, not applied, not counted as drift (the
    CLI's exit status), and on-hand stays 17."""
    env.receive(env.wh, A=10)
    t0 = moment()
    t1 = moment()
    env.receive(env.wh, A=2)
    lines = [{"sku": env.sku(), "on_hand": 15}]
    newer = created(reconcile(env, t1, apply=True, lines=lines))
    assert (newer["skus_applied"], newer["lines"][0]["drift"]) == (1, 5)
    assert on_hand(env) == 17
    for as_of, snapshot in ((t0, 15), (datetime(1970, 1, 1, tzinfo=UTC), 3)):
        late = created(reconcile(env, as_of, apply=True, lines=[{**lines[0], "on_hand": snapshot}]))
        (line,) = late["lines"]
        assert (line["superseded"], line["applied"], line["applied_drift"]) == (True, False, 0)
        assert (late["skus_drifted"], late["units_drifted"]) == (0, 0)
        assert (late["skus_beyond_tolerance"], late["skus_superseded"]) == (0, 1)
        assert on_hand(env) == 17


def test_a_correction_stopped_at_zero_reports_what_it_moved(env: Env) -> None:
    """10 received, the WMS counts at T, then 8 are written off (2 on hand); the snapshot at
    T says 0. Invariant: on-hand never goes below 0, the report says what the correction
    really moved (-2), beside the drift found (-10), and the same count compared again finds
    no drift (so a nightly re-run does not exit 3 forever)."""
    env.receive(env.wh, A=10)
    counted = moment()
    adjust = {"location": env.wh, "sku": env.sku(), "delta": -8, "reason": "broken"}
    created(env.client.post("/v1/adjustments", json=adjust))
    report = created(reconcile(env, counted, apply=True, lines=[{"sku": env.sku(), "on_hand": 0}]))
    (line,) = report["lines"]
    assert (line["drift"], line["applied"], line["applied_drift"]) == (-10, True, -2)
    assert on_hand(env) == 0
    again = created(reconcile(env, counted, lines=[{"sku": env.sku(), "on_hand": 0}]))
    assert again["skus_drifted"] == 0  # the count's figure as of then is not invented


def test_a_drifted_lines_history_lists_only_the_reconciled_locations_movements(
    env: Env,
) -> None:
    """The store and the warehouse each receive the SKU; the warehouse's snapshot finds a
    drift. Invariant: the line's history lists the movements at the warehouse only (the
    store's receipt cannot explain the warehouse's drift), and a SKU that is not a line of
    the report has no history there (404)."""
    env.receive(env.wh, A=4)
    env.receive(env.st, A=9)
    at = moment()
    report = created(reconcile(env, at, lines=[{"sku": env.sku(), "on_hand": 6}]))
    (line,) = report["lines"]
    entries = created(env.client.get(line["history"]), 200)["entries"]
    assert [(e["type"], e["location"], e["quantity"]) for e in entries] == [
        ("StockReceived", env.wh, 4)
    ]
    rid = report["reconciliation_id"]
    missing = env.client.get(f"/v1/reconciliations/{rid}/lines/{env.sku('B')}/history")
    assert_problem(missing, 404)


def test_the_cli_re_runs_with_a_wider_tolerance_and_fails_cleanly(
    embedded: Server, unique: str, tmp_path: Path
) -> None:
    """After a noisy night (drift of 2 found, exit 3), ops re-run the same file with
    `--tolerance 5`, then `--complete`, then `--source wms`. Invariant: each re-run with
    another option is a new reconciliation (not an idempotency error), a plain retry is
    still a replay; a missing file or a directory is one line on stderr naming it and exit
    1, never a traceback, and no per-request httpx log line reaches the cron mail."""
    with embedded.client() as c:
        env = make_env(c, unique)
        env.receive(env.wh, A=5)
        at = moment()
        path = tmp_path / "snapshot.csv"
        path.write_text(f"sku,on_hand\n{env.sku()},7\n")
        cli_env = {**embedded.env, "ATP_URL": embedded.url, "ATP_TOKEN": ADMIN_TOKEN}
        base = ["reconcile", "--location", env.wh, "--as-of", at.isoformat()]
        first = cli([*base, str(path)], cli_env)
        assert first.returncode == 3, first.stderr
        assert cli([*base, str(path)], cli_env).stdout == first.stdout  # a replay
        ids = {first.stdout.split()[1]}
        for option in (["--tolerance", "5"], ["--complete"], ["--source", "wms"]):
            again = cli([*base, *option, str(path)], cli_env)
            assert again.returncode in (0, 3), again.stderr
            assert "HTTP Request" not in again.stderr
            ids.add(again.stdout.split()[1])
        assert len(ids) == 4
        wide = cli([*base, "--tolerance", "5", str(path)], cli_env)
        assert wide.returncode == 0, wide.stderr
        for missing in (tmp_path / "nope.csv", tmp_path):
            failed = cli([*base, str(missing)], cli_env)
            assert failed.returncode == 1
            assert failed.stderr.startswith(f"atp reconcile: cannot read {missing}: ")
            assert "Traceback" not in failed.stderr and len(failed.stderr.splitlines()) == 1


def test_odd_requests_get_the_answers_the_rest_of_the_api_gives(env: Env) -> None:
    """An ops script sends a CSV without `location`, repeats a parameter, misspells `apply`,
    puts a control
    character in `source`, lists without or with an unknown location, and sends an `as_of`
    at +14:00. Invariant: missing or bad fields are 422 naming the field, an unknown
    location in a list is 404, nothing is recorded, `as_of` is stored in UTC, and the CSV
    report's content type names its charset once."""
    env.receive(env.wh, A=5)
    now = moment()
    before = item_at_head(env.client, env.sku())
    csv_body = f"sku,on_hand\n{env.sku()},9\n"

    def upload(params: list[tuple[str, str]]) -> httpx.Response:
        headers = {"content-type": "text/csv", "Idempotency-Key": env.key()}
        return env.client.post(
            "/v1/reconciliations", params=params, content=csv_body, headers=headers
        )

    at = ("as_of", now.isoformat())
    assert_problem(upload([at, ("apply", "true")]), 422, field="location")
    repeated = [("location", env.wh), at, ("tolerance", "1"), ("tolerance", "2")]
    assert_problem(upload(repeated), 422, field="tolerance")
    misspelt = [("location", env.wh), at, ("aply", "true")]
    assert_problem(upload(misspelt), 422, field="aply")
    bad_source = reconcile(env, now, apply=True, source="erp\u0000", lines=[])
    assert_problem(bad_source, 422, field="source")
    assert_problem(env.client.get("/v1/reconciliations"), 422, field="location")
    unknown = env.client.get("/v1/reconciliations", params={"location": f"{env.prefix}-NOPE"})
    assert_problem(unknown, 404, field="location")
    assert item_at_head(env.client, env.sku()) == before
    far_east = now.astimezone(timezone(timedelta(hours=14)))
    report = created(reconcile(env, far_east, lines=[{"sku": env.sku(), "on_hand": 5}]))
    assert datetime.fromisoformat(report["as_of"]) == now
    assert report["as_of"].endswith(("Z", "+00:00"))
    rid = report["reconciliation_id"]
    r = env.client.get(f"/v1/reconciliations/{rid}", headers={"accept": "text/csv"})
    assert r.headers["content-type"].count("charset") == 1


def test_a_badly_exported_file_is_refused_naming_its_line(env: Env) -> None:
    """An ERP exports in Latin-1, or leaves a NUL byte or an unterminated quote, or a script
    sends the file as text/plain, in another charset, or a JSON body with query parameters.
    Invariant: each is refused naming what is wrong (the real line of the bad bytes, 415
    for the body type), and nothing is recorded."""
    env.receive(env.wh, A=5)
    now = moment()
    before = item_at_head(env.client, env.sku())
    params = {"location": env.wh, "as_of": now.isoformat(), "apply": "true"}

    def upload(body: bytes, media: str = "text/csv") -> httpx.Response:
        headers = {"content-type": media, "Idempotency-Key": env.key()}
        return env.client.post("/v1/reconciliations", params=params, content=body, headers=headers)

    sku = env.sku().encode()
    latin = upload(b"sku,on_hand\n" + sku + b",5\n" + sku + b"\xe9,3\n")
    assert assert_problem(latin, 400)["detail"] == "line 3: not UTF-8"
    assert latin.json()["line"] == 3
    nul = upload(b"sku,on_hand\n" + sku + b"\x00,3\n")
    assert assert_problem(nul, 400)["detail"] == "line 2: a NUL byte"
    quote = upload(b'sku,on_hand\n"' + sku + b",3\n")
    assert "fields, expected" not in assert_problem(quote, 400)["detail"]
    assert_problem(upload(b"sku,on_hand\n" + sku + b",3\n", "text/plain"), 415)
    assert_problem(upload(b"sku,on_hand\n" + sku + b",3\n", "text/csv; charset=latin-1"), 415)
    body = {"location": env.wh, "as_of": now.isoformat(), "apply": True, "lines": []}
    mixed = env.client.post(
        "/v1/reconciliations",
        params={"location": env.st},
        json=body,
        headers={"Idempotency-Key": env.key()},
    )
    assert_problem(mixed, 422, field="location")
    assert item_at_head(env.client, env.sku()) == before
    listed = created(env.client.get("/v1/reconciliations", params={"location": env.wh}), 200)
    assert listed["reconciliations"] == []
