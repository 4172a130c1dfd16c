"""Reconciliation with ERP/WMS snapshots over HTTP (issue 13; docs/contract.md,
"Reconciliation"): a JSON body of up to 10,000 lines, or a `text/csv` body of any size
(header `sku,on_hand`, the other fields as query parameters), streamed to a temporary file,
checked whole, then compared part by part (api.service.reconciliation)."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import re
import tempfile
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import IO, Annotated, Any

import msgspec
from litestar import Request, Response, get, post
from litestar.params import FromPath, FromQuery, Parameter

from adapters.records import DriftedLine
from api.http import schemas as s
from api.http.controllers.common import STOCK_WRITE, path_code, query_code
from api.http.decoding import decode_body, given_twice
from api.http.gateway import POSITION_HEADER
from api.http.openapi import returns
from api.http.problems import ApiProblem
from api.http.views import history_entry
from api.service.reconciliation import (
    FIRST_LINES,
    PART,
    KeyReusedError,
    Reconciliations,
    Report,
    SnapshotLine,
    reconciliation_id,
)
from api.service.reconciliation import (
    Request as Reconcile,
)

CSV_BODY = (
    "A snapshot of any size: header `sku,on_hand`, one SKU a line (RFC 4180); the other "
    "fields are the query parameters (location and as_of required)."
)
OPT_READ = {"scopes": (STOCK_WRITE,)}
MAX_JSON_LINES = 10_000
_CODE = re.compile(s.CODE_PATTERN)
_UNITS = re.compile(r"\A[0-9]{1,10}\Z")
CSV_HEADER = ["sku", "on_hand"]


class SnapshotLineIn(msgspec.Struct, forbid_unknown_fields=True):
    sku: s.Code
    on_hand: Annotated[int, msgspec.Meta(ge=0, le=s.MAX_UNITS)]


class ReconciliationRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A snapshot of one location's on-hand at `as_of` (RFC 3339 with offset)."""

    location: s.Code
    as_of: datetime
    source: Annotated[str, msgspec.Meta(max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")] = ""
    complete: bool = False
    apply: bool = False
    tolerance: Annotated[int, msgspec.Meta(ge=0, le=s.MAX_UNITS)] = 0
    lines: Annotated[list[SnapshotLineIn], msgspec.Meta(max_length=MAX_JSON_LINES)] = []


class DriftedLineView(DriftedLine, frozen=True, kw_only=True):
    """A drifted line and the link to the SKU's ledger events since the location's previous
    reconciliation (`history`)."""

    history: str


class ReconciliationView(Report, kw_only=True):
    """The report with a page of its drifted lines; `next_after` the `after` of the next."""

    lines: list[DriftedLineView]  # type: ignore[assignment]
    next_after: int | None = None


class ReconciliationList(msgspec.Struct):
    reconciliations: list[ReconciliationView]


def _service(request: Request[Any, Any, Any]) -> Reconciliations:
    recon: Reconciliations = request.app.state.reconciliations
    return recon


def _line(rid: str, line: DriftedLine) -> DriftedLineView:
    link = f"/v1/reconciliations/{rid}/lines/{line.sku.replace('/', '%2F')}/history"
    return DriftedLineView(**msgspec.structs.asdict(line), history=link)


def _view(report: Report, after: int = 0, limit: int = FIRST_LINES) -> ReconciliationView:
    page = report.lines[after : after + limit]
    fields = {k: v for k, v in msgspec.structs.asdict(report).items() if k != "lines"}
    more = after + limit < len(report.lines)
    lines = [_line(report.reconciliation_id, line) for line in page]
    return ReconciliationView(**fields, lines=lines, next_after=after + limit if more else None)


def _key(request: Request[Any, Any, Any]) -> str:
    key = request.headers.get("idempotency-key")
    if key is None:
        raise ApiProblem(
            400, "idempotency-key-required", "this route requires an Idempotency-Key header"
        )
    if not 1 <= len(key) <= 255:
        raise ApiProblem(400, "bad-idempotency-key", "Idempotency-Key must be 1..255 characters")
    return key


def _flag(request: Request[Any, Any, Any], name: str) -> bool:
    raw = request.query_params.get(name, "false")
    if raw not in ("true", "false"):
        raise ApiProblem(422, "validation-failed", f"{name}: true or false", field=name)
    return raw == "true"


def _csv_request(request: Request[Any, Any, Any]) -> ReconciliationRequest:
    """The query parameters of a CSV upload, decoded as strictly as a JSON body."""
    params = request.query_params
    for name in sorted(set(params)):
        if len(params.getall(name)) > 1:
            raise given_twice(name)
    for name in ("location", "as_of"):
        if name not in params:
            raise ApiProblem(422, "validation-failed", f"{name} is required", field=name)
    body: dict[str, Any] = {
        "complete": _flag(request, "complete"),
        "apply": _flag(request, "apply"),
    }
    for name in ("location", "as_of", "source"):
        if name in params:
            body[name] = params[name]
    if "tolerance" in params:
        raw = params["tolerance"]
        if not _UNITS.match(raw):
            raise ApiProblem(
                422, "validation-failed", "tolerance: a decimal integer", field="tolerance"
            )
        body["tolerance"] = int(raw)
    # An unknown parameter never gets here: strict_input refuses it for every /v1/ route.
    return decode_body(msgspec.json.encode(body), ReconciliationRequest)


def csv_lines(text: IO[str]) -> Iterator[tuple[int, SnapshotLine]]:
    """(line number, (sku, on_hand)) of a snapshot CSV (RFC 4180 via the stdlib csv
    module; header `sku,on_hand`, a UTF-8 BOM allowed). Raises ApiProblem 400 naming the
    line of anything else."""
    rows = csv.reader(text, strict=True)
    try:
        header = next(rows, None)
        if header is not None:
            _plain(header, 1)
        if header is None or [h.strip().lstrip("\ufeff") for h in header] != CSV_HEADER:
            raise ApiProblem(400, "bad-csv", "line 1: the header must be sku,on_hand", line=1)
        for row in rows:
            number = rows.line_num
            if not row:
                continue
            _plain(row, number)
            if len(row) != 2:
                detail = f"line {number}: {len(row)} fields, expected 2 (sku,on_hand)"
                raise ApiProblem(400, "bad-csv", detail, line=number)
            sku, units = row[0].strip(), row[1].strip()
            if not _CODE.fullmatch(sku):
                detail = f"line {number}: sku {sku!r:.80} does not match {s.CODE_PATTERN}"
                raise ApiProblem(400, "bad-csv", detail, line=number)
            if not _UNITS.match(units) or int(units) > s.MAX_UNITS:
                detail = f"line {number}: on_hand {units!r:.40} is not 0..{s.MAX_UNITS}"
                raise ApiProblem(400, "bad-csv", detail, line=number)
            yield number, (sku, int(units))
    except (csv.Error, UnicodeDecodeError) as exc:
        raise ApiProblem(
            400, "bad-csv", f"line {rows.line_num}: {exc}", line=rows.line_num
        ) from None


def _plain(row: list[str], number: int) -> None:
    """ApiProblem 400 naming the line of bytes that are not UTF-8 (decoded with
    surrogateescape: they stand as lone surrogates) or of a NUL byte."""
    text = "".join(row)
    if any("\udc80" <= ch <= "\udcff" for ch in text):
        raise ApiProblem(400, "bad-csv", f"line {number}: not UTF-8", line=number)
    if "\x00" in text:
        raise ApiProblem(400, "bad-csv", f"line {number}: a NUL byte", line=number)


async def _spool(request: Request[Any, Any, Any], digest: Any) -> IO[bytes]:
    """The streamed body in a temporary file (memory stays flat whatever its size)."""
    spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=1 << 20)  # noqa: SIM115
    async for chunk in request.stream():
        digest.update(chunk)
        spool.write(chunk)
    spool.seek(0)
    return spool


def _read(spool: IO[bytes]) -> Iterator[tuple[int, SnapshotLine]]:
    """The spooled CSV's numbered lines, read again from its start (the file stays open)."""
    spool.seek(0)
    text = io.TextIOWrapper(spool, encoding="utf-8", errors="surrogateescape", newline="")
    try:
        yield from csv_lines(text)
    finally:
        text.detach()


def _rows(spool: IO[bytes]) -> Iterator[SnapshotLine]:
    return (line for _, line in _read(spool))


def _numbered(spool: IO[bytes]) -> Iterator[tuple[str, str]]:
    """(`line N`, sku) of each line, for the duplicate check."""
    return ((f"line {n}", sku) for n, (sku, _) in _read(spool))


@post(
    "/v1/reconciliations",
    opt={
        "scopes": (STOCK_WRITE,),
        "idempotency_key": "required",
        "body": (ReconciliationRequest,),
        "body_csv": CSV_BODY,
    },
    status_code=201,
    responses=returns(201, ReconciliationView, "The reconciliation's report (first lines)"),
)
async def post_reconciliation(
    request: Request[Any, Any, Any],
    location: FromQuery[str | None] = None,
    as_of: FromQuery[str | None] = None,
    source: FromQuery[str | None] = None,
    complete: Annotated[str | None, Parameter(description="true or false")] = None,
    apply: Annotated[str | None, Parameter(description="true or false")] = None,
    tolerance: Annotated[int | None, Parameter(ge=0, le=s.MAX_UNITS)] = None,
) -> Response[bytes]:
    """Compare a snapshot with atp's on-hand as of its time; with `apply`, correct the
    drifts beyond `tolerance`. A retry with the same Idempotency-Key answers the same
    report and applies nothing again."""
    key = _key(request)
    recon = _service(request)
    media = _media(request)
    digest = hashlib.sha256(b"POST /v1/reconciliations\n")
    spool: IO[bytes] | None = None
    if media == "text/csv":
        data = _csv_request(request)
        digest.update(msgspec.json.encode(data) + b"\n")
        spool = await _spool(request, digest)
        await recon.check(_domain(data))
        # A whole file's check is CPU work: off the event loop.
        skus = await asyncio.to_thread(recon.check_unique, _numbered(spool))
    else:
        if request.query_params:
            name = sorted(request.query_params)[0]
            detail = f"{name}: query parameters go with a text/csv body; this one is in the JSON"
            raise ApiProblem(422, "validation-failed", detail, field=name)
        raw = await request.body()
        data = decode_body(raw, ReconciliationRequest)
        digest.update(msgspec.json.encode(data))
        await recon.check(_domain(data))
        skus = recon.check_unique((f"lines[{i}].sku", x.sku) for i, x in enumerate(data.lines))

    async def parts() -> AsyncIterator[list[SnapshotLine]]:
        if spool is not None:
            source: Iterator[SnapshotLine] = _rows(spool)
        else:
            source = ((x.sku, x.on_hand) for x in data.lines)
        part: list[SnapshotLine] = []
        for line in source:
            part.append(line)
            if len(part) == PART:
                yield part
                part = []
        if part:
            yield part

    rid = reconciliation_id(f"{request.state.principal.key}", key)
    try:
        report, replayed, position = await recon.run(
            rid, _domain(data), digest.hexdigest(), parts, skus
        )
    except KeyReusedError:
        raise ApiProblem(
            422, "idempotency-key-reused", "this Idempotency-Key was used with a different request"
        ) from None
    finally:
        if spool is not None:
            spool.close()
    headers = {"Location": f"/v1/reconciliations/{rid}"}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    if position is not None:
        headers[POSITION_HEADER] = str(position)
    body = msgspec.json.encode(_view(report))
    return Response(body, status_code=201, media_type="application/json", headers=headers)


def _media(request: Request[Any, Any, Any]) -> str:
    """`text/csv` or `application/json` (the default); 415 for any other body type or a
    charset other than UTF-8."""
    header = request.headers.get("content-type", "application/json").lower()
    media, _, params = header.partition(";")
    media = media.strip()
    charset = params.partition("charset=")[2].split(";")[0].strip().strip('"')
    if media not in ("text/csv", "application/json") or charset not in ("", "utf-8"):
        detail = f"a snapshot is application/json or text/csv in UTF-8, not {header!r:.80}"
        raise ApiProblem(415, "unsupported-media-type", detail)
    return media


def _domain(data: ReconciliationRequest) -> Reconcile:
    aware = data.as_of.utcoffset() is not None  # a naive one is refused by `check`
    return Reconcile(
        location=data.location,
        as_of=data.as_of.astimezone(UTC) if aware else data.as_of,
        source=data.source,
        complete=data.complete,
        apply=data.apply,
        tolerance=data.tolerance,
    )


async def _report(request: Request[Any, Any, Any], rid: str) -> Report:
    rid = path_code(rid, "reconciliation")
    report = await _service(request).report(rid)
    if report is None:
        raise ApiProblem(404, "not-found", f"reconciliation {rid!r} does not exist")
    return report


def _report_csv(report: Report) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        [
            "sku",
            "ledger_on_hand",
            "snapshot_on_hand",
            "drift",
            "movements_after_as_of",
            "applied",
            "applied_drift",
            "superseded",
        ]
    )
    for line in report.lines:
        writer.writerow(
            [
                line.sku,
                line.ledger_on_hand,
                line.snapshot_on_hand,
                line.drift,
                line.movements_after_as_of,
                "true" if line.applied else "false",
                line.applied_drift,
                "true" if line.superseded else "false",
            ]
        )
    yield buffer.getvalue()


