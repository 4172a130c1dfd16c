"""Strict decoding of request bodies and typed query parameters (contract: "Errors").

`"5"` is not an integer, `1.5` is not a quantity, `0` is not a date-time, a code matches
its pattern in full (no trailing newline), a body that is not UTF-8 or is nested too deeply
is malformed: each is a 4xx problem naming the field, raised before the request can change
anything.
"""

from __future__ import annotations

import re
import typing
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any, TypeVar

import msgspec
from litestar import Request
from litestar.constants import RESERVED_KWARGS
from litestar.utils.scope.state import ScopeState

from api.http.problems import ApiProblem

T = TypeVar("T")
_WHERE = re.compile(
    r"^(?P<message>.*?)(?: - at (?P<key>`key` in )?`\$(?P<path>[^`]*)`)?$", re.DOTALL
)
_MISSING = re.compile(r"missing required field `(?P<name>[^`]+)`")
_UNKNOWN = re.compile(r"unknown field `(?P<name>[^`]+)`")
_NEWLINES = (b"\\n", b"\\u000a", b"\\u000A")
_INTEGER = re.compile(r"\A-?[0-9]{1,20}\Z")  # ASCII digits only: `²` is not a digit here


def given_twice(name: str) -> ApiProblem:
    """The 422 problem for query parameter `name`, which takes one value, given more than
    once (never one of the values silently used)."""
    return ApiProblem(
        422, "validation-failed", f"{name}: given more than once; it takes one value", field=name
    )


def _field(path: str, name: str = "") -> str:
    joined = path.removeprefix(".")
    if name:
        joined = f"{joined}.{name}" if joined else name
    return joined


def decode_body(raw: bytes, type_: type[T]) -> T:
    """Decode a JSON body into `type_` strictly (no coercion from strings, no truncation).

    Raises `ApiProblem`: 400 `bad-request` for an empty body or a missing required field,
    400 `malformed-json` for bytes that are not JSON (invalid UTF-8 and nesting deeper than
    the decoder's recursion limit included), 422 `validation-failed` with `field` (a path
    such as `lines[0].quantity`) for a well-formed body that breaks the schema, an unknown
    field included (named by its path, such as `bufer` or `lines[0].qty`).
    """
    if not raw.strip():
        raise ApiProblem(400, "bad-request", "a JSON body is required")
    try:
        if not raw.isascii():
            raw.decode()  # JSON is UTF-8 (RFC 8259 section 8.1), in ignored fields too
        value: T = _decoder(type_).decode(raw)  # type: ignore[arg-type]
    except msgspec.ValidationError as exc:
        found = _WHERE.match(str(exc))
        message, path = (found["message"], found["path"] or "") if found else (str(exc), "")
        if found and found["key"]:  # a dict's key (a code) is at fault: name the dict
            message = f"a key: {message}"
        if missing := _MISSING.search(message):
            field = _field(path, missing["name"])
            raise ApiProblem(400, "bad-request", message, field=field) from None
        field = _field(_entry_named(raw, type_, path, str(exc)))
        if unknown := _UNKNOWN.search(message):  # a misspelt field must not pass unseen
            # msgspec stops at the first unknown key; a body that is also malformed, or
            # lacks a required field, answers that first (as it would without the key).
            _check_known_fields_aside(raw, type_)
            field = _field(field, unknown["name"])
            message = "unknown field: this route accepts only the fields it documents"
        raise ApiProblem(422, "validation-failed", f"{field}: {message}", field=field) from None
    except msgspec.DecodeError as exc:
        raise ApiProblem(400, "malformed-json", f"the body is not JSON: {exc}") from None
    except UnicodeDecodeError:
        raise ApiProblem(400, "malformed-json", "the body is not valid UTF-8") from None
    except RecursionError:
        raise ApiProblem(400, "malformed-json", "the body is nested too deeply") from None
    # A `^...$` pattern passes where a full match fails only for a string ending in a newline,
    # which JSON can only carry escaped: without one, there is nothing to walk.
    if not any(escape in raw for escape in _NEWLINES):
        return value
    if (wrong := _unmatched(value, _type_info(type_), "")) is not None:  # type: ignore[arg-type]
        field, pattern = wrong
        raise ApiProblem(
            422, "validation-failed", f"{field}: must match {pattern} in full", field=field
        )
    return value


