"""What an operator sees of the running service: /metrics over every worker, the status of
every answer (401/403/429 included), X-Correlation-ID on each, one log line per request, JSON
logs. The service runs as `atp serve --workers 2` on the embedded ledger.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.support.server import Server, running_service, service_env

pytestmark = pytest.mark.e2e

COUNT = re.compile(
    r'^atp_http_request_duration_seconds_count\{method="(\w+)",route="([^"]+)",status="(\d+)"\} '
    r"([0-9.e+]+)$",
    re.M,
)


def counted(server: Server) -> Counter[tuple[str, str, str]]:
    """(method, route, status) -> requests counted, from one scrape of /metrics."""
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    return Counter(
        {(m, r, s): int(float(v)) for m, r, s, v in COUNT.findall(text) if r != "/metrics"}
    )


def test_a_401_storm_during_a_flash_sale_is_counted_whole_in_one_scrape(tmp_path: Path) -> None:
    """A flash sale: a storefront deployed with a stale token hammers the API (401), a feed
    token lacking a scope posts receipts (403), a rate-limited feed polls too fast (429),
    the shop reads normally (200). Invariant: every answer carries the X-Correlation-ID the
    client sent, and one scrape of /metrics, whichever worker answers it, counts exactly
    the answers given, by their real status."""
    log = tmp_path / "serve.log"
    env = service_env(None, str(tmp_path), ATP_LOG_LEVEL="info", ATP_LOG_FORMAT="json")
    with running_service(env, workers=2, log=log) as server:
        admin = {"Authorization": "Bearer test-admin-token"}
        with httpx.Client(base_url=server.url, timeout=30) as http:
            feed = http.post(
                "/v1/tokens",
                headers=admin,
                json={"name": "feed", "scopes": ["availability:read"], "rate_limit": 1},
            ).json()["token"]
            answers: Counter[tuple[str, str, str]] = Counter()
            calls = [
                ("GET", "/v1/items/TEE-BLK-S", {"Authorization": "Bearer stale"}),
                ("POST", "/v1/receipts", {"Authorization": f"Bearer {feed}"}),
                ("GET", "/v1/items/TEE-BLK-S", {"Authorization": f"Bearer {feed}"}),
                ("GET", "/v1/items/TEE-BLK-S", admin),
            ]
            for i in range(40):
                method, path, headers = calls[i % len(calls)]
                cid = f"sale-{i}"
                r = http.request(
                    method, path, headers={**headers, "X-Correlation-ID": cid}, json=None
                )
                assert r.headers["x-correlation-id"] == cid, (path, r.status_code)
                route = "/v1/items/{sku}" if path.startswith("/v1/items/") else path
                answers[(method, route, str(r.status_code))] += 1
        assert {s for _, _, s in answers} >= {"200", "401", "403", "429"}, answers
        # A worker counts a request just after its answer is sent: give the last one a moment.
        deadline = time.monotonic() + 5
        while (seen := counted(server)) and time.monotonic() < deadline:
            if {k: v for k, v in seen.items() if k in answers} == answers:
                break
            time.sleep(0.05)
        assert {k: v for k, v in seen.items() if k in answers} == answers
        assert not any(s.startswith("5") for _, _, s in seen), seen

        lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
        requests = [line for line in lines if line.get("logger") == "atp.request"]
        one = [line for line in requests if line["correlation_id"] == "sale-0"]
        assert len(one) == 1, one
        assert one[0]["method"] == "GET" and one[0]["route"] == "/v1/items/{sku}"
        assert one[0]["status"] == 401 and one[0]["duration_ms"] >= 0
        assert len([r for r in requests if r["correlation_id"].startswith("sale-")]) == 40


def test_a_generated_correlation_id_is_returned_on_a_404_and_a_problem(tmp_path: Path) -> None:
    """A client that sends no id still gets one back, also from the router's 404 and on a
    rejected body, and it is the id the request's log line carries (text format)."""
    log = tmp_path / "serve.log"
    env = service_env(None, str(tmp_path), ATP_LOG_LEVEL="info")
    with (
        running_service(env, log=log) as server,
        httpx.Client(base_url=server.url, timeout=30) as http,
    ):
        missing = http.get("/v2/nothing")
        bad = http.post(
            "/v1/receipts",
            headers={"Authorization": "Bearer test-admin-token"},
            json={"location": "WH1", "lines": [{"sku": "A", "quantity": "5"}]},
        )
    assert missing.status_code == 404 and bad.status_code in (400, 422)
    text = log.read_text()
    for answer in (missing, bad):
        cid = answer.headers["x-correlation-id"]
        assert re.fullmatch(r"[0-9a-f]{24}", cid)
        assert f"[{cid}]" in text
    assert re.search(r"atp\.request \[\w+\] GET unmatched 404 [0-9.]+ms", text), text


WRITER = re.compile(r"^(atp_writer_\w+_total) ([0-9.e+]+)$", re.M)


def test_on_peak_day_metrics_tell_whether_the_one_writer_is_the_bottleneck(
    tmp_path: Path,
) -> None:
    """Story: on peak day checkout slows down and the operator must tell whether the one
    writer that decides every write is saturated or waits for the ledger, from /metrics
    alone. Invariant: with two workers, after a burst of reservations (some forwarded by
    the other worker), one scrape carries the writer's busy seconds and append seconds
    beside the jobs it decided; the append never exceeds the busy time it is part of, and
    neither exceeds the wall time the service ran (one writer thread per process)."""
    env = service_env(None, str(tmp_path))
    started = time.monotonic()
    with running_service(env, workers=2) as server:
        admin = {"Authorization": "Bearer test-admin-token"}

        def writer() -> dict[str, float]:
            text = httpx.get(f"{server.url}/metrics", timeout=30).text
            return {name: float(value) for name, value in WRITER.findall(text)}

        with httpx.Client(base_url=server.url, timeout=30, headers=admin) as http:
            ok = (200, 201)
            location = {"name": "WH", "kind": "warehouse"}
            assert http.put("/v1/locations/WH", json=location).status_code in ok
            assert http.put("/v1/channels/web", json={"locations": ["WH"]}).status_code in ok
            receipt = http.post(
                "/v1/receipts",
                json={"location": "WH", "lines": [{"sku": "PEAK-1", "quantity": 100}]},
                headers={"Idempotency-Key": "peak-receipt"},
            )
            assert receipt.status_code == 201, receipt.text
            for n in range(40):
                r = http.post(
                    "/v1/reservations",
                    json={"channel": "web", "lines": [{"sku": "PEAK-1", "quantity": 1}]},
                    headers={"Idempotency-Key": f"peak-{n}"},
                )
                assert r.status_code == 201, r.text
        # Each worker carries its writer's counts into /metrics about once a second, the
        # busy time of a batch just after its jobs: wait until two scrapes agree.
        seen = writer()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            time.sleep(1.2)
            now = writer()
            if now == seen and now.get("atp_writer_jobs_total", 0) >= 43:
                break
            seen = now
        took = time.monotonic() - started
    assert seen.get("atp_writer_jobs_total", 0) >= 43, seen
    busy, append = seen["atp_writer_busy_seconds_total"], seen["atp_writer_append_seconds_total"]
    assert 0 < append <= busy <= 2 * took, (append, busy, took)
