"""What the pushers report (through Redis): merged into /metrics, judged by /ready."""

from __future__ import annotations

import logging
import time
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger("atp.push")
DOWN_SECONDS = 30.0
"""A pusher that has not reported for this long is taken for stopped."""


async def reports(redis_client: Any, prefix: str) -> list[dict[str, str]]:
    """The pushers' status reports found in Redis under `prefix`."""
    found = []
    async for key in redis_client.scan_iter(f"{prefix}:push:*", count=100):
        raw = await redis_client.hgetall(key)
        if raw:
            found.append({k.decode(): v.decode() for k, v in raw.items()})
    return found


def merged_metrics(found: list[dict[str, str]]) -> list[str]:
    """One HELP/TYPE per metric family, then every pusher's samples."""
    families: dict[str, tuple[list[str], list[str]]] = {}
    for report in found:
        family = ""
        for line in report.get("metrics", "").splitlines():
            if line.startswith("# HELP ") or line.startswith("# TYPE "):
                family = line.split()[2]
                header, _ = families.setdefault(family, ([], []))
                if line not in header:
                    header.append(line)
            elif line and family:
                families[family][1].append(line)
    lines: list[str] = []
    for header, samples in families.values():
        lines += header + samples
    return lines


def judge(found: list[dict[str, str]], alert_seconds: float) -> dict[str, Any]:
    """Per pusher: ok, behind (older than ATP_PUSH_ALERT_SECONDS) or down."""
    now = time.time()
    checks = {}
    for report in found:
        name = f"{report.get('kind')}:{report.get('store')}"
        lag = float(report.get("lag_seconds", 0) or 0)
        silent = now - float(report.get("heartbeat", 0) or 0)
        status = "ok"
        if silent > DOWN_SECONDS:
            status = "down"
        elif lag > alert_seconds:
            status = "behind"
        if status != "ok":
            log.warning(
                "channel %s (%s) is %s: %.0f s behind, last report %.0f s ago",
                report.get("channel"),
                name,
                status,
                lag,
                silent,
            )
        checks[name] = {
            "status": status,
            "channel": report.get("channel"),
            "seconds_behind": round(lag, 3),
            "last_report_seconds": round(silent, 3),
        }
    return checks


def dead_letters(found: list[dict[str, str]]) -> dict[str, float]:
    """Per pusher (`kind:store`, as `judge` names them): messages it sent to its
    dead-letter queue since it started (its `atp_push_dead_letters_total` samples, read
    from the Prometheus text it reports; NaN when that text does not parse)."""
    counts: dict[str, float] = {}
    for report in found:
        name = f"{report.get('kind')}:{report.get('store')}"
        counts[name] = 0.0
        try:
            for family in text_string_to_metric_families(report.get("metrics", "")):
                if family.name == "atp_push_dead_letters":
                    counts[name] += sum(sample.value for sample in family.samples)
        except ValueError:  # a report cut short: its count is unknown, the rest still shows
            log.warning("pusher %s reported metrics that do not parse", name)
            counts[name] = float("nan")
    return counts