def _check_known_fields_aside(raw: bytes, type_: Any) -> None:
    """Raise the problem `raw` would give with its unknown fields taken out (malformed JSON,
    a missing required field, a wrong type), if any; return when only unknown fields are
    wrong. Runs only on that error path, so a good body is decoded once."""
    try:
        document = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise ApiProblem(400, "malformed-json", f"the body is not JSON: {exc}") from None
    except RecursionError:
        raise ApiProblem(400, "malformed-json", "the body is nested too deeply") from None
    known = msgspec.json.encode(_known_fields(document, _type_info(type_)))
    try:
        _decoder(type_).decode(known)
    except msgspec.ValidationError:
        decode_body(known, type_)


def _known_fields(value: Any, info: msgspec.inspect.Type) -> Any:
    """The JSON document `value` without the object keys `info` (a struct) does not name."""
    match info:
        case msgspec.inspect.StructType() if isinstance(value, dict):
            fields = {f.encode_name: f.type for f in info.fields}
            return {k: _known_fields(v, fields[k]) for k, v in value.items() if k in fields}
        case msgspec.inspect.ListType() | msgspec.inspect.VarTupleType() if isinstance(value, list):
            return [_known_fields(item, info.item_type) for item in value]
        case msgspec.inspect.DictType() if isinstance(value, dict):
            return {k: _known_fields(v, info.value_type) for k, v in value.items()}
        case msgspec.inspect.UnionType():
            for option in info.types:
                if isinstance(option, msgspec.inspect.StructType) and isinstance(value, dict):
                    return _known_fields(value, option)
    return value


_SEGMENT = re.compile(r"\.(?P<name>[^.\[]+)|\[(?P<index>[0-9]+)\]")


def _entry_named(raw: bytes, type_: Any, path: str, error: str) -> str:
    """`path` with the first `[...]` (msgspec's name for an entry of a dict, such as a
    preview's `channels`) replaced by `.<key>` of the entry at fault: found by decoding
    the body again with that dict cut down to one entry at a time, until the same error
    recurs. `path` as it is when that cannot be told."""
    head, cut, tail = path.partition("[...]")
    if not cut:
        return path
    document = msgspec.json.decode(raw)
    container = document
    for segment in _SEGMENT.finditer(head):
        name, index = segment["name"], segment["index"]
        if name is not None and isinstance(container, dict) and name in container:
            container = container[name]
        elif index is not None and isinstance(container, list) and int(index) < len(container):
            container = container[int(index)]
        else:
            return path
    if not isinstance(container, dict):
        return path
    for key, value in list(container.items()):
        container.clear()
        container[key] = value
        try:
            _decoder(type_).decode(msgspec.json.encode(document))
        except msgspec.ValidationError as exc:
            if str(exc) == error:
                return f"{head}.{key}{tail}"
    return path


@cache
def _decoder(type_: Any) -> msgspec.json.Decoder[Any]:
    return msgspec.json.Decoder(type_, strict=True)


@cache
def _type_info(type_: Any) -> msgspec.inspect.Type:
    return msgspec.inspect.type_info(type_)


def _unmatched(value: Any, info: msgspec.inspect.Type, path: str) -> tuple[str, str] | None:
    """The first string under a `pattern` constraint that the pattern does not match in full.

    msgspec searches patterns (`re.search`), where `$` also matches before a final newline:
    `"WH\\n"` would pass `^...$`.
    """
    match info:
        case msgspec.inspect.StrType(pattern=str(pattern)) if isinstance(value, str):
            return None if _compiled(pattern).fullmatch(value) else (path, pattern)
        case msgspec.inspect.StructType() if isinstance(value, info.cls):
            for f in info.fields:
                name = f"{path}.{f.encode_name}" if path else f.encode_name
                if (wrong := _unmatched(getattr(value, f.name), f.type, name)) is not None:
                    return wrong
        case msgspec.inspect.ListType() | msgspec.inspect.VarTupleType() if isinstance(
            value, list | tuple
        ):
            for i, item in enumerate(value):
                if (wrong := _unmatched(item, info.item_type, f"{path}[{i}]")) is not None:
                    return wrong
        case msgspec.inspect.UnionType():
            for option in info.types:
                if (wrong := _unmatched(value, option, path)) is not None:
                    return wrong
    return None


@cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


@dataclass(frozen=True)
class _Plan:
    """What one route handler decodes: its body's type, its integer query parameters and,
    for an API route (`/v1/...`), every query parameter it takes (None: not checked)."""

    body: Any
    integers: tuple[str, ...]
    datetimes: tuple[str, ...] = ()
    """Its date-time query parameters: RFC 3339 strictly (Litestar's conversion would take
    a number such as `0` or Unix seconds as a time)."""
    body_optional: bool = False
    query: frozenset[str] | None = None
    single: frozenset[str] = frozenset()
    """The query parameters its signature declares with one value (not a list): given
    twice, they are refused rather than one of them silently used."""