@get(
    "/v1/reconciliations/{rid:str}",
    opt=OPT_READ,
    responses=returns(200, ReconciliationView, "The report, its drifted lines paged"),
)
async def get_reconciliation(
    request: Request[Any, Any, Any],
    rid: FromPath[str],
    after: Annotated[int, Parameter(ge=0, le=s.MAX_POSITION)] = 0,
    limit: Annotated[int, Parameter(ge=1, le=FIRST_LINES)] = FIRST_LINES,
) -> Response[bytes]:
    """The report; `Accept: text/csv` gives every drifted line as CSV."""
    report = await _report(request, rid)
    if "text/csv" in request.headers.get("accept", ""):
        body = "".join(_report_csv(report)).encode()
        return Response(body, media_type="text/csv")  # Litestar adds the utf-8 charset
    return Response(msgspec.json.encode(_view(report, after, limit)), media_type="application/json")


@get(
    "/v1/reconciliations",
    opt=OPT_READ,
    responses=returns(200, ReconciliationList, "A location's reconciliations, newest first"),
)
async def list_reconciliations(
    request: Request[Any, Any, Any],
    location: FromQuery[str | None] = None,
    limit: Annotated[int, Parameter(ge=1, le=100)] = 20,
) -> Response[bytes]:
    """The location's finished reconciliations, newest first: 422 naming `location`
    without one, 404 for a location atp does not have."""
    if location is None:
        raise ApiProblem(422, "validation-failed", "location is required", field="location")
    location = query_code(location, "location")
    recon = _service(request)
    if location not in (await recon.policies(recon.clock())).locations:
        raise ApiProblem(
            404, "not-found", f"location {location!r} does not exist", field="location"
        )
    found = await recon.listing(location, limit)
    body = ReconciliationList([_view(r, 0, 0) for r in found])
    return Response(msgspec.json.encode(body), media_type="application/json")


@get("/v1/reconciliations/{rid:str}/lines/{sku:str}/history", opt=OPT_READ)
async def get_line_history(
    request: Request[Any, Any, Any],
    rid: FromPath[str],
    sku: FromPath[str],
    after: Annotated[int, Parameter(ge=0, le=s.MAX_POSITION)] = 0,
    limit: Annotated[int, Parameter(ge=1, le=1000)] = 100,
) -> s.HistoryPage:
    """The SKU's ledger events at the report's location that occurred between the
    location's previous reconciliation and this one (the movements that explain its
    drift); 404 for a SKU that is not a line of the report."""
    report = await _report(request, rid)
    sku = path_code(sku, "sku")
    rows = await _service(request).line_history(report, sku, after, limit)
    if rows is None:
        raise ApiProblem(404, "not-found", f"SKU {sku!r} is not a line of reconciliation {rid!r}")
    entries = [history_entry(r.position, r.occurred_at, r.metadata, r.event) for r in rows]
    next_after = rows[-1].position if len(rows) == limit else None
    return s.HistoryPage(entries=entries, next_after=next_after)


ROUTES = [post_reconciliation, get_reconciliation, list_reconciliations, get_line_history]
