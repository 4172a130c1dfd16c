"""`atp reconcile`: stream an ERP/WMS snapshot file to the running service (issue 13 §5).

A retailer's cron job runs it next to the ERP export, wherever that is: it needs only the
service's URL (ATP_URL) and a token with `stock:write` (ATP_TOKEN, never on the command
line), not the database. The file goes up as a chunked `text/csv` body of any size (httpx),
with a progress bar (tqdm) on a terminal; the Idempotency-Key defaults to one derived from
the location, the time and the file's sha256, so a cron job that retries (or runs twice)
applies nothing twice. Exit status: 0, 3 when drift beyond the tolerance was found, 1 when
the service refused the file or could not be reached (its problem is printed).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from collections.abc import Iterator
from typing import IO, Any

import httpx
from tqdm import tqdm  # type: ignore[import-untyped]

CHUNK = 1 << 16
DRIFT_FOUND = 3
TOP = 10


def add_parser(sub: Any) -> None:
    """The `reconcile` subcommand's arguments."""
    p = sub.add_parser("reconcile", help="reconcile a location with an ERP/WMS snapshot (CSV)")
    p.add_argument("file", help="CSV with header sku,on_hand (any size; - reads stdin)")
    p.add_argument("--location", required=True, help="the location the snapshot counts")
    p.add_argument("--as-of", required=True, help="when the snapshot was taken (RFC 3339)")
    p.add_argument("--source", default="", help="where it comes from (e.g. erp)")
    p.add_argument("--complete", action="store_true", help="it lists every SKU there")
    p.add_argument("--apply", action="store_true", help="correct drift beyond the tolerance")
    p.add_argument("--tolerance", type=int, default=0, help="units of drift ignored (default 0)")
    p.add_argument("--key", help="Idempotency-Key (default: from location, time and file)")
    p.add_argument(
        "--url",
        default=os.environ.get("ATP_URL", "http://127.0.0.1:8000"),
        help="the running service (overrides ATP_URL; default http://127.0.0.1:8000)",
    )
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the answer")


def _digest(path: str, args: argparse.Namespace) -> str:
    h = hashlib.sha256(f"{args.location}\n{args.as_of}\n{args.apply}\n".encode())
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return f"reconcile-{h.hexdigest()}"


def _chunks(f: IO[bytes], bar: Any) -> Iterator[bytes]:
    while chunk := f.read(CHUNK):
        bar.update(len(chunk))
        yield chunk


def command(_: object, args: argparse.Namespace) -> int:
    """`atp reconcile` (the CLI's command signature: settings, arguments)."""
    return run(args)


def run(args: argparse.Namespace) -> int:
    """Upload, print the summary and the top drifts; the exit status (see module doc)."""
    token = os.environ.get("ATP_TOKEN", "")
    if not token:
        print("atp reconcile: set ATP_TOKEN to a token with stock:write", file=sys.stderr)
        return 2
    path = "/dev/stdin" if args.file == "-" else args.file
    key = args.key or (_digest(path, args) if args.file != "-" else None)
    if key is None:
        print("atp reconcile: give --key when reading stdin", file=sys.stderr)
        return 2
    params = {"location": args.location, "as_of": args.as_of, "tolerance": str(args.tolerance)}
    params |= {"complete": str(args.complete).lower(), "apply": str(args.apply).lower()}
    if args.source:
        params["source"] = args.source
    headers = {
        "Authorization": f"Bearer {token}",
        "Idempotency-Key": key,
        "content-type": "text/csv",
    }
    size = os.path.getsize(path) if args.file != "-" else None
    try:
        with (
            open(path, "rb") as f,
            tqdm(total=size, unit="B", unit_scale=True, disable=None, file=sys.stderr) as bar,
        ):
            response = httpx.post(
                f"{args.url}/v1/reconciliations",
                params=params,
                content=_chunks(f, bar),
                headers=headers,
                timeout=args.timeout,
            )
    except httpx.HTTPError as exc:
        print(f"atp reconcile: {args.url} could not be reached: {exc}", file=sys.stderr)
        return 1
    if response.status_code != 201:
        print(f"atp reconcile: {response.status_code} {response.text}", file=sys.stderr)
        return 1
    report = response.json()
    print(
        f"reconciliation {report['reconciliation_id']} of {report['location']} as of "
        f"{report['as_of']}: {report['skus_compared']} SKUs compared, "
        f"{report['skus_drifted']} drifted ({report['units_drifted']} units), "
        f"{report['skus_beyond_tolerance']} beyond tolerance {report['tolerance']}, "
        f"{report['skus_applied']} applied"
    )
    top = sorted(report["lines"], key=lambda line: -abs(line["drift"]))[:TOP]
    for line in top:
        print(
            f"  {line['sku']}: atp {line['ledger_on_hand']}, snapshot "
            f"{line['snapshot_on_hand']}, drift {line['drift']:+d}, moved since "
            f"{line['movements_after_as_of']:+d}{' (applied)' if line['applied'] else ''}"
        )
    return DRIFT_FOUND if report["skus_beyond_tolerance"] else 0
