"""What `/schema/openapi.json` says beyond the handlers' signatures (issue 10 section 3).

Handlers answer problems as pre-encoded bytes and read headers by hand (for speed), so
Litestar cannot see them. `annotate(handlers)` documents, before the app is built, the
bearer security of every /v1 route but the public ones, and the RFC 9457 problems each
route can answer (one `Problem` schema, media type application/problem+json).
`complete(app)` then adds what Litestar's models have no handler-level field for: the
`Idempotency-Key` request header, `min_position`, a body decoded by hand (a route's
`opt["body"]`: the msgspec structs it accepts; `opt["body_required"]`, default True;
`opt["body_csv"]`: a description of the `text/csv` body it also takes), and the `ATP-Position`,
`Idempotent-Replayed`, `Retry-After` and `X-Correlation-ID` response headers.
The docs page (`/schema`) is Swagger UI served from `api/http/static/swagger-ui`
(npm `swagger-ui-dist`, Apache-2.0, licence alongside): no CDN, so it works offline.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec
from litestar import Litestar
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import (
    Components,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    Operation,
    Parameter,
    Reference,
    RequestBody,
    Schema,
    SecurityScheme,
)
from litestar.openapi.spec.enums import OpenAPIType
from litestar.static_files import create_static_files_router
from litestar.types import ControllerRouterHandler

from api.http import schemas as s
from api.http.problems import PROBLEM, TITLES

BEARER = "bearer"
ASSETS = "/schema-assets"
ASSETS_DIR = Path(__file__).parent / "static" / "swagger-ui"
WRITES = frozenset({"POST", "PUT", "DELETE"})
HMAC_HEADERS = (
    ("X-WC-Webhook-Signature", "base64 HMAC-SHA256 of the raw body with the store's secret"),
    ("X-WC-Webhook-Delivery-ID", "WooCommerce's delivery id"),
    ("X-WC-Webhook-Topic", "e.g. order.updated"),
)
CORRELATION = "X-Correlation-ID"


def openapi_config() -> OpenAPIConfig:
    """The document's config: the bearer scheme, and Swagger UI at /schema with assets
    atp serves itself (`assets_router()`)."""
    return OpenAPIConfig(
        title="atp",
        version="0.1.0",
        path="/schema",
        components=Components(
            security_schemes={
                BEARER: SecurityScheme(
                    type="http",
                    scheme="bearer",
                    description="A token from POST /v1/tokens (or ATP_ADMIN_TOKEN).",
                )
            }
        ),
        render_plugins=[
            SwaggerRenderPlugin(
                path="/",
                js_url=f"{ASSETS}/swagger-ui-bundle.js",
                css_url=f"{ASSETS}/swagger-ui.css",
                standalone_preset_js_url=f"{ASSETS}/swagger-ui-standalone-preset.js",
                favicon=f"<link rel='icon' type='image/png' href='{ASSETS}/favicon-32x32.png'>",
            )
        ],
    )


def assets_router() -> ControllerRouterHandler:
    """The docs page's vendored JavaScript, CSS and icon (public, outside /v1)."""
    return create_static_files_router(
        path=ASSETS, directories=[ASSETS_DIR], include_in_schema=False
    )


def returns(status: int, body: Any, description: str) -> dict[int, ResponseSpec]:
    """`responses=` for a route whose handler answers pre-encoded bytes (a replay, or a
    read model document): the document shows `body` (a msgspec struct) as the JSON of the
    `status` answer, the wire keeps its bytes."""
    return {
        status: ResponseSpec(data_container=body, description=description, generate_examples=False)
    }


def _problems(handler: HTTPRouteHandler, path: str) -> list[int]:
    """The problem statuses `handler` can answer (contract: docs/contract.md, Errors)."""
    methods = set(handler.http_methods)
    public = bool(handler.opt.get("public"))
    statuses = {500, 503}
    if path.startswith("/v1/"):
        statuses |= {401} if public else {401, 403, 429}
    if "{" in path:
        statuses |= {404, 422}
    if methods & WRITES:
        statuses |= {400, 409, 413, 422}
    if handler.parsed_fn_signature.parameters:
        statuses |= {400, 422}  # a missing or malformed parameter or body
    if path.startswith(("/v1/availability", "/v1/items")):
        statuses.add(422)
    if path in ("/v1/items", "/v1/reservations", "/v1/reconciliations"):
        statuses.add(404)  # a channel or location filter names nothing
    if path in ("/v1/items", "/v1/reservations", "/v1/safety-stock"):
        statuses.add(409)  # min_position not reached in time
    if path.startswith(("/v1/availability", "/v1/items/")):
        statuses.add(409)  # min_position not reached in time
    return sorted(statuses)


def annotate(handlers: Iterable[ControllerRouterHandler]) -> None:
    """Declare the security and problem answers of each route handler in `handlers`
    (mutates them; call before `Litestar(...)`)."""
    for handler in handlers:
        if not isinstance(handler, HTTPRouteHandler):
            continue
        for path in handler.paths:
            if not handler.opt.get("public") and path.startswith("/v1/"):
                handler.security = [{BEARER: []}]
            declared = dict(handler.responses or {})
            for status in _problems(handler, path):
                declared.setdefault(
                    status,
                    ResponseSpec(
                        data_container=s.Problem,
                        description=TITLES[status],
                        media_type=PROBLEM,
                        generate_examples=False,
                    ),
                )
            handler.responses = declared