def _query_names(handler: Any) -> frozenset[str] | None:
    """The query parameters an API handler takes: those its signature declares (not the
    path's, headers, cookies, dependencies or Litestar's reserved names) and those it reads
    by hand, listed in its `opt["query"]`. None for a route outside `/v1/` (the /ui pages
    and the OpenAPI documents read theirs by hand)."""
    if not all(path.startswith("/v1/") for path in handler.paths):
        return None
    names = set(handler.opt.get("query", ()))
    names.update(_declared_query(handler, single=False))
    return frozenset(names)


def _declared_query(handler: Any, single: bool) -> set[str]:
    """The query parameters an API handler's signature declares (see _query_names); with
    `single`, only those that take one value (not a list)."""
    if not all(path.startswith("/v1/") for path in handler.paths):
        return set()
    path_names = {
        m.group(1) for path in handler.paths for m in re.finditer(r"{(\w+)(?::\w+)?}", path)
    }
    skipped = RESERVED_KWARGS | path_names | set(handler.resolve_dependencies()) | {"data"}
    names = set()
    for name, f in handler.parsed_fn_signature.parameters.items():
        kwarg = f.kwarg_definition
        if name in skipped or getattr(kwarg, "header", None) or getattr(kwarg, "cookie", None):
            continue
        if single and f.is_non_string_sequence:
            continue
        names.add(getattr(kwarg, "query", None) or name)
    return names


_plans: dict[Any, _Plan] = {}


def _plan(handler: Any) -> _Plan:
    plan = _plans.get(handler)
    if plan is None:
        params = handler.parsed_fn_signature.parameters
        body = params["data"].annotation if "data" in params else None

        def typed(*annotations: Any) -> tuple[str, ...]:
            return tuple(
                getattr(f.kwarg_definition, "query", None) or name
                for name, f in params.items()
                if name != "data" and f.annotation in annotations
            )

        plan = _plans[handler] = _Plan(
            body,
            typed(int, int | None),
            typed(datetime, datetime | None),
            type(None) in typing.get_args(body),
            _query_names(handler),
            frozenset(_declared_query(handler, single=True)),
        )
    return plan


async def strict_input(request: Request[Any, Any, Any]) -> None:
    """Litestar `before_request` hook: decode the body and integer query parameters strictly.

    Litestar's own parameter parsing converts leniently (`"1"` becomes 1) and ignores
    parameters a route does not take; this runs first and refuses what a strict decoder
    refuses (an API route's unknown query parameter, e.g. a misspelt filter, is a 422
    naming it), so a handler only sees strict input. The decoded body is what the handler
    gets as `data` (Litestar does not decode it again).
    """
    plan = _plan(request.route_handler)
    if plan.query is not None and request.scope["query_string"]:
        unknown = sorted(set(request.query_params) - plan.query)
        if unknown:
            raise ApiProblem(
                422, "validation-failed", f"unknown parameter {unknown[0]!r}", field=unknown[0]
            )
        for name in plan.single:
            if len(request.query_params.getall(name, ())) > 1:
                raise given_twice(name)
    for name in plan.integers:
        for raw in request.query_params.getall(name, ()):
            if not _INTEGER.match(raw):
                raise ApiProblem(
                    422,
                    "validation-failed",
                    f"{name}: must be a decimal integer (ASCII digits, at most 20)",
                    field=name,
                )
    for name in plan.datetimes:
        for raw in request.query_params.getall(name, ()):
            try:
                msgspec.json.decode(msgspec.json.encode(raw), type=datetime)
            except msgspec.ValidationError:
                raise ApiProblem(
                    422,
                    "validation-failed",
                    f"{name}: expected an RFC 3339 date-time such as 2026-11-27T10:00:00Z",
                    field=name,
                ) from None
    if plan.body is not None:
        raw = await request.body()
        if plan.body_optional and not raw.strip():
            return  # an optional body left out (e.g. a transfer receipt of everything)
        # Litestar's `data` is read from the request's JSON, which it caches in the scope:
        # given the strictly decoded struct, it passes it on instead of decoding the body
        # again (and converting it leniently), which cost as much as this decode.
        ScopeState.from_scope(request.scope).json = decode_body(raw, plan.body)
