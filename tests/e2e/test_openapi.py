"""The API describes itself (issue 10 section 3): `/schema/openapi.json` is a valid
OpenAPI document that declares the bearer scheme, every problem a route can answer, the
headers atp reads and sends, and `/schema` renders from assets atp serves itself."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from openapi_spec_validator import validate

from tests.support.server import ADMIN_TOKEN, Server, atp, running_service, service_env

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_service(service_env(None, str(tmp_path_factory.mktemp("openapi")))) as srv:
        yield srv


@pytest.fixture(scope="module")
def document(service: Server) -> dict[str, Any]:
    answer = httpx.get(f"{service.url}/schema/openapi.json", timeout=30)
    assert answer.status_code == 200
    body: dict[str, Any] = answer.json()
    return body


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in ("get", "put", "post", "delete"):
                yield path, method, operation


def test_the_document_is_valid_openapi(document: dict[str, Any]) -> None:
    """Invariant: a client generator gets a document that passes the OpenAPI validator."""
    validate(document)


def test_every_v1_route_but_the_webhook_needs_a_bearer_token(document: dict[str, Any]) -> None:
    """Invariant: the bearer scheme is declared, every /v1 route requires it (the webhook
    route instead documents its HMAC headers), and each documents its 401 problem."""
    scheme = document["components"]["securitySchemes"]["bearer"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    v1 = [(p, m, o) for p, m, o in _operations(document) if p.startswith("/v1/")]
    assert len(v1) >= 30
    for path, method, operation in v1:
        assert "401" in operation["responses"], (method, path)
        if path.startswith("/v1/webhooks/"):
            assert "security" not in operation
            headers = {p["name"] for p in operation["parameters"] if p["in"] == "header"}
            assert "X-WC-Webhook-Signature" in headers
        else:
            assert operation["security"] == [{"bearer": []}], (method, path)


def test_problems_are_one_typed_schema(document: dict[str, Any]) -> None:
    """Invariant: every 4xx/5xx a route documents is an application/problem+json `Problem`
    (type, title, status, detail, code, field?), and every route documents 500 and 503."""
    problem = document["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == {"type", "title", "status", "detail", "code"}
    assert "field" in problem["properties"]
    for path, method, operation in _operations(document):
        responses = operation["responses"]
        assert {"500", "503"} <= set(responses), (method, path)
        for status, response in responses.items():
            if int(status) >= 400:
                schema = response["content"]["application/problem+json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Problem"}, (status, path)
                assert "X-Correlation-ID" in response["headers"]
            if int(status) in (429, 503):
                assert "Retry-After" in response["headers"], (status, path)


def test_headers_and_query_parameters_read_by_hand_are_declared(
    document: dict[str, Any],
) -> None:
    """Invariant: a stock write requires `Idempotency-Key` and says it answers with
    `ATP-Position` and `Idempotent-Replayed`; an availability read declares `min_position`
    as a bounded integer."""
    receipts = document["paths"]["/v1/receipts"]["post"]
    key = next(p for p in receipts["parameters"] if p["name"] == "Idempotency-Key")
    assert key["in"] == "header" and key["required"] is True
    created = receipts["responses"]["201"]["headers"]
    assert {"ATP-Position", "Idempotent-Replayed", "X-Correlation-ID"} <= set(created)
    reads = document["paths"]["/v1/availability/{channel}/{sku}"]["get"]
    position = next(p for p in reads["parameters"] if p["name"] == "min_position")
    assert position["in"] == "query"
    assert position["schema"]["type"] == "integer" and position["schema"]["minimum"] == 0


def test_the_docs_page_works_offline(service: Server) -> None:
    """Story: an operator opens /schema on a machine with no internet access. Invariant:
    every script, stylesheet and icon the page names is a path on atp itself (no CDN),
    served 200 and non-empty."""
    page = httpx.get(f"{service.url}/schema", timeout=30)
    assert page.status_code == 200
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
    assert len(assets) >= 3, assets
    assert all(a.startswith("/") and not a.startswith("//") for a in assets), assets
    assert "cdn." not in page.text and "unpkg.com" not in page.text
    assert "fonts.googleapis" not in page.text
    for asset in assets:
        answer = httpx.get(f"{service.url}{asset}", timeout=30)
        assert answer.status_code == 200 and answer.content, asset
    bundle = httpx.get(f"{service.url}/schema-assets/swagger-ui-bundle.js", timeout=30)
    assert "SwaggerUIBundle" in bundle.text


def test_a_token_is_accepted_as_documented(service: Server, document: dict[str, Any]) -> None:
    """Story: a client written from the document alone sends `Authorization: Bearer` and
    a receipt with its Idempotency-Key. Invariant: the receipt is counted (on_hand 5) and
    the answer carries the ATP-Position header the document promises."""
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with httpx.Client(base_url=service.url, headers=headers, timeout=30) as client:
        assert (
            client.put(
                "/v1/locations/DOC-WH", json={"name": "Doc WH", "kind": "warehouse"}
            ).status_code
            == 200
        )
        answer = client.post(
            "/v1/receipts",
            json={"location": "DOC-WH", "lines": [{"sku": "DOC-SKU", "quantity": 5}]},
            headers={"Idempotency-Key": "doc-1"},
        )
        assert answer.status_code == 201, answer.text
        assert "201" in document["paths"]["/v1/receipts"]["post"]["responses"]
        assert int(answer.headers["ATP-Position"]) > 0
        item = client.get(
            "/v1/items/DOC-SKU", params={"min_position": answer.headers["ATP-Position"]}
        )
        assert item.status_code == 200
        [location] = item.json()["locations"]
        assert (location["location"], location["on_hand"]) == ("DOC-WH", 5), item.text


def test_every_success_body_is_a_typed_struct(document: dict[str, Any]) -> None:
    """Invariant: no /v1 answer that carries JSON is typed `string` (as pre-encoded bytes
    used to be): each 2xx body is a named schema, and an availability read's figures are
    integers a generated client can compare."""
    for path, method, operation in _operations(document):
        if not path.startswith("/v1/"):
            continue
        for status, response in operation["responses"].items():
            if int(status) >= 300 or "content" not in response:
                continue
            [(media, content)] = response["content"].items()
            assert media == "application/json", (method, path)
            schema = content["schema"]
            assert schema.get("type") != "string", (method, path, status)
            if schema.get("type") == "array":
                schema = schema["items"]
            assert "$ref" in schema or schema.get("type") == "object", (method, path, schema)
    schemas = document["components"]["schemas"]
    one = document["paths"]["/v1/availability/{channel}/{sku}"]["get"]["responses"]["200"]
    name = one["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert schemas[name]["properties"]["available"]["type"] == "integer"
    assert set(schemas[name]["required"]) >= {"sku", "channel", "available", "status"}


def _generated_client(
    document: dict[str, Any], where: Path, monkeypatch: pytest.MonkeyPatch
) -> Any:
    """`openapi-python-client` run on the served document; the generated package imported."""
    (where / "openapi.json").write_text(json.dumps(document))
    (where / "config.yaml").write_text("post_hooks: []\n")
    subprocess.run(
        [
            str(Path(sys.executable).parent / "openapi-python-client"),
            "generate",
            "--path=openapi.json",
            "--config=config.yaml",
            "--meta=none",
            "--output-path=atp_client",
        ],
        cwd=where,
        check=True,
        capture_output=True,
        timeout=120,
    )
    monkeypatch.syspath_prepend(str(where))
    return importlib.import_module("atp_client")


def test_the_walkthrough_through_a_generated_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Story: a storefront team generates its client from /schema/openapi.json and runs the
    README walk-through with it (demo data loaded). Invariant: every call type-checks
    against the generated models and shows the README's figures: web may sell 8 after the
    receipt of 10, 5 after the hold of 3; after shipping 3 and a return of 1 restocked and
    1 damaged, WH1 has 9 on hand, 1 damaged, 8 sellable, and the web 6."""
    env = service_env(None, str(tmp_path / "data"), ATP_ADMIN_TOKEN="dev-admin-token")
    atp("migrate", env=env)
    atp("demo", env=env)
    with running_service(env) as server:
        document = httpx.get(f"{server.url}/schema/openapi.json", timeout=30).json()
        generated = tmp_path / "client"
        generated.mkdir()
        _generated_client(document, generated, monkeypatch)
        from atp_client import AuthenticatedClient  # type: ignore[import-not-found]
        from atp_client import models as m  # type: ignore[import-not-found]
        from atp_client.api.default import (  # type: ignore[import-not-found]
            v1_availability_channel_sku_availability_one as availability,
        )
        from atp_client.api.default import (
            v1_items_sku_get_item as item,
        )
        from atp_client.api.default import (
            v1_orders_order_id_returns_return_order as return_order,
        )
        from atp_client.api.default import (
            v1_orders_order_id_shipments_ship_order as ship,
        )
        from atp_client.api.default import (
            v1_receipts_post_receipt as receipt,
        )
        from atp_client.api.default import (
            v1_reservations_reservation_id_commit_commit as commit,
        )
        from atp_client.api.default import (
            v1_reservations_reserve as reserve,
        )
        from atp_client.api.default import (
            v1_tokens_create_token as create_token,
        )

        client = AuthenticatedClient(base_url=server.url, token="dev-admin-token")
        token = create_token.sync(
            client=client,
            body=m.TokenRequest.from_dict(
                {"name": "webshop", "scopes": ["availability:read", "reservations:write"]}
            ),
        )
        assert isinstance(token, m.TokenView) and token.token, token
        moved = receipt.sync(
            client=client,
            idempotency_key="rcpt-1",
            body=m.ReceiptRequest.from_dict(
                {
                    "location": "WH1",
                    "lines": [{"sku": "SOCK-RED-42", "quantity": 10}],
                    "reference": "PO-1",
                }
            ),
        )
        assert isinstance(moved, m.MovementView), moved
        assert (moved.lines[0].location, moved.lines[0].on_hand) == ("WH1", 10)
        shop = AuthenticatedClient(base_url=server.url, token=token.token)
        web = availability.sync("web", "SOCK-RED-42", client=shop)
        assert isinstance(web, m.AvailabilityView) and (web.available, web.status) == (
            8,
            "in_stock",
        )
        held = reserve.sync(
            client=shop,
            idempotency_key="cart-1001",
            body=m.ReservationRequest.from_dict(
                {
                    "channel": "web",
                    "lines": [{"sku": "SOCK-RED-42", "quantity": 3}],
                    "ttl_seconds": 900,
                }
            ),
        )
        assert isinstance(held, m.ReservationView) and held.status == "held", held
        web = availability.sync("web", "SOCK-RED-42", client=shop)
        assert (web.available, web.status) == (5, "low_stock")
        committed = commit.sync(
            held.reservation_id,
            client=shop,
            idempotency_key="commit-1001",
            body=m.CommitRequest.from_dict({"order_id": "o-1001"}),
        )
        assert isinstance(committed, m.ReservationView) and committed.status == "committed"
        shipped = ship.sync(
            "o-1001",
            client=client,
            idempotency_key="ship-1001",
            body=m.ShipmentRequest.from_dict(
                {
                    "shipment_id": "sh-1",
                    "location": "WH1",
                    "lines": [{"sku": "SOCK-RED-42", "quantity": 3}],
                }
            ),
        )
        assert isinstance(shipped, m.OrderView) and shipped.status == "shipped", shipped
        returned = return_order.sync(
            "o-1001",
            client=client,
            idempotency_key="rma-1001",
            body=m.ReturnRequest.from_dict(
                {
                    "return_id": "rma-1",
                    "location": "WH1",
                    "lines": [
                        {"sku": "SOCK-RED-42", "quantity": 1, "disposition": "restock"},
                        {"sku": "SOCK-RED-42", "quantity": 1, "disposition": "damaged"},
                    ],
                }
            ),
        )
        assert isinstance(returned, m.OrderView), returned
        assert returned.status == "partially_returned"
        assert returned.lines[0].returned == 2
        figures = item.sync("SOCK-RED-42", client=client)
        assert isinstance(figures, m.ItemView), figures
        wh1 = next(f for f in figures.locations if f.location == "WH1")
        assert (wh1.on_hand, wh1.allocated, wh1.held, wh1.damaged, wh1.sellable) == (9, 0, 0, 1, 8)
        assert next(c for c in figures.channels if c.channel == "web").available == 6


