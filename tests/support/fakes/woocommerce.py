"""A fake WooCommerce store: the wc/v3 products API (lookup by SKU, single and batch stock
writes for products and variations), API-key auth, and outgoing webhooks.

Modelled on WooCommerce's own source (WC_REST_Controller::batch_items/check_batch_limit,
WC_REST_CRUD_Controller::update_item, the v2/v3 products and variations controllers,
WC_REST_Authentication, WC_Webhook::deliver/generate_signature/deliver_ping). Behaviour worth
knowing, all reproduced here:

* Auth. Real WooCommerce accepts HTTP Basic (or `consumer_key`/`consumer_secret` in the query
  string) only over HTTPS; over plain HTTP it requires one-legged OAuth 1.0a (HMAC-SHA1 or
  HMAC-SHA256, key = consumer secret + "&", timestamp within 15 minutes, nonce never reused)
  and ignores Basic credentials. The fake is plain HTTP, so by default (`auth="oauth1"`) it
  behaves like a real store over plain HTTP: OAuth 1.0a only. `auth="basic"` is a store that
  believes it is on HTTPS (TLS terminated in front of it, HTTPS=on): Basic and query-string
  keys are accepted. `strip_authorization=True` is a host running PHP as CGI/FastCGI that
  drops the `Authorization` header (query-string keys still work). An unknown consumer key with Basic is not an error by itself: the request
  is simply unauthenticated, so it gets the route's permission error (401
  `woocommerce_rest_cannot_view` / `_cannot_edit` / `_cannot_batch`); a known key with a wrong
  secret is 401 `woocommerce_rest_authentication_error`. A read-only key gets 401
  `woocommerce_rest_authentication_error` ("does not have write permissions") on writes.
* Order of checks, as in WP_REST_Server: authentication errors, key permissions, route
  (404 `rest_no_route`), parameter validation (400 `rest_invalid_param`), the route's
  permission callback, then the handler. So an unauthenticated PUT to an id that does not
  exist is a 400 `woocommerce_rest_product_invalid_id`, not a 401 (WooCommerce only checks
  edit permission on objects that exist).
* Single writes validate the schema: `stock_quantity` must be an integer (7.9 is 400
  `rest_invalid_param`, "7" is accepted as 7) and `manage_stock` a boolean. Batch items are
  not validated by WordPress: there `stock_quantity` goes through `wc_stock_amount` (intval:
  7.9 -> 7, "abc" -> 0) and `manage_stock` through `wc_string_to_bool`.
* `stock_quantity` is applied only when the product manages stock after `manage_stock` from
  the same request is applied; a product that does not manage stock gets its quantity cleared
  (null) on every write, so `{"manage_stock": false}` erases the quantity. The store-wide
  setting (`store_manages_stock=False`) makes the products route ignore stock entirely (the
  variations route does not look at it, as in WooCommerce).
* A variation id on the products route is 404 `woocommerce_rest_invalid_product_id`; an
  unknown id is 400 `woocommerce_rest_product_invalid_id` on the products route and 400
  `woocommerce_rest_product_variation_invalid_id` on the variations route; a variation under
  another parent is 403 `woocommerce_rest_cannot_edit` (401 when unauthenticated). In a
  variations batch the fake answers a per-item `..._product_variation_invalid_id` for ids that
  are not variations of that parent; real WooCommerce v3 would silently re-parent them, which
  no client should rely on.
* Batches: at most `batch_limit` (100) items over create+update+delete, else the whole
  request is 413 `woocommerce_rest_request_entity_too_large` and nothing is applied. Otherwise
  200 with one entry per item, each either the object or `{"id", "error": {"code", "message",
  "data": {"status"}}}`; items are applied one by one (not transactional).
* SKU lookup (`GET /products?sku=A,B`) matches products and variations. Like MySQL's default
  collation it is case-insensitive and ignores trailing spaces, but not leading ones: `sku=A,
  B` looks for " B". With more than one SKU the whole string is also tried as one SKU.
  Default order is newest first. per_page is 1..100 (default 10); headers X-WP-Total,
  X-WP-TotalPages and Link.
* Permalinks: with `pretty_permalinks=False` the API is only at `/?rest_route=/wc/v3/...`
  (`/wp-json/...` is the theme's HTML 404), as on a store with plain permalinks; the
  `rest_route` form works on every store. OAuth 1.0a signs such a request over the home URL
  (`http://host/`) with `rest_route` among the query parameters.
* JSON is written like PHP's json_encode: compact, non-ASCII as \\uXXXX and "/" as "\\/".
* Webhooks. Every successful write of a product or variation queues a `product.updated`
  delivery to `webhook_url` (the echo of our own write). Deliveries run on a background
  thread, are coalesced per resource while pending and the payload is built at delivery time
  (`webhook_delay` holds them back to make that observable). Signature: base64 of
  HMAC-SHA256 over the exact body bytes with the webhook secret. X-WC-Webhook-Delivery-ID
  is a hash of the webhook id and the current second (not unique). A delivery answered
  outside 200..302 counts as a failure; WC_Webhook::failed_delivery disables the webhook on
  the failure after `failure_count` exceeds 5 (the 7th consecutive failure); a success resets
  the count. Failed deliveries are never retried. `send_order_webhook` and `send_ping` let
  tests drive a webhook receiver.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import http.client
import itertools
import json
import math
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from tests.support.fakes.base import FakeServer, RecordedRequest, Response

API = "/wp-json/wc/v3"
WC_VERSION = "9.4.2"
WP_VERSION = "6.7.1"
USER_AGENT = f"WooCommerce/{WC_VERSION} Hookshot (WordPress/{WP_VERSION})"
VARIATION_ON_PRODUCT_ROUTE = (
    "To manipulate product variations you should use the "
    "/products/&lt;product_id&gt;/variations/&lt;id&gt; endpoint."
)
OAUTH_PARAMS = (
    "oauth_consumer_key",
    "oauth_timestamp",
    "oauth_nonce",
    "oauth_signature",
    "oauth_signature_method",
)
ORDER_STATUSES = (
    "pending",
    "processing",
    "on-hold",
    "completed",
    "cancelled",
    "refunded",
    "failed",
    "checkout-draft",
    "trash",
)


def wp_json_encode(payload: Any) -> bytes:
    """Encode like WordPress' wp_json_encode (PHP json_encode with no flags): compact,
    ASCII-only with \\uXXXX escapes, and every "/" escaped as "\\/". A receiver that
    re-serialises the parsed JSON gets different bytes, so signatures must be checked over
    the raw body."""
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=True)
    # "/" only ever occurs inside JSON strings, so this is exact.
    return text.replace("/", "\\/").encode("ascii")


def webhook_signature(body: bytes, secret: str) -> str:
    """X-WC-Webhook-Signature: base64(HMAC-SHA256(raw body, secret))."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def _rfc3986(value: str) -> str:
    return quote(value, safe="~")


