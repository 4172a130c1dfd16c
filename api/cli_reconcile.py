"""`atp reconcile`: stream an ERP/WMS snapshot file to the running service (issue 13 §5).

A retailer's cron job runs it next to the ERP export, wherever that is: it needs only the
service's URL (ATP_URL) and a token with `stock:write` (ATP_TOKEN, never on the command
line), not the database. The file goes up as a chunked `text/csv` body of any size (httpx),
with a progress bar (tqdm) on a terminal; the Idempotency-Key defaults to one derived from
every option that changes the request (location, time, source, complete, apply, tolerance)
and the file's sha256, so a cron job that retries (or runs twice) applies nothing twice,
and a re-run with another option is a new reconciliation. Exit status: 0, 3 when drift
beyond the tolerance was found, 1 when the file cannot be read or the service refused it
or could not be reached (one line on stderr says why), 2 for a usage error (bad
arguments, ATP_TOKEN unset, stdin without --key).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
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
    p.add_argument("--key", help="Idempotency-Key (default: from the options and the file)")
    p.add_argument(
        "--url",
        default=os.environ.get("ATP_URL", "http://127.0.0.1:8000"),
        help="the running service (overrides ATP_URL; default http://127.0.0.1:8000)",
    )
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the answer")


def _digest(path: str, args: argparse.Namespace) -> str:
    options = [args.location, args.as_of, args.source, args.complete, args.apply, args.tolerance]
    h = hashlib.sha256(json.dumps(options).encode() + b"\n")
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return f"reconcile-{h.hexdigest()}"


def _problem(response: httpx.Response) -> str:
    """One line for a refusal: the RFC 9457 problem's detail (else the body), and what to do
    when the key already names another reconciliation."""
    try:
        body = response.json()
    except ValueError:
        return " ".join(response.text.split())[:500]
    if not isinstance(body, dict):
        return " ".join(response.text.split())[:500]
    text = str(body.get("detail") or body.get("title") or body)
    if str(body.get("type", "")).endswith("idempotency-key-reused"):
        text += " (give --key with a new key to reconcile it again)"
    return text


def _chunks(f: IO[bytes], bar: Any) -> Iterator[bytes]:
    while chunk := f.read(CHUNK):
        bar.update(len(chunk))
        yield chunk


def command(_: object, args: argparse.Namespace) -> int:
    """`atp reconcile` (the CLI's command signature: settings, arguments)."""
    return run(args)


def run(args: argparse.Namespace) -> int:
    """Upload, print the summary and the top drifts; the exit status (see module doc)."""
    logging.getLogger("httpx").setLevel(logging.WARNING)  # no line per request in cron mail
    token = os.environ.get("ATP_TOKEN", "")
    if not token:
        print("atp reconcile: set ATP_TOKEN to a token with stock:write", file=sys.stderr)
        return 2
    path = "/dev/stdin" if args.file == "-" else args.file
    if args.file == "-" and not args.key:
        print("atp reconcile: give --key when reading stdin", file=sys.stderr)
        return 2
    try:
        key = args.key or _digest(path, args)
        size = os.path.getsize(path) if args.file != "-" else None
    except OSError as exc:
        print(f"atp reconcile: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 1
    params = {"location": args.location, "as_of": args.as_of, "tolerance": str(args.tolerance)}
    params |= {"complete": str(args.complete).lower(), "apply": str(args.apply).lower()}
    if args.source:
        params["source"] = args.source
    headers = {
        "Authorization": f"Bearer {token}",
        "Idempotency-Key": key,
        "content-type": "text/csv",
    }
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
    except OSError as exc:  # a directory, or a file gone or unreadable meanwhile
        print(f"atp reconcile: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 1
    if response.status_code != 201:
        print(f"atp reconcile: {response.status_code} {_problem(response)}", file=sys.stderr)
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
            f"{line['movements_after_as_of']:+d}{_outcome(line)}"
        )
    return DRIFT_FOUND if report["skus_beyond_tolerance"] else 0


def _outcome(line: dict[str, Any]) -> str:
    if line.get("superseded"):
        return " (superseded by a later snapshot: not applied)"
    if not line["applied"]:
        return ""
    moved = line.get("applied_drift", line["drift"])
    return " (applied)" if moved == line["drift"] else f" (applied {moved:+d}: on-hand stops at 0)"