def _string_header(description: str) -> OpenAPIHeader:
    return OpenAPIHeader(schema=Schema(type=OpenAPIType.STRING), description=description)


def _parameter(name: str, where: str, required: bool, schema: Schema, text: str) -> Parameter:
    return Parameter(name=name, param_in=where, required=required, schema=schema, description=text)


SNAKE = {
    "anyOf": "any_of",
    "additionalProperties": "additional_properties",
    "exclusiveMinimum": "exclusive_minimum",
    "exclusiveMaximum": "exclusive_maximum",
    "maxLength": "max_length",
    "minLength": "min_length",
    "maxItems": "max_items",
    "minItems": "min_items",
}


def _schema(json_schema: Any) -> Any:
    """A msgspec JSON schema (dict) as Litestar's OpenAPI model (Schema or Reference)."""
    if not isinstance(json_schema, dict):
        return json_schema
    if "$ref" in json_schema:
        return Reference(ref=json_schema["$ref"])
    fields: dict[str, Any] = {}
    for key, value in json_schema.items():
        name = SNAKE.get(str(key), str(key))
        if name == "type":
            value = OpenAPIType(value)
        elif name == "properties":
            value = {k: _schema(v) for k, v in value.items()}
        elif name in ("any_of", "items", "additional_properties"):
            value = [_schema(v) for v in value] if isinstance(value, list) else _schema(value)
        fields[name] = value
    return Schema(**fields)


def _request_body(structs: tuple[type, ...], components: Components, required: bool) -> RequestBody:
    """The JSON body of a route that decodes it by hand: one of `structs` (registered as
    components under their class names)."""
    refs, defined = msgspec.json.schema_components(
        structs, ref_template="#/components/schemas/{name}"
    )
    schemas = dict(components.schemas or {})
    schemas.update({name: _schema(schema) for name, schema in defined.items()})
    components.schemas = schemas
    body = _schema(refs[0]) if len(refs) == 1 else Schema(any_of=[_schema(r) for r in refs])
    content = {"application/json": OpenAPIMediaType(schema=body)}
    return RequestBody(content=content, required=required)


def _complete_operation(
    path: str, method: str, operation: Operation, handler: HTTPRouteHandler
) -> None:
    params = list(operation.parameters or [])
    names = {p.name for p in params if isinstance(p, Parameter)}
    if method == "POST" and path.startswith("/v1/") and not handler.opt.get("public"):
        required = handler.opt.get("idempotency_key") == "required"
        params.append(
            _parameter(
                "Idempotency-Key",
                "header",
                required,
                Schema(type=OpenAPIType.STRING, min_length=1, max_length=255),
                "Replays the first answer for the same key and request; 422 for another request.",
            )
        )
    reads = path.startswith(("/v1/availability", "/v1/items"))
    if method == "GET" and reads and "min_position" not in names:
        params.append(
            _parameter(
                "min_position",
                "query",
                False,
                Schema(type=OpenAPIType.INTEGER, minimum=0, maximum=s.MAX_POSITION),
                "Wait until the read model includes this ledger position (ATP-Position).",
            )
        )
    if handler.opt.get("public") and path.startswith("/v1/webhooks/"):
        for name, text in HMAC_HEADERS:
            params.append(_parameter(name, "header", False, Schema(type=OpenAPIType.STRING), text))
    operation.parameters = params or None
    for status, response in (operation.responses or {}).items():
        if not isinstance(response, OpenAPIResponse):
            continue
        headers = dict(response.headers or {})
        headers[CORRELATION] = _string_header("The request's correlation id (echoed or made).")
        code = int(status)
        if code in (429, 503):
            headers["Retry-After"] = _string_header("Seconds to wait before retrying.")
        if code < 300 and method in WRITES:
            headers["ATP-Position"] = _string_header("The ledger position of this write.")
            if method == "POST":
                headers["Idempotent-Replayed"] = _string_header(
                    "`true` when this is the replay of an earlier answer."
                )
        response.headers = headers


def complete(app: Litestar, handlers: Iterable[ControllerRouterHandler]) -> None:
    """Add the headers and parameters read by hand to `app`'s OpenAPI document (built
    here, once; Litestar caches it)."""
    by_route: dict[tuple[str, str], HTTPRouteHandler] = {}
    for handler in handlers:
        if isinstance(handler, HTTPRouteHandler):
            for path in handler.paths:
                plain = re.sub(r"\{(\w+):\w+\}", r"{\1}", path)
                for verb in handler.http_methods:
                    by_route[(plain, str(verb))] = handler
    document = app.openapi_schema
    for path, item in (document.paths or {}).items():
        for method in ("get", "put", "post", "delete", "patch"):
            operation = getattr(item, method, None)
            route = by_route.get((path, method.upper()))
            if operation is not None and route is not None:
                _complete_operation(path, method.upper(), operation, route)
                if route.opt.get("body") and operation.request_body is None:
                    components = document.components
                    assert isinstance(components, Components)
                    required = route.opt.get("body_required", True)
                    operation.request_body = _request_body(route.opt["body"], components, required)
                    if route.opt.get("body_csv"):  # a text/csv body is taken too
                        text = Schema(type=OpenAPIType.STRING, description=route.opt["body_csv"])
                        operation.request_body.content["text/csv"] = OpenAPIMediaType(schema=text)