def oauth1_signature(
    method: str,
    url: str,
    params: dict[str, str],
    consumer_secret: str,
    signature_method: str = "HMAC-SHA256",
) -> str:
    """The one-legged OAuth 1.0a signature WooCommerce checks over plain HTTP
    (WC_REST_Authentication::check_oauth_signature). `url` is scheme://host[:port]/path
    without the query string; `params` are the query parameters and oauth_* parameters,
    without oauth_signature. Useful to build signed requests in tests."""
    base_uri = _rfc3986(url)
    pairs = []
    for key in sorted(params):
        joined = f"{_rfc3986(key)}={_rfc3986(str(params[key]))}"
        pairs.append(_rfc3986(joined))
    string_to_sign = f"{method.upper()}&{base_uri}&{'%26'.join(pairs)}"
    algorithm = {"HMAC-SHA1": hashlib.sha1, "HMAC-SHA256": hashlib.sha256}[signature_method]
    digest = hmac.new(f"{consumer_secret}&".encode(), string_to_sign.encode(), algorithm).digest()
    return base64.b64encode(digest).decode()


def wc_stock_amount(value: Any) -> int:
    """PHP intval as used by wc_stock_amount: truncates toward zero; junk is 0."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) else 0
    if isinstance(value, str):
        match = re.match(r"\s*([+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?)", value)
        if not match:
            return 0
        try:
            return int(float(match.group(1)))
        except (ValueError, OverflowError):
            return 0
    return 0


def wc_string_to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value.lower() in ("yes", "true", "1")
    return bool(value == 1)


def _rest_is_boolean(value: Any) -> bool:
    if isinstance(value, bool | int):
        return True
    return isinstance(value, str) and value.lower() in ("true", "false", "0", "1")


def _rest_sanitize_boolean(value: Any) -> bool:
    if isinstance(value, str):
        return value.lower() not in ("false", "0", "")
    return bool(value)


def _rest_is_integer(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    if isinstance(value, float):
        return math.isfinite(value) and value == round(value)
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return False
        return math.isfinite(number) and number == round(number)
    return False


def _wp_date(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


@dataclass
class _Product:
    id: int
    sku: str
    type: str  # "simple" | "variable" | "variation"
    parent_id: int
    name: str
    manage_stock: bool
    stock_quantity: int | None
    stock_status: str
    created: datetime
    modified: datetime
    children: list[int] = field(default_factory=list)
    status: str = "publish"
    backorders: str = "no"


@dataclass
class ApiKey:
    consumer_key: str
    consumer_secret: str
    permissions: str = "read_write"  # "read" | "write" | "read_write"
    nonces: dict[str, float] = field(default_factory=dict)


@dataclass
class StockWrite:
    """One successful write of a product or variation through the API."""

    id: int
    sku: str
    route: str  # "product" | "variation" | "batch" | "variation_batch"
    before: int | None
    after: int | None
    manage_stock: bool
    sent: dict[str, Any]
    time: float


@dataclass
class WebhookDelivery:
    """One webhook POST the fake made (or, with `error`, tried to make)."""

    url: str
    topic: str | None
    resource: str | None
    event: str | None
    resource_id: int | None
    webhook_id: int
    delivery_id: str | None
    headers: dict[str, str]
    body: bytes
    status: int | None
    response_body: bytes
    error: str | None
    time: float

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 303

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class _WebhookState:
    status: str = "active"  # "active" | "disabled"
    failure_count: int = 0


class _WooError(Exception):
    def __init__(self, status: int, code: str, message: str, **data: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.data = data

    def payload(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "data": {"status": self.status, **self.data},
        }


def _invalid_param(name: str, message: str) -> _WooError:
    return _WooError(
        400,
        "rest_invalid_param",
        f"Invalid parameter(s): {name}",
        params={name: message},
        details={name: {"code": "rest_invalid_type", "message": message, "data": None}},
    )


_ROUTES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(rf"^{API}/products/?$"), "products"),
    (re.compile(rf"^{API}/products/batch/?$"), "batch"),
    (re.compile(rf"^{API}/products/(?P<id>\d+)/?$"), "product"),
    (re.compile(rf"^{API}/products/(?P<parent>\d+)/variations/?$"), "variations"),
    (re.compile(rf"^{API}/products/(?P<parent>\d+)/variations/batch/?$"), "variation_batch"),
    (re.compile(rf"^{API}/products/(?P<parent>\d+)/variations/(?P<id>\d+)/?$"), "variation"),
    (re.compile(rf"^{API}/orders/?$"), "orders"),
    (re.compile(rf"^{API}/orders/(?P<order>\d+)/refunds/?$"), "order_refunds"),
]
_READ = {"GET", "HEAD"}
_EDIT = {"POST", "PUT", "PATCH"}


class FakeWooCommerce(FakeServer):
    """A WooCommerce store on 127.0.0.1. See the module docstring for the behaviour.

    Constructor:
        consumer_key, consumer_secret: the read/write API key (more with `add_key`).
        auth: "oauth1" (as a real store over plain HTTP: OAuth 1.0a only) or "basic" (a
            store that believes it is on HTTPS: Basic or query-string keys accepted too).
        strip_authorization: the host drops the Authorization header (CGI/FastCGI PHP).
        pretty_permalinks: False serves the API only at `/?rest_route=/wc/v3/...`.
        webhook_url: where `product.updated` echoes go (None: no echo). `configure_webhook`
            changes it at runtime.
        webhook_secret, webhook_id: of that product webhook.
        order_webhook_secret, order_webhook_id: defaults for `send_order_webhook`.
        webhook_delay: seconds a queued delivery waits (deliveries coalesce meanwhile).
        webhook_timeout: seconds to wait for the receiver.
        batch_limit: the woocommerce_rest_batch_items_limit filter (100).
        store_manages_stock: the "Enable stock management" store setting.
    """

    name = "woocommerce"

    def __init__(
        self,
        consumer_key: str = "ck_fake",
        consumer_secret: str = "cs_fake",
        *,
        auth: Literal["basic", "oauth1"] = "oauth1",
        strip_authorization: bool = False,
        pretty_permalinks: bool = True,
        webhook_url: str | None = None,
        webhook_secret: str = "fake-webhook-secret",
        webhook_id: int = 1,
        order_webhook_secret: str | None = None,
        order_webhook_id: int = 2,
        webhook_delay: float = 0.0,
        webhook_timeout: float = 10.0,
        batch_limit: int = 100,
        store_manages_stock: bool = True,
        first_id: int = 100,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host=host, port=port)
        if auth not in ("basic", "oauth1"):
            raise ValueError("auth must be 'basic' or 'oauth1'")
        self.auth = auth
        self.strip_authorization = strip_authorization
        self.pretty_permalinks = pretty_permalinks
        self.batch_limit = batch_limit
        self.store_manages_stock = store_manages_stock
        self._keys: dict[str, ApiKey] = {}
        self.add_key(consumer_key, consumer_secret, "read_write")
        self._products: dict[int, _Product] = {}
        self._ids = itertools.count(first_id)
        self._unknown: set[int] = set()
        self._writes: list[StockWrite] = []
        # webhooks
        self.webhook_url = webhook_url
        self.webhook_secret = webhook_secret
        self.webhook_id = webhook_id
        self.order_webhook_secret = (
            order_webhook_secret if order_webhook_secret is not None else webhook_secret
        )
        self.order_webhook_id = order_webhook_id
        self.webhook_delay = webhook_delay
        self.webhook_timeout = webhook_timeout
        self._hooks: dict[int, _WebhookState] = {}
        self._deliveries: list[WebhookDelivery] = []
        self._queue: list[tuple[float, str, int]] = []  # (due, topic, resource id)
        self._pending: set[tuple[str, int]] = set()
        self._in_flight = 0
        self._wake = threading.Condition(self._lock)
        self._worker: threading.Thread | None = None
        self._stopping = False

    # =====================================================================================
    # Seeding and reading state (thread-safe)
    # =====================================================================================
    def add_key(self, consumer_key: str, consumer_secret: str, permissions: str = "read") -> None:
        """Add an API key; permissions "read", "write" or "read_write"."""
        if permissions not in ("read", "write", "read_write"):
            raise ValueError("permissions must be read, write or read_write")
        with self._lock:
            self._keys[consumer_key] = ApiKey(consumer_key, consumer_secret, permissions)

    def add_product(
        self,
        sku: str,
        stock: int | None = None,
        *,
        type: Literal["simple", "variable"] = "simple",
        name: str | None = None,
        manage_stock: bool | None = None,
    ) -> int:
        """Create a product and return its id. With `stock` it manages stock with that
        quantity; without, it does not manage stock (stock_quantity null) unless
        `manage_stock=True`. A product becomes "variable" when a variation is added."""
        manages = (stock is not None) if manage_stock is None else manage_stock
        with self._lock:
            self._check_sku_free(sku)
            now = datetime.now(UTC)
            pid = next(self._ids)
            self._products[pid] = _Product(
                id=pid,
                sku=sku,
                type=type,
                parent_id=0,
                name=name or f"Product {sku}",
                manage_stock=manages,
                stock_quantity=stock if manages else None,
                stock_status="instock",
                created=now,
                modified=now,
            )
            self._refresh_status(self._products[pid])
            return pid

    def add_variation(
        self,
        parent_id: int,
        sku: str,
        stock: int | None = None,
        *,
        manage_stock: bool | None = None,
    ) -> int:
        """Create a variation of product `parent_id` (which becomes variable) and return
        its id; `stock` as in `add_product`."""
        manages = (stock is not None) if manage_stock is None else manage_stock
        with self._lock:
            parent = self._products.get(parent_id)
            if parent is None or parent.type == "variation":
                raise KeyError(f"no product {parent_id} to add a variation to")
            self._check_sku_free(sku)
            parent.type = "variable"
            now = datetime.now(UTC)
            vid = next(self._ids)
            self._products[vid] = _Product(
                id=vid,
                sku=sku,
                type="variation",
                parent_id=parent_id,
                name=f"{parent.name} - {sku}",
                manage_stock=manages,
                stock_quantity=stock if manages else None,
                stock_status="instock",
                created=now,
                modified=now,
            )
            parent.children.append(vid)
            self._refresh_status(self._products[vid])
            return vid

    def delete_product(self, product_id: int) -> None:
        """Delete a product (with its variations) or a variation, as in the admin."""
        with self._lock:
            self._delete(product_id)

    def id_of(self, sku: str) -> int:
        with self._lock:
            return self._by_sku(sku).id

    def stock_of(self, sku: str) -> int | None:
        """The stock_quantity of the product or variation with this SKU (None when it does
        not manage stock). KeyError for an unknown SKU."""
        with self._lock:
            return self._by_sku(sku).stock_quantity

    def manages_stock(self, sku: str) -> bool:
        with self._lock:
            return self._by_sku(sku).manage_stock

    def product(self, product_id: int) -> dict[str, Any]:
        """A product or variation as the products route renders it."""
        with self._lock:
            return self._render(self._products[product_id])

    def products(self) -> list[dict[str, Any]]:
        """Every product and variation (as the products route renders them), by id."""
        with self._lock:
            return [self._render(p) for _, p in sorted(self._products.items())]

    def set_stock(self, sku: str, quantity: int | None) -> None:
        """Change stock from the store's side (an admin edit, a sale recorded by
        WooCommerce): no webhook, no request log, not counted as an API write."""
        with self._lock:
            product = self._by_sku(sku)
            product.manage_stock = quantity is not None
            product.stock_quantity = quantity
            product.modified = datetime.now(UTC)
            self._refresh_status(product)

    def record_sale(self, sku: str, quantity: int = 1) -> int | None:
        """WooCommerce reducing stock for an order (wc_update_product_stock): decrements a
        managed quantity, no product webhook. Returns the new quantity."""
        with self._lock:
            product = self._by_sku(sku)
            if product.manage_stock and product.stock_quantity is not None:
                product.stock_quantity -= quantity
                product.modified = datetime.now(UTC)
                self._refresh_status(product)
            return product.stock_quantity

    def make_unknown(self, *product_ids: int) -> None:
        """From now on these ids behave as deleted (writes get invalid-id errors, lookups
        do not return them) until `make_known`."""
        with self._lock:
            self._unknown.update(product_ids)

    def make_known(self, *product_ids: int) -> None:
        with self._lock:
            self._unknown.difference_update(product_ids or set(self._unknown))

    @property
    def unknown_ids(self) -> set[int]:
        with self._lock:
            return set(self._unknown)

    def writes(self, sku: str | None = None) -> list[StockWrite]:
        """Successful API writes, oldest first."""
        with self._lock:
            return [w for w in self._writes if sku is None or w.sku == sku]

    @property
    def write_count(self) -> int:
        with self._lock:
            return len(self._writes)

    # =====================================================================================
    # Webhooks
    # =====================================================================================
    def configure_webhook(
        self,
        url: str | None,
        *,
        secret: str | None = None,
        webhook_id: int | None = None,
        delay: float | None = None,
    ) -> None:
        """Point the product.updated echo somewhere else (None: no echo); re-enables it."""
        with self._lock:
            self.webhook_url = url
            if secret is not None:
                self.webhook_secret = secret
            if webhook_id is not None:
                self.webhook_id = webhook_id
            if delay is not None:
                self.webhook_delay = delay
            self._hooks.pop(self.webhook_id, None)

    def webhook_state(self, webhook_id: int | None = None) -> dict[str, Any]:
        """{"status": "active"|"disabled", "failure_count": n} of a webhook."""
        with self._lock:
            state = self._hooks.get(webhook_id or self.webhook_id, _WebhookState())
            return {"status": state.status, "failure_count": state.failure_count}

    def enable_webhook(self, webhook_id: int | None = None) -> None:
        with self._lock:
            self._hooks.pop(webhook_id or self.webhook_id, None)

    def webhook_deliveries(self, topic: str | None = None) -> list[WebhookDelivery]:
        with self._lock:
            return [d for d in self._deliveries if topic is None or d.topic == topic]

    def clear_webhook_deliveries(self) -> None:
        with self._lock:
            self._deliveries.clear()

    def wait_for_webhooks(self, timeout: float = 5.0) -> list[WebhookDelivery]:
        """Wait until no echo delivery is queued or in flight; returns all deliveries."""
        deadline = time.monotonic() + timeout
        with self._wake:
            while self._queue or self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("webhook deliveries still pending")
                self._wake.wait(min(left, 0.05))
            return list(self._deliveries)

    def send_order_webhook(
        self,
        order: dict[str, Any],
        topic: str = "order.updated",
        *,
        url: str | None = None,
        secret: str | None = None,
        webhook_id: int | None = None,
        signature: str | None = None,
        source: str | None = None,
    ) -> WebhookDelivery:
        """POST an order webhook now (synchronously) the way WooCommerce delivers it and
        return the delivery (status and body of the receiver's answer included).

        `order` needs at least `id`; missing fields are filled in (status "processing",
        line_items [], refunds [], dates, currency), each line item gets `id`, `name`,
        `product_id`, `variation_id` (0), `quantity` and `sku` if missing. `signature`
        overrides the computed signature (to test rejection); `secret` signs with another
        secret. A webhook disabled after repeated failures delivers nothing (error
        "disabled")."""
        payload = self.build_order_payload(order)
        resource, _, event = topic.partition(".")
        return self._deliver(
            url=url or self.webhook_url,
            topic=topic,
            resource=resource,
            event=event,
            resource_id=int(payload["id"]),
            webhook_id=webhook_id if webhook_id is not None else self.order_webhook_id,
            body=wp_json_encode(payload),
            secret=secret if secret is not None else self.order_webhook_secret,
            signature=signature,
            source=source,
        )

    def send_ping(
        self, webhook_id: int | None = None, *, url: str | None = None
    ) -> WebhookDelivery:
        """The ping WooCommerce sends when a webhook is created: form body
        `webhook_id=<id>`, no X-WC-Webhook-* headers, no signature. WooCommerce treats
        anything but 200 as a failed ping."""
        target = url or self.webhook_url
        if target is None:
            raise ValueError("no webhook url")
        hook = webhook_id if webhook_id is not None else self.webhook_id
        body = f"webhook_id={hook}".encode()
        headers = {
            "User-Agent": USER_AGENT,
            "Content-Type": "application/x-www-form-urlencoded; charset=UTF-8",
        }
        return self._post(target, body, headers, None, None, None, None, hook, None)

    @staticmethod
    def build_order_payload(order: dict[str, Any]) -> dict[str, Any]:
        """An order as wc/v3 renders it, from the fields a test cares about."""
        if "id" not in order:
            raise ValueError("order needs an id")
        now = _wp_date(datetime.now(UTC))
        payload: dict[str, Any] = {
            "id": order["id"],
            "parent_id": 0,
            "status": "processing",
            "currency": "EUR",
            "date_created": now,
            "date_created_gmt": now,
            "date_modified": now,
            "date_modified_gmt": now,
            "line_items": [],
            "refunds": [],
        }
        payload.update(order)
        items = []
        for n, item in enumerate(payload.get("line_items") or [], start=1):
            line = {
                "id": n,
                "name": item.get("sku") or f"Item {n}",
                "product_id": 0,
                "variation_id": 0,
                "quantity": 1,
                "sku": "",
            }
            line.update(item)
            items.append(line)
        payload["line_items"] = items
        return payload

    def _on_start(self) -> None:
        self._stopping = False
        self._worker = threading.Thread(target=self._deliver_loop, name="wc-webhooks", daemon=True)
        self._worker.start()

    def _on_stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        if self._worker is not None:
            self._worker.join(timeout=self.webhook_timeout + 2)
            self._worker = None

    def _queue_product_updated(self, product_id: int) -> None:
        # Called with the lock held.
        if not self.webhook_url or self._hook(self.webhook_id).status != "active":
            return
        key = ("product.updated", product_id)
        if key in self._pending:
            return  # coalesced: the pending delivery will carry the latest state
        self._pending.add(key)
        self._queue.append((time.monotonic() + self.webhook_delay, "product.updated", product_id))
        self._wake.notify_all()

    def _deliver_loop(self) -> None:
        while True:
            with self._wake:
                while not self._stopping:
                    now = time.monotonic()
                    if self._queue and self._queue[0][0] <= now:
                        break
                    wait = self._queue[0][0] - now if self._queue else 0.5
                    self._wake.wait(min(max(wait, 0.001), 0.5))
                if self._stopping:
                    self._queue.clear()
                    self._pending.clear()
                    self._wake.notify_all()
                    return
                _, topic, resource_id = self._queue.pop(0)
                self._pending.discard((topic, resource_id))
                product = self._products.get(resource_id)
                url = self.webhook_url
                if product is None or url is None:
                    self._wake.notify_all()
                    continue
                # The payload is built at delivery time: a snapshot of the product now.
                body = wp_json_encode(self._render(product))
                secret = self.webhook_secret
                hook = self.webhook_id
                self._in_flight += 1
            try:
                self._deliver(
                    url=url,
                    topic=topic,
                    resource="product",
                    event="updated",
                    resource_id=resource_id,
                    webhook_id=hook,
                    body=body,
                    secret=secret,
                )
            finally:
                with self._wake:
                    self._in_flight -= 1
                    self._wake.notify_all()

    def _hook(self, webhook_id: int) -> _WebhookState:
        return self._hooks.setdefault(webhook_id, _WebhookState())

    def _deliver(
        self,
        *,
        url: str | None,
        topic: str,
        resource: str,
        event: str,
        resource_id: int,
        webhook_id: int,
        body: bytes,
        secret: str,
        signature: str | None = None,
        source: str | None = None,
    ) -> WebhookDelivery:
        if url is None:
            raise ValueError("no webhook url")
        with self._lock:
            disabled = self._hook(webhook_id).status != "active"
        delivery_id = hmac.new(
            b"fake-wp-salt", f"{webhook_id}{int(time.time())}".encode(), hashlib.md5
        ).hexdigest()
        headers = {
            "User-Agent": USER_AGENT,
            "Content-Type": "application/json",
            "X-WC-Webhook-Source": source or (f"{self.url}/" if self.running else "http://shop/"),
            "X-WC-Webhook-Topic": topic,
            "X-WC-Webhook-Resource": resource,
            "X-WC-Webhook-Event": event,
            "X-WC-Webhook-Signature": (
                signature if signature is not None else webhook_signature(body, secret)
            ),
            "X-WC-Webhook-ID": str(webhook_id),
            "X-WC-Webhook-Delivery-ID": delivery_id,
        }
        if disabled:
            delivery = WebhookDelivery(
                url, topic, resource, event, resource_id, webhook_id, delivery_id, headers,
                body, None, b"", "disabled", time.time(),
            )  # fmt: skip
            with self._lock:
                self._deliveries.append(delivery)
            return delivery
        delivery = self._post(
            url, body, headers, topic, resource, event, resource_id, webhook_id, delivery_id
        )
        with self._lock:
            state = self._hook(webhook_id)
            if delivery.ok:
                state.failure_count = 0
            elif state.failure_count > 5:
                state.status = "disabled"
            else:
                state.failure_count += 1
        return delivery

    def _post(
        self,
        url: str,
        body: bytes,
        headers: dict[str, str],
        topic: str | None,
        resource: str | None,
        event: str | None,
        resource_id: int | None,
        webhook_id: int,
        delivery_id: str | None,
    ) -> WebhookDelivery:
        parts = urlsplit(url)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        status: int | None = None
        answer = b""
        error: str | None = None
        conn_cls = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        conn = conn_cls(parts.hostname or "127.0.0.1", parts.port, timeout=self.webhook_timeout)
        try:
            conn.request("POST", path, body=body, headers=headers)
            response = conn.getresponse()
            status = response.status
            answer = response.read()
        except (OSError, http.client.HTTPException) as exc:
            error = repr(exc)
        finally:
            conn.close()
        delivery = WebhookDelivery(
            url, topic, resource, event, resource_id, webhook_id, delivery_id, headers, body,
            status, answer, error, time.time(),
        )  # fmt: skip
        with self._lock:
            self._deliveries.append(delivery)
        return delivery

    # =====================================================================================
    # Internals on state (lock held)
    # =====================================================================================
    def _check_sku_free(self, sku: str, exclude: int | None = None) -> None:
        if not sku:
            return
        wanted = self._sku_key(sku)
        for p in self._products.values():
            if p.id != exclude and p.sku and self._sku_key(p.sku) == wanted:
                raise ValueError(f"SKU {sku!r} already used by {p.id}")

    @staticmethod
    def _sku_key(sku: str) -> str:
        return sku.rstrip(" ").casefold()

    def _by_sku(self, sku: str) -> _Product:
        wanted = self._sku_key(sku)
        for p in self._products.values():
            if p.sku and self._sku_key(p.sku) == wanted:
                return p
        raise KeyError(sku)

    def _get(self, product_id: int) -> _Product | None:
        if product_id in self._unknown:
            return None
        return self._products.get(product_id)

    def _delete(self, product_id: int) -> None:
        product = self._products.pop(product_id)
        for child in product.children:
            self._products.pop(child, None)
        if product.parent_id and product.parent_id in self._products:
            siblings = self._products[product.parent_id].children
            if product_id in siblings:
                siblings.remove(product_id)

    @staticmethod
    def _refresh_status(product: _Product) -> None:
        if product.manage_stock and product.stock_quantity is not None:
            product.stock_status = "instock" if product.stock_quantity > 0 else "outofstock"

    def _links(self, product: _Product, variation_route: bool) -> dict[str, Any]:
        base = f"{self.url}{API}" if self.running else API
        if variation_route:
            links = {
                "self": [{"href": f"{base}/products/{product.parent_id}/variations/{product.id}"}],
                "collection": [{"href": f"{base}/products/{product.parent_id}/variations"}],
                "up": [{"href": f"{base}/products/{product.parent_id}"}],
            }
        else:
            links = {
                "self": [{"href": f"{base}/products/{product.id}"}],
                "collection": [{"href": f"{base}/products"}],
            }
            if product.parent_id:
                links["up"] = [{"href": f"{base}/products/{product.parent_id}"}]
        return links

    def _render(self, product: _Product, variation_route: bool = False) -> dict[str, Any]:
        home = self.url if self.running else "http://shop"
        slug = re.sub(r"[^a-z0-9]+", "-", product.name.lower()).strip("-")
        data: dict[str, Any] = {"id": product.id}
        if not variation_route:
            data.update({"name": product.name, "slug": slug, "type": product.type})
            data["parent_id"] = product.parent_id
        data.update(
            {
                "permalink": f"{home}/product/{slug}/",
                "date_created": _wp_date(product.created),
                "date_created_gmt": _wp_date(product.created),
                "date_modified": _wp_date(product.modified),
                "date_modified_gmt": _wp_date(product.modified),
                "status": product.status,
                "sku": product.sku,
                "price": "",
                "manage_stock": product.manage_stock,
                "stock_quantity": product.stock_quantity,
                "stock_status": product.stock_status,
                "backorders": product.backorders,
            }
        )
        if not variation_route:
            data["variations"] = list(product.children) if product.type == "variable" else []
        data["_links"] = self._links(product, variation_route)
        return data

    # =====================================================================================
    # HTTP
    # =====================================================================================
    def error_body(self, status: int, reason: str, kind: str) -> Response:
        code = {429: "rest_too_many_requests", 503: "service_unavailable"}.get(
            status, "internal_server_error"
        )
        payload = {"code": code, "message": reason, "data": {"status": status}}
        return self._json(status, payload)

    @staticmethod
    def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
        all_headers = {"Content-Type": "application/json; charset=UTF-8"}
        all_headers.update(headers or {})
        return Response(status, wp_json_encode(payload), all_headers)

    def _error(self, err: _WooError) -> Response:
        return self._json(err.status, err.payload())

    def handle(self, request: RecordedRequest) -> Response:
        if self.strip_authorization:
            headers = {k: v for k, v in request.headers.items() if k != "authorization"}
            request = dataclasses.replace(request, headers=headers)
        rest_route = request.param("rest_route")
        routed = request
        if request.path in ("/", "/index.php") and rest_route:
            query = {k: v for k, v in request.query.items() if k != "rest_route"}
            routed = dataclasses.replace(
                request, path="/wp-json" + quote(rest_route, safe="/,"), query=query
            )
        elif not (self.pretty_permalinks and request.path.startswith("/wp-json")):
            return Response(
                404, b"<html><body>Not Found</body></html>", {"Content-Type": "text/html"}
            )
        try:
            return self._handle(routed, signed=request)
        except _WooError as err:
            return self._error(err)

    def _handle(self, request: RecordedRequest, signed: RecordedRequest) -> Response:
        """`request` routed (a `rest_route` request as its /wp-json path); `signed` as sent,
        which is what OAuth 1.0a signs."""
        key = self._authenticate(signed)
        if key is not None:
            self._check_key_permissions(key, request.method)
        route, match = self._route(request)
        authenticated = key is not None
        if route in ("products", "variations"):
            if request.method not in _READ:
                raise self._no_route()
            return self._list(request, authenticated, match)
        if route in ("product", "variation") and request.method in _READ:
            return self._get_item(request, route, authenticated, match)
        if route in ("product", "variation") and request.method in _EDIT:
            return self._update_single(request, route, authenticated, match)
        if route in ("batch", "variation_batch") and request.method in _EDIT:
            return self._batch(request, route, authenticated, match)
        if route in ("orders", "order_refunds") and request.method in _READ:
            return self._orders_route(request, route, authenticated, match)
        raise self._no_route()

    @staticmethod
    def _no_route() -> _WooError:
        return _WooError(
            404, "rest_no_route", "No route was found matching the URL and request method."
        )

    @staticmethod
    def _route(request: RecordedRequest) -> tuple[str | None, dict[str, str]]:
        path = unquote(request.path)
        for pattern, name in _ROUTES:
            match = pattern.match(path)
            if match:
                return name, match.groupdict()
        return None, {}

    # -- authentication --------------------------------------------------------------------
    def _authenticate(self, request: RecordedRequest) -> ApiKey | None:
        """Returns the key, None when unauthenticated; raises for authentication errors."""
        error: _WooError | None = None
        if self.auth == "basic":
            key, error = self._basic(request)
            if key is not None:
                return key
        key, oauth_error = self._oauth(request)
        if key is not None and oauth_error is None:
            return key
        error = oauth_error or error
        if error is not None:
            raise error
        return None

    def _basic(self, request: RecordedRequest) -> tuple[ApiKey | None, _WooError | None]:
        consumer_key = request.param("consumer_key") or ""
        consumer_secret = request.param("consumer_secret") or ""
        if not (consumer_key and consumer_secret):
            consumer_key = consumer_secret = ""
            header = request.header("authorization") or ""
            if header[:6].lower() == "basic ":
                try:
                    decoded = base64.b64decode(header[6:].strip()).decode()
                except (ValueError, UnicodeDecodeError):
                    decoded = ""
                consumer_key, _, consumer_secret = decoded.partition(":")
        if not consumer_key or not consumer_secret:
            return None, None
        with self._lock:
            key = self._keys.get(consumer_key)
        if key is None:
            return None, None
        if not hmac.compare_digest(key.consumer_secret, consumer_secret):
            return None, _WooError(
                401, "woocommerce_rest_authentication_error", "Consumer secret is invalid."
            )
        return key, None

    def _oauth(self, request: RecordedRequest) -> tuple[ApiKey | None, _WooError | None]:
        params: dict[str, str] = {k: v[-1] for k, v in request.query.items()}
        if "form-urlencoded" in (request.header("content-type") or ""):
            params.update(dict(parse_qsl(request.body.decode("utf-8", "replace"))))
        header = (request.header("authorization") or "").strip()
        if header.startswith("OAuth "):
            for name, quoted, bare in re.findall(r'(oauth_[a-z_-]*)=(?:"([^"]*)"|([^,]*))', header):
                params[name] = unquote(quoted or bare)
        missing = [p for p in OAUTH_PARAMS if not params.get(p)]
        if len(missing) == len(OAUTH_PARAMS):
            return None, None

        def fail(
            message: str, code: str = "woocommerce_rest_authentication_error"
        ) -> tuple[None, _WooError]:
            return None, _WooError(401, code, message)

        if missing:
            label = "parameter" if len(missing) == 1 else "parameters"
            return fail(
                f"Missing OAuth {label} {', '.join(missing)}",
                "woocommerce_rest_authentication_missing_parameter",
            )
        with self._lock:
            key = self._keys.get(params["oauth_consumer_key"])
        if key is None:
            return fail("Consumer key is invalid.")
        given = unquote(params.pop("oauth_signature").replace(" ", "+"))
        method = params["oauth_signature_method"]
        if method not in ("HMAC-SHA1", "HMAC-SHA256"):
            return fail("Invalid signature - signature method is invalid.")
        expected = oauth1_signature(
            request.method, f"{self.url}{request.path}", params, key.consumer_secret, method
        )
        if not hmac.compare_digest(expected, given):
            return fail("Invalid signature - provided signature does not match.")
        try:
            timestamp = int(params["oauth_timestamp"])
        except ValueError:
            return fail("Invalid timestamp.")
        now = time.time()
        if abs(now - timestamp) > 15 * 60:
            return fail("Invalid timestamp.")
        nonce = params["oauth_nonce"]
        with self._lock:
            key.nonces = {n: t for n, t in key.nonces.items() if t >= now - 15 * 60}
            if nonce in key.nonces:
                return fail("Invalid nonce - nonce has already been used.")
            key.nonces[nonce] = float(timestamp)
        return key, None

    @staticmethod
    def _check_key_permissions(key: ApiKey, method: str) -> None:
        if method in _READ and key.permissions not in ("read", "read_write"):
            raise _WooError(
                401,
                "woocommerce_rest_authentication_error",
                "The API key provided does not have read permissions.",
            )
        if method in (_EDIT | {"DELETE"}) and key.permissions not in ("write", "read_write"):
            raise _WooError(
                401,
                "woocommerce_rest_authentication_error",
                "The API key provided does not have write permissions.",
            )

    # -- reads -----------------------------------------------------------------------------
    @staticmethod
    def _int_param(
        request: RecordedRequest, name: str, default: int, low: int, high: int | None
    ) -> int:
        raw = request.param(name)
        if raw is None or raw == "":
            return default
        if not _rest_is_integer(raw):
            raise _invalid_param(name, f"{name} is not of type integer.")
        value = int(float(raw))
        if value < low or (high is not None and value > high):
            message = (
                f"{name} must be between {low} (inclusive) and {high} (inclusive)"
                if high is not None
                else f"{name} must be greater than or equal to {low}"
            )
            raise _invalid_param(name, message)
        return value

    def _list(
        self, request: RecordedRequest, authenticated: bool, match: dict[str, str]
    ) -> Response:
        per_page = self._int_param(request, "per_page", 10, 1, 100)
        page = self._int_param(request, "page", 1, 1, None)
        order = (request.param("order") or "desc").lower()
        orderby = (request.param("orderby") or "date").lower()
        if order not in ("asc", "desc"):
            raise _invalid_param("order", "order is not one of asc and desc.")
        if not authenticated:
            raise _WooError(
                401, "woocommerce_rest_cannot_view", "Sorry, you cannot list resources."
            )
        sku_param = request.param("sku") or ""
        with self._lock:
            if "parent" in match:
                parent = self._get(int(match["parent"]))
                ids = parent.children if parent is not None else []
                pool = [self._products[i] for i in ids if i not in self._unknown]
            elif sku_param:
                pool = [p for p in self._products.values() if p.id not in self._unknown]
            else:  # without sku the products route lists products, not variations
                pool = [
                    p for p in self._products.values()
                    if p.id not in self._unknown and p.type != "variation"
                ]  # fmt: skip
            if sku_param:
                wanted = sku_param.split(",")
                if len(wanted) > 1:
                    wanted.append(sku_param)
                keys = {self._sku_key(s) for s in wanted}
                pool = [p for p in pool if p.sku and self._sku_key(p.sku) in keys]
            if orderby == "id":
                pool.sort(key=lambda p: p.id)
            else:
                pool.sort(key=lambda p: (p.created, p.id))
            if order == "desc":
                pool.reverse()
            total = len(pool)
            chunk = pool[(page - 1) * per_page : page * per_page]
            variation_route = "parent" in match
            items = [self._render(p, variation_route) for p in chunk]
        pages = math.ceil(total / per_page)
        headers = {"X-WP-Total": str(total), "X-WP-TotalPages": str(pages)}
        links = []
        query = {k: v[-1] for k, v in request.query.items()}
        base = f"{self.url}{request.path}"
        if page > 1:
            links.append(
                f'<{base}?{urlencode({**query, "page": min(page - 1, max(pages, 1))})}>; rel="prev"'
            )
        if pages > page:
            links.append(f'<{base}?{urlencode({**query, "page": page + 1})}>; rel="next"')
        if links:
            headers["Link"] = ", ".join(links)
        return self._json(200, items, headers)

    def _get_item(
        self, request: RecordedRequest, route: str, authenticated: bool, match: dict[str, str]
    ) -> Response:
        item_id = int(match["id"])
        with self._lock:
            product = self._get(item_id)
            if (
                route == "variation"
                and product is not None
                and (product.type != "variation" or product.parent_id != int(match["parent"]))
            ):
                product = None
            if product is not None and not authenticated:
                raise _WooError(
                    401, "woocommerce_rest_cannot_view", "Sorry, you cannot view this resource."
                )
            if product is None:
                code = "product_variation" if route == "variation" else "product"
                raise _WooError(404, f"woocommerce_rest_{code}_invalid_id", "Invalid ID.")
            return self._json(200, self._render(product, route == "variation"))

    # -- writes ----------------------------------------------------------------------------
    def _body(self, request: RecordedRequest) -> dict[str, Any]:
        content_type = request.header("content-type") or ""
        if not request.body.strip():
            return {}
        if "json" in content_type or request.body.lstrip()[:1] in (b"{", b"["):
            try:
                data = json.loads(request.body)
            except (ValueError, UnicodeDecodeError) as exc:
                raise _WooError(
                    400,
                    "rest_invalid_json",
                    "Invalid JSON body passed.",
                    json_error_code=4,
                    json_error_message=str(exc),
                ) from None
            if not isinstance(data, dict):
                raise _WooError(400, "rest_invalid_json", "Invalid JSON body passed.")
            return data
        return dict(parse_qsl(request.body.decode("utf-8", "replace")))

    @staticmethod
    def _validate_item_schema(data: dict[str, Any], variation: bool) -> dict[str, Any]:
        """WordPress' validation and sanitisation of the single-item route's arguments."""
        clean = dict(data)
        if "manage_stock" in data and data["manage_stock"] is not None:
            value = data["manage_stock"]
            if variation and value == "parent":
                clean["manage_stock"] = "parent"
            elif not _rest_is_boolean(value):
                raise _invalid_param("manage_stock", "manage_stock is not of type boolean.")
            else:
                clean["manage_stock"] = _rest_sanitize_boolean(value)
        if "stock_quantity" in data and data["stock_quantity"] is not None:
            value = data["stock_quantity"]
            if not _rest_is_integer(value):
                raise _invalid_param("stock_quantity", "stock_quantity is not of type integer.")
            clean["stock_quantity"] = int(float(value))
        if "sku" in data and data["sku"] is not None and not isinstance(data["sku"], str):
            raise _invalid_param("sku", "sku is not of type string.")
        return clean

    def _apply(self, product: _Product, data: dict[str, Any], route: str) -> None:
        """prepare_object_for_database, stock part, then save. Lock held. Raises _WooError."""
        variation_route = route in ("variation", "variation_batch")
        if "sku" in data and data["sku"] is not None:
            sku = str(data["sku"]).strip()
            try:
                self._check_sku_free(sku, exclude=product.id)
            except ValueError:
                raise _WooError(
                    400, "product_invalid_sku", "Invalid or duplicated SKU.", resource_id=product.id
                ) from None
        else:
            sku = product.sku
        before = product.stock_quantity
        manage = product.manage_stock
        quantity = product.stock_quantity
        stock_status = product.stock_status
        handles_stock = variation_route or self.store_manages_stock
        if handles_stock:
            if data.get("manage_stock") is not None:
                value = data["manage_stock"]
                manage = False if value == "parent" else wc_string_to_bool(value)
            if data.get("stock_status") in ("instock", "outofstock", "onbackorder"):
                stock_status = data["stock_status"]
            if manage and product.type != "grouped":
                if data.get("stock_quantity") is not None:
                    quantity = wc_stock_amount(data["stock_quantity"])
                elif data.get("inventory_delta") is not None:
                    quantity = wc_stock_amount(quantity) + wc_stock_amount(data["inventory_delta"])
            else:
                manage = False
                quantity = None
        product.sku = sku
        product.manage_stock = manage
        product.stock_quantity = quantity
        product.stock_status = stock_status
        product.modified = datetime.now(UTC)
        self._refresh_status(product)
        self._writes.append(
            StockWrite(
                product.id, product.sku, route, before, quantity, manage, dict(data), time.time()
            )
        )
        self._queue_product_updated(product.id)

    def _update_single(
        self, request: RecordedRequest, route: str, authenticated: bool, match: dict[str, str]
    ) -> Response:
        data = self._validate_item_schema(self._body(request), route == "variation")
        item_id = int(match["id"])
        with self._lock:
            product = self._get(item_id)
            if route == "variation":
                parent_id = int(match["parent"])
                if product is not None and not authenticated:
                    raise _WooError(
                        401,
                        "woocommerce_rest_cannot_edit",
                        "Sorry, you are not allowed to edit this resource.",
                    )
                if product is not None and product.parent_id and product.parent_id != parent_id:
                    raise _WooError(
                        403 if authenticated else 401,
                        "woocommerce_rest_cannot_edit",
                        "Parent product does not match current variation.",
                    )
                if product is None or product.type != "variation":
                    raise _WooError(
                        400, "woocommerce_rest_product_variation_invalid_id", "Invalid ID."
                    )
            else:
                if product is not None and not authenticated:
                    raise _WooError(
                        401,
                        "woocommerce_rest_cannot_edit",
                        "Sorry, you are not allowed to edit this resource.",
                    )
                if product is None:
                    raise _WooError(400, "woocommerce_rest_product_invalid_id", "Invalid ID.")
                if product.type == "variation":
                    raise _WooError(
                        404, "woocommerce_rest_invalid_product_id", VARIATION_ON_PRODUCT_ROUTE
                    )
            self._apply(product, data, route)
            return self._json(200, self._render(product, route == "variation"))

    def _batch(
        self, request: RecordedRequest, route: str, authenticated: bool, match: dict[str, str]
    ) -> Response:
        body = self._body(request)
        lists: dict[str, list[Any]] = {}
        for action in ("create", "update", "delete"):
            value = body.get(action)
            if value in (None, "", [], {}):
                continue
            if isinstance(value, dict):
                value = list(value.values())
            if not isinstance(value, list):
                raise _invalid_param(action, f"{action} is not of type array.")
            lists[action] = value
        if not authenticated:
            raise _WooError(
                401,
                "woocommerce_rest_cannot_batch",
                "Sorry, you are not allowed to batch manipulate this resource.",
            )
        total = sum(len(v) for v in lists.values())
        if total > self.batch_limit:
            raise _WooError(
                413,
                "woocommerce_rest_request_entity_too_large",
                f"Unable to accept more than {self.batch_limit} items for this request.",
            )
        parent_id = int(match["parent"]) if route == "variation_batch" else None
        result: dict[str, list[Any]] = {}
        with self._lock:
            for item in lists.get("create", []):
                result.setdefault("create", []).append(self._batch_create(item, parent_id))
            for item in lists.get("update", []):
                result.setdefault("update", []).append(self._batch_update(item, route, parent_id))
            for raw_id in lists.get("delete", []):
                entry = self._batch_delete(raw_id, parent_id)
                if entry is not None:
                    result.setdefault("delete", []).append(entry)
        return self._json(200, result)

    @staticmethod
    def _item_error(item_id: Any, err: _WooError) -> dict[str, Any]:
        return {
            "id": item_id,
            "error": {
                "code": err.code,
                "message": err.message,
                "data": {"status": err.status, **err.data},
            },
        }

    def _batch_update(self, item: Any, route: str, parent_id: int | None) -> dict[str, Any]:
        if not isinstance(item, dict):
            return self._item_error(0, _WooError(400, "rest_invalid_param", "Invalid item."))
        raw_id = item.get("id")
        item_id = wc_stock_amount(raw_id) if raw_id is not None else 0
        product = self._get(item_id) if item_id > 0 else None
        try:
            if parent_id is None:
                if product is None:
                    raise _WooError(400, "woocommerce_rest_product_invalid_id", "Invalid ID.")
                if product.type == "variation":
                    raise _WooError(
                        404, "woocommerce_rest_invalid_product_id", VARIATION_ON_PRODUCT_ROUTE
                    )
            elif product is None or product.type != "variation" or product.parent_id != parent_id:
                raise _WooError(400, "woocommerce_rest_product_variation_invalid_id", "Invalid ID.")
            self._apply(product, item, route)
        except _WooError as err:
            return self._item_error(raw_id, err)
        return self._render(product, route == "variation_batch")

    def _batch_create(self, item: Any, parent_id: int | None) -> dict[str, Any]:
        if not isinstance(item, dict):
            return self._item_error(0, _WooError(400, "rest_invalid_param", "Invalid item."))
        sku = str(item.get("sku") or "").strip()
        post_type = "product_variation" if parent_id is not None else "product"
        if item.get("id"):
            return self._item_error(
                0,
                _WooError(
                    400,
                    f"woocommerce_rest_{post_type}_exists",
                    f"Cannot create existing {post_type}.",
                ),
            )
        try:
            self._check_sku_free(sku)
        except ValueError:
            return self._item_error(
                0, _WooError(400, "product_invalid_sku", "Invalid or duplicated SKU.")
            )
        manages = wc_string_to_bool(item.get("manage_stock", False))
        quantity = (
            wc_stock_amount(item["stock_quantity"])
            if manages and item.get("stock_quantity") is not None
            else None
        )
        if parent_id is not None:
            parent = self._get(parent_id)
            if parent is None:
                return self._item_error(
                    0,
                    _WooError(
                        404, "woocommerce_rest_product_variation_invalid_parent", "Invalid parent."
                    ),
                )
            new_id = self.add_variation(parent_id, sku, quantity, manage_stock=manages)
        else:
            kind: Literal["simple", "variable"] = (
                "variable" if item.get("type") == "variable" else "simple"
            )
            new_id = self.add_product(
                sku, quantity, type=kind, name=item.get("name"), manage_stock=manages
            )
        return self._render(self._products[new_id], parent_id is not None)

    def _batch_delete(self, raw_id: Any, parent_id: int | None) -> dict[str, Any] | None:
        item_id = wc_stock_amount(raw_id)
        if item_id == 0:
            return None
        product = self._get(item_id)
        if parent_id is None:
            if product is None:
                return self._item_error(
                    item_id, _WooError(404, "woocommerce_rest_product_invalid_id", "Invalid ID.")
                )
            if product.type == "variation":
                return self._item_error(
                    item_id,
                    _WooError(
                        404, "woocommerce_rest_invalid_product_id", VARIATION_ON_PRODUCT_ROUTE
                    ),
                )
        elif product is None or product.parent_id != parent_id:
            return self._item_error(
                item_id,
                _WooError(404, "woocommerce_rest_product_variation_invalid_id", "Invalid ID."),
            )
        rendered = self._render(product, parent_id is not None)
        self._delete(item_id)
        return rendered


# =========================================================================================
# Orders and their refunds (wc/v3 orders controller), kept apart from the products code
# =========================================================================================
def _orders_state(store: FakeWooCommerce) -> dict[int, dict[str, Any]]:
    orders: dict[int, dict[str, Any]] | None = getattr(store, "_orders", None)
    if orders is None:
        orders = store._orders = {}  # type: ignore[attr-defined]
        store._refunds = {}  # type: ignore[attr-defined]
    return orders


def _save_order(self: FakeWooCommerce, order: dict[str, Any]) -> dict[str, Any]:
    """Store an order (as `build_order_payload` fills it in) without delivering any webhook
    (a lost delivery); returns the payload, ready for `send_order_webhook`. Its
    `date_modified_gmt` is what `GET /orders?modified_after=` filters on."""
    payload = self.build_order_payload(order)
    with self._lock:
        orders = _orders_state(self)
        refunds = self._refunds.get(payload["id"], [])  # type: ignore[attr-defined]
        payload["refunds"] = [
            {"id": r["id"], "reason": r["reason"], "total": r["amount"]} for r in refunds
        ]
        orders[payload["id"]] = payload
    return dict(payload)


def _refund_order(
    self: FakeWooCommerce, order_id: int, modified: str, reason: str = "", **units: int
) -> dict[str, Any]:
    """Refund `units` (SKU -> units) of a stored order as a partial refund does: the order's
    status and `line_items` stay, its `refunds` gains `{id, reason, total}` and
    `GET /orders/<id>/refunds` lists the refund's line items with negative quantities.
    Returns the order's new payload (not delivered)."""
    with self._lock:
        orders = _orders_state(self)
        order = orders[order_id]
        refunds = self._refunds.setdefault(order_id, [])  # type: ignore[attr-defined]
        by_sku = {item["sku"]: item for item in order["line_items"]}
        refund = {
            "id": 9000 + sum(len(r) for r in self._refunds.values()),  # type: ignore[attr-defined]
            "date_created_gmt": modified,
            "amount": "0.00",
            "reason": reason,
            "refunded_by": 1,
            "api_restock": False,
            "line_items": [
                {
                    "id": n,
                    "name": sku,
                    "product_id": by_sku.get(sku, {}).get("product_id", 0),
                    "variation_id": by_sku.get(sku, {}).get("variation_id", 0),
                    "sku": sku,
                    "quantity": -quantity,
                    "refunded_item_id": by_sku.get(sku, {}).get("id", 0),
                }
                for n, (sku, quantity) in enumerate(units.items(), start=1)
            ],
        }
        refunds.append(refund)
        order = {**order, "date_modified_gmt": modified}
    return self.save_order(order)


def _orders_route(
    self: FakeWooCommerce,
    request: RecordedRequest,
    route: str,
    authenticated: bool,
    match: dict[str, str],
) -> Response:
    """`GET /orders` (`modified_after` with `dates_are_gmt`, strictly after; `orderby`
    date|id|modified; `order`; `page`, `per_page` <= 100; `X-WP-Total`/`X-WP-TotalPages`)
    and `GET /orders/<id>/refunds` (404 `woocommerce_rest_order_invalid_id` if unknown)."""
    if not authenticated:
        raise _WooError(401, "woocommerce_rest_cannot_view", "Sorry, you cannot list resources.")
    per_page = self._int_param(request, "per_page", 10, 1, 100)
    page = self._int_param(request, "page", 1, 1, None)
    with self._lock:
        orders = _orders_state(self)
        if route == "order_refunds":
            order_id = int(match["order"])
            if order_id not in orders:
                raise _WooError(400, "woocommerce_rest_order_invalid_id", "Invalid order ID.")
            refunds = list(self._refunds.get(order_id, []))  # type: ignore[attr-defined]
            refunds.reverse()  # newest first, as WooCommerce lists them
            return self._json(200, refunds[(page - 1) * per_page : page * per_page])
        pool = list(orders.values())
    after = request.param("modified_after")
    if after:
        try:
            since = datetime.fromisoformat(after.replace("Z", "+00:00")).replace(tzinfo=None)
        except ValueError:
            raise _invalid_param("modified_after", "Invalid date.") from None
        pool = [o for o in pool if datetime.fromisoformat(o["date_modified_gmt"]) > since]
    orderby = (request.param("orderby") or "date").lower()
    key = {"id": "id", "modified": "date_modified_gmt"}.get(orderby, "date_created_gmt")
    pool.sort(key=lambda o: (o[key], o["id"]))
    if (request.param("order") or "desc").lower() == "desc":
        pool.reverse()
    total = len(pool)
    pages = math.ceil(total / per_page)
    headers = {"X-WP-Total": str(total), "X-WP-TotalPages": str(pages)}
    return self._json(200, pool[(page - 1) * per_page : page * per_page], headers)


FakeWooCommerce.save_order = _save_order  # type: ignore[attr-defined]
FakeWooCommerce.refund_order = _refund_order  # type: ignore[attr-defined]
FakeWooCommerce._orders_route = _orders_route  # type: ignore[attr-defined]
