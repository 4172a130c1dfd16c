"""The benchmark's result tables (plain text, aligned columns)."""

from __future__ import annotations

import math

from loadtests.harness.results import Load


def fmt_ms(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.2f}"


def fmt_rate(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:,.0f}"


def render_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, cells in enumerate(rows):
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        lines.append("  ".join([first, *rest]))
        if n == 0:
            lines.append("-" * len(lines[0]))
    return "\n".join(lines)


def read_table(pairs: list[tuple[str, Load, Load]]) -> str:
    rows = [
        [
            "path",
            "single/s",
            "p50 ms",
            "p99 ms",
            "CPU us",
            "bulk/s",
            "p50 ms",
            "p99 ms",
            "CPU us",
            "errors",
        ]
    ]
    for label, single, bulk in pairs:
        rows.append(
            [
                label,
                fmt_rate(single.rate),
                fmt_ms(single.p50_ms),
                fmt_ms(single.p99_ms),
                fmt_rate(single.server_us),
                fmt_rate(bulk.rate),
                fmt_ms(bulk.p50_ms),
                fmt_ms(bulk.p99_ms),
                fmt_rate(bulk.server_us),
                str(single.errors + bulk.errors),
            ]
        )
    return render_table(rows)


def cpu_table(loads: list[Load]) -> str:
    rows = [
        [
            "run (CPU %, 2 cores = 200)",
            "busy",
            "server",
            "redis",
            "pg",
            "loadgen",
            "proj",
            "steal",
            "other",
        ]
    ]
    for load in loads:
        c = load.cpu
        if c is None:
            continue
        rows.append(
            [
                load.name,
                f"{c.percent('busy'):.0f}",
                f"{c.percent('server'):.0f}",
                f"{c.percent('redis'):.0f}",
                f"{c.percent('postgres'):.0f}",
                f"{c.percent('bench'):.0f}",
                f"{c.percent('projector'):.0f}",
                f"{c.percent('steal'):.0f}",
                f"{100 * c.other / c.wall:.0f}",
            ]
        )
    return render_table(rows)