def test_a_body_decoded_by_hand_is_declared(document: dict[str, Any]) -> None:
    """Invariant: PUT /v1/integrations/{kind}/{store} (decoded per kind, by hand) documents
    the body of each kind, strict as the decoder: required members, no unknown ones; an
    order's cancel documents its optional body (the lines to cancel)."""
    body = document["paths"]["/v1/integrations/{kind}/{store}"]["put"]["requestBody"]
    assert body["required"] is True
    kinds = body["content"]["application/json"]["schema"]["anyOf"]
    names = [k["$ref"].rsplit("/", 1)[1] for k in kinds]
    assert names == ["WooCommerceIn", "AmazonIn", "EbayIn"]
    woo = document["components"]["schemas"]["WooCommerceIn"]
    assert woo["required"] == ["url", "channel"] and woo["additionalProperties"] is False
    assert woo["properties"]["max_requests_per_second"]["exclusiveMinimum"] == 0
    cancel = document["paths"]["/v1/orders/{order_id}/cancel"]["post"]["requestBody"]
    assert cancel["required"] is False  # no body: the whole order
    lines = cancel["content"]["application/json"]["schema"]
    assert lines == {"$ref": "#/components/schemas/CancelRequest"}


def test_a_shortfall_problem_matches_the_documented_problem(
    service: Server, document: dict[str, Any]
) -> None:
    """Story: the last 2 units of a SKU, a cart asks for 3. Invariant: the 409 names the
    shortfall (requested 3, available 2), its body validates against the document's
    `Problem` schema, and the refused hold changes nothing (web still sells 2)."""
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with httpx.Client(base_url=service.url, headers=headers, timeout=30) as client:
        for code, body in (
            ("/v1/locations/LAST-WH", {"name": "Last", "kind": "warehouse"}),
            ("/v1/channels/last-web", {"locations": ["LAST-WH"], "low_stock_threshold": 0}),
        ):
            assert client.put(code, json=body).status_code == 200
        receipt = {"location": "LAST-WH", "lines": [{"sku": "LAST-1", "quantity": 2}]}
        stocked = client.post(
            "/v1/receipts", json=receipt, headers={"Idempotency-Key": "last-receipt"}
        )
        assert stocked.status_code == 201
        cart = {"channel": "last-web", "lines": [{"sku": "LAST-1", "quantity": 3}]}
        refused = client.post(
            "/v1/reservations", json=cart, headers={"Idempotency-Key": "last-cart"}
        )
        assert refused.status_code == 409
        assert refused.headers["content-type"] == "application/problem+json"
        problem = refused.json()
        assert problem["lines"] == [{"sku": "LAST-1", "requested": 3, "available": 2}]
        documented = document["paths"]["/v1/reservations"]["post"]["responses"]["409"]
        schema = documented["content"]["application/problem+json"]["schema"]
        jsonschema.validate(problem, {**schema, "components": document["components"]})
        properties = document["components"]["schemas"]["Problem"]["properties"]
        assert set(problem) <= set(properties), set(problem) - set(properties)
        left = client.get(
            "/v1/availability/last-web/LAST-1",
            params={"min_position": stocked.headers["ATP-Position"]},
        )
        assert left.json()["available"] == 2


def test_the_app_declares_its_routes_in_the_style_litestar_keeps(tmp_path: Path) -> None:
    """Story: an upgrade of Litestar turns its deprecated parameter styles (a path or query
    parameter, or `data`, without a marker; `Parameter(query=...)`) into errors, and the
    service would not start. Invariant: importing atp's HTTP layer and building the app
    raise no deprecation warning from Litestar or from atp's own modules (in a fresh
    process: a warning given once at import would not show again in this one)."""
    script = (
        "import warnings\n"
        "warnings.filterwarnings('error', category=DeprecationWarning,"
        " module=r'(api|litestar)(\\..*)?$')\n"
        "from api.bootstrap import bootstrap\n"
        "from api.http.app import create_app\n"
        "from api.settings import Settings\n"
        f"create_app(bootstrap(Settings(data_dir={str(tmp_path)!r}, admin_token='t',"
        " sweep_interval=0)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
