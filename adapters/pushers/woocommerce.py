"""WooCommerce (wc/v3): stock through the products and variations batch endpoints.

* Auth, per store (`auth`): `basic` (HTTP Basic, consumer key/secret), `query`
  (`consumer_key`/`consumer_secret` in the query string, over HTTPS, for hosts running PHP as
  CGI/FastCGI that drop the Authorization header), `oauth1` (one-legged OAuth 1.0a,
  HMAC-SHA256, fresh timestamp and nonce per request: what WordPress requires when it sees
  plain HTTP, also behind a TLS proxy), or `auto` (default): Basic for an https:// URL,
  OAuth 1.0a for http://.
* Stores without pretty permalinks (`pretty_permalinks: false`) are reached at
  `<url>/?rest_route=/wc/v3/...` instead of `<url>/wp-json/wc/v3/...`.
* SKU -> (id, parent_id) from `GET /products?sku=A,B,...&per_page=100` (exact matches only:
  WooCommerce's lookup is case-insensitive and ignores trailing spaces, we never guess; it
  splits the value on commas, so a SKU containing a comma is looked up alone), cached; an id WooCommerce calls invalid is re-resolved once, then the SKU is a permanent
  error. A SKU the store does not have is a permanent error.
* Writes: `POST /products/batch` (simple and variable products) and
  `POST /products/<parent>/variations/batch` (variations), at most 100 items a request (a
  413 halves it), always `manage_stock: true` with `stock_quantity`. The batch is not
  transactional: a 200 answer carries per-item errors, handled item by item.
* Every write fires a `product.updated` webhook back at us: the values are remembered
  before they are written (the echo can arrive before WooCommerce's answer), in Redis when
  the service has it, so the API process sees them, and
  `is_echo(product_json)` tells an echo from a change made in the store.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import time
import uuid
from collections.abc import Generator, Mapping, Sequence
from typing import Any, Literal, Protocol
from urllib.parse import quote

import httpx

from adapters.pushers.base import (
    ClientHooks,
    Http,
    PermanentError,
    PushResult,
    RetryableError,
    chunks,
    error_summary,
    json_or_none,
)

log = logging.getLogger("atp.push.woocommerce")

API = "/wp-json/wc/v3"
ROUTE = "/wc/v3"
AuthMode = Literal["auto", "basic", "query", "oauth1"]
BATCH_LIMIT = 100
LOOKUP_URL_BUDGET = 1800
"""Most characters of SKUs in one lookup URL (hosts reject very long request lines)."""
ECHO_TTL = 600.0
"""Seconds a written value is remembered for recognising its webhook echo."""
INVALID_ID_CODES = ("woocommerce_rest_invalid_product_id",)


def _rfc3986(value: str) -> str:
    return quote(value, safe="~")


def oauth1_sign(method: str, url: str, params: Mapping[str, str], consumer_secret: str) -> str:
    """WooCommerce's one-legged OAuth 1.0a signature (WC_REST_Authentication): HMAC-SHA256
    with key `secret&` over METHOD&enc(url)&enc(k=v)%26enc(k=v)... with sorted keys."""
    pairs = [_rfc3986(f"{_rfc3986(k)}={_rfc3986(str(params[k]))}") for k in sorted(params)]
    base = f"{method.upper()}&{_rfc3986(url)}&{'%26'.join(pairs)}"
    digest = hmac.new(f"{consumer_secret}&".encode(), base.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


class OAuth1(httpx.Auth):
    """Signs every request (each retry too) with a fresh timestamp and nonce, in the query
    string, as WooCommerce expects over plain HTTP. The signature covers the URL as
    WordPress sees it: with `as_plain_http`, an https:// request is signed as http://
    (WordPress behind a TLS-terminating proxy computes it so: WC_REST_Authentication
    builds the base URL with `is_ssl() ? 'https' : 'http'`)."""

    def __init__(
        self, consumer_key: str, consumer_secret: str, *, as_plain_http: bool = False
    ) -> None:
        self.consumer_key = consumer_key
        self.consumer_secret = consumer_secret
        self.as_plain_http = as_plain_http

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        oauth = {
            "oauth_consumer_key": self.consumer_key,
            "oauth_timestamp": str(int(time.time())),
            "oauth_nonce": uuid.uuid4().hex,
            "oauth_signature_method": "HMAC-SHA256",
        }
        params = {k: v for k, v in request.url.params.multi_items()}
        params.update(oauth)
        signed = request.url.copy_with(query=None, fragment=None)
        if self.as_plain_http and signed.scheme == "https":
            signed = signed.copy_with(scheme="http")
        base_url = str(signed)
        oauth["oauth_signature"] = oauth1_sign(
            request.method, base_url, params, self.consumer_secret
        )
        request.url = request.url.copy_merge_params(oauth)
        yield request


class QueryKeys(httpx.Auth):
    """`consumer_key` and `consumer_secret` as query parameters (WooCommerce reads them
    before the Authorization header; only over HTTPS, as WordPress sees it)."""

    def __init__(self, consumer_key: str, consumer_secret: str) -> None:
        self.params = {"consumer_key": consumer_key, "consumer_secret": consumer_secret}

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.url = request.url.copy_merge_params(self.params)
        yield request


def resolve_auth(mode: AuthMode, url: str) -> str:
    """The auth mode a store gets: `auto` is Basic for https://, OAuth 1.0a for http://."""
    if mode == "auto":
        return "basic" if url.lower().startswith("https://") else "oauth1"
    return mode


def store_auth(mode: str, consumer_key: str, consumer_secret: str) -> httpx.Auth:
    """The httpx.Auth of a resolved auth mode; ValueError for an unknown one. `oauth1`
    chosen for an https:// store means WordPress does not know it is on HTTPS (else Basic
    would do): it signs the http:// form of the URL, as that WordPress computes it."""
    if mode == "basic":
        return httpx.BasicAuth(consumer_key, consumer_secret)
    if mode == "query":
        return QueryKeys(consumer_key, consumer_secret)
    if mode == "oauth1":
        return OAuth1(consumer_key, consumer_secret, as_plain_http=True)
    raise ValueError(f"unknown WooCommerce auth mode {mode!r}")


# --- echo memory ----------------------------------------------------------------------------


class EchoMemory(Protocol):
    async def remember(self, written: Mapping[str, int]) -> None: ...
    async def written(self, sku: str) -> dict[int, float]:
        """Quantities written to this SKU within the TTL -> when (unix time)."""
        ...


class MemoryEchoMemory:
    def __init__(self, ttl: float = ECHO_TTL) -> None:
        self.ttl = ttl
        self._values: dict[str, dict[int, float]] = {}

    async def remember(self, written: Mapping[str, int]) -> None:
        now = time.time()
        for sku, quantity in written.items():
            values = self._values.setdefault(sku, {})
            values[quantity] = now
            if len(values) > 16:
                for old in sorted(values, key=values.__getitem__)[:-16]:
                    del values[old]

    async def written(self, sku: str) -> dict[int, float]:
        now = time.time()
        return {q: t for q, t in self._values.get(sku, {}).items() if now - t <= self.ttl}


def echo_key(prefix: str, store: str, sku: str) -> str:
    """`<prefix>:{<sku>}:echo:woocommerce:<store>`: hash quantity -> unix time written."""
    return f"{prefix}:{{{sku}}}:echo:woocommerce:{store}"


class RedisEchoMemory:
    """The written values in Redis, so the API process (webhook intake) can see them."""

    def __init__(self, client: Any, prefix: str, store: str, ttl: float = ECHO_TTL) -> None:
        self.client = client
        self.prefix = prefix
        self.store = store
        self.ttl = ttl

    async def remember(self, written: Mapping[str, int]) -> None:
        if not written:
            return
        now = time.time()
        pipe = self.client.pipeline(transaction=False)
        for sku, quantity in written.items():
            key = echo_key(self.prefix, self.store, sku)
            pipe.hset(key, str(quantity), repr(now))
            pipe.expire(key, int(self.ttl) + 1)
        await pipe.execute()

    async def written(self, sku: str) -> dict[int, float]:
        raw = await self.client.hgetall(echo_key(self.prefix, self.store, sku))
        now = time.time()
        out = {}
        for quantity, at in raw.items():
            t = float(at)
            if now - t <= self.ttl:
                out[int(quantity)] = t
        return out


async def is_echo_of(memory: EchoMemory, product: Mapping[str, Any]) -> bool:
    """Whether a `product.updated` payload shows nothing but a value we wrote recently (its
    SKU, managed stock and a stock_quantity we wrote within the TTL). WooCommerce builds the
    payload at delivery time, so a sale recorded after our write shows another quantity and
    is not an echo."""
    sku = product.get("sku")
    quantity = product.get("stock_quantity")
    if not isinstance(sku, str) or not sku or product.get("manage_stock") is not True:
        return False
    if not isinstance(quantity, int) or isinstance(quantity, bool):
        return False
    return quantity in await memory.written(sku)


async def is_echo(redis_client: Any, prefix: str, store: str, product: Mapping[str, Any]) -> bool:
    """For the webhook endpoint (API process): `product.updated` echo of a pusher's write?"""
    return await is_echo_of(RedisEchoMemory(redis_client, prefix, store), product)


# --- the client ---------------------------------------------------------------------------------


class WooCommerceClient:
    kind = "woocommerce"

    def __init__(
        self,
        url: str,
        consumer_key: str,
        consumer_secret: str,
        *,
        hooks: ClientHooks | None = None,
        rate: float = 5.0,
        auth: AuthMode = "auto",
        pretty_permalinks: bool = True,
        echo: EchoMemory | None = None,
    ) -> None:
        hooks = hooks or ClientHooks()
        base = url.rstrip("/")
        self.auth_mode = resolve_auth(auth, base)
        credentials = store_auth(self.auth_mode, consumer_key, consumer_secret)
        self.pretty_permalinks = pretty_permalinks
        self.http = Http(
            base + API if pretty_permalinks else base + "/",
            rate=rate,
            hooks=hooks,
            auth=credentials,
            headers={"Accept": "application/json", "User-Agent": "atp-pusher/1"},
        )
        self.batch_limit = BATCH_LIMIT
        self.ids: dict[str, tuple[int, int]] = {}
        """SKU -> (id, parent_id); parent 0: a product, else a variation of that parent."""
        self.echo: EchoMemory = echo or MemoryEchoMemory()

    @property
    def max_batch(self) -> int:
        return self.batch_limit

    async def aclose(self) -> None:
        await self.http.aclose()

    async def is_echo(self, product: Mapping[str, Any]) -> bool:
        return await is_echo_of(self.echo, product)

    async def _request(
        self, method: str, path: str, params: Mapping[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        """A wc/v3 request: `path` under /wp-json/wc/v3, or as `?rest_route=` on a store
        without pretty permalinks."""
        if self.pretty_permalinks:
            return await self.http.request(method, path, params=params, **kwargs)
        routed = {"rest_route": ROUTE + path, **(params or {})}
        return await self.http.request(method, "", params=routed, **kwargs)

    # -- reading -----------------------------------------------------------------------------

    def _lookup_groups(self, skus: Sequence[str]) -> list[list[str]]:
        groups: list[list[str]] = []
        group: list[str] = []
        length = 0
        for sku in dict.fromkeys(skus):
            if "," in sku:  # `?sku=` splits on commas: this one can only be looked up alone
                groups.append([sku])
                continue
            cost = len(_rfc3986(sku)) + 3
            if group and (len(group) >= 100 or length + cost > LOOKUP_URL_BUDGET):
                groups.append(group)
                group, length = [], 0
            group.append(sku)
            length += cost
        if group:
            groups.append(group)
        return groups

    async def lookup(self, skus: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The store's products/variations with exactly these SKUs (refreshes the id cache).
        Raises RetryableError / PermanentError when the store cannot be read."""
        found: dict[str, dict[str, Any]] = {}
        for group in self._lookup_groups(skus):
            wanted = set(group)
            page, pages = 1, 1
            while page <= pages:
                params = {"sku": ",".join(group), "per_page": "100", "page": str(page)}
                response = await self._request("GET", "/products", params=params)
                if response.status_code in (401, 403):
                    raise RetryableError(f"not authorised: {error_summary(response)}", 30.0)
                if response.status_code != 200:
                    raise PermanentError(f"product lookup: {error_summary(response)}")
                items = json_or_none(response)
                if not isinstance(items, list):
                    raise RetryableError("product lookup: not a JSON list")
                try:
                    pages = int(response.headers.get("X-WP-TotalPages") or 1)
                except ValueError:
                    pages = 1
                for item in items:
                    sku = item.get("sku") if isinstance(item, dict) else None
                    if sku in wanted:
                        found[sku] = item
                        self.ids[sku] = (int(item["id"]), int(item.get("parent_id") or 0))
                    elif isinstance(sku, str) and sku.rstrip(" ").casefold() in {
                        w.casefold() for w in wanted
                    }:
                        log.warning(
                            "woocommerce: store SKU %r only loosely matches ours; not used", sku
                        )
                page += 1
        for sku in skus:
            if sku not in found:
                self.ids.pop(sku, None)
        return found

    async def current(self, skus: Sequence[str]) -> dict[str, int | None]:
        found = await self.lookup(skus)
        out: dict[str, int | None] = {}
        for sku, item in found.items():
            quantity = item.get("stock_quantity")
            managed = item.get("manage_stock") is True
            out[sku] = int(quantity) if managed and isinstance(quantity, int | float) else None
        return out

    # -- writing -----------------------------------------------------------------------------

    async def push(self, figures: Mapping[str, int]) -> PushResult:
        result = PushResult()
        unresolved = [sku for sku in figures if sku not in self.ids]
        if unresolved:
            await self._resolve(unresolved, result)
        todo = {sku: q for sku, q in figures.items() if sku not in result}
        invalid = await self._write(todo, result)
        if invalid:
            # WooCommerce says the cached id is not (or no longer) valid there: look the SKU
            # up again once; a second refusal is final.
            for sku in invalid:
                self.ids.pop(sku, None)
            await self._resolve(invalid, result)
            again = {sku: figures[sku] for sku in invalid if sku not in result}
            for sku in await self._write(again, result):
                result.permanent([sku], "WooCommerce rejects the id even after re-resolving")
        return result

    def batch_group(self, sku: str) -> int:
        """The parent product a SKU's write goes through (0: products/batch), as far as
        known; the runner fills a batch from one group so it is one request."""
        return self.ids.get(sku, (0, 0))[1]

    async def _resolve(self, skus: list[str], result: PushResult) -> None:
        try:
            await self.lookup(skus)
        except (RetryableError, PermanentError) as exc:
            result.failed(skus, exc)
            return
        missing = [sku for sku in skus if sku not in self.ids]
        if missing:
            result.permanent(missing, "SKU not found in the WooCommerce store")

    async def _write(self, figures: Mapping[str, int], result: PushResult) -> list[str]:
        """Batch-write resolved SKUs; returns the SKUs WooCommerce called an invalid id."""
        groups: dict[int, list[str]] = {}
        for sku in figures:
            groups.setdefault(self.ids[sku][1], []).append(sku)
        invalid: list[str] = []
        for parent, skus in groups.items():
            path = "/products/batch" if parent == 0 else f"/products/{parent}/variations/batch"
            for chunk in chunks(skus, self.batch_limit):
                invalid += await self._write_batch(path, chunk, figures, result)
        return invalid

    async def _write_batch(
        self, path: str, skus: list[str], figures: Mapping[str, int], result: PushResult
    ) -> list[str]:
        body = {
            "update": [
                {"id": self.ids[sku][0], "manage_stock": True, "stock_quantity": figures[sku]}
                for sku in skus
            ]
        }
        # Remembered before the write: WooCommerce may deliver the product.updated echo
        # before its answer to us arrives (a value we only tried to write is ours too).
        await self.echo.remember({sku: figures[sku] for sku in skus})
        try:
            response = await self._request("POST", path, json=body)
        except RetryableError as exc:
            result.failed(skus, exc)
            return []
        status = response.status_code
        if status == 413:
            # The store lowered woocommerce_rest_batch_items_limit: send smaller batches.
            self.batch_limit = max(1, len(skus) // 2)
            log.warning(
                "woocommerce: batch of %d refused (413); now %d", len(skus), self.batch_limit
            )
            result.retry(skus, "batch too large", after=0.0)
            return []
        if status in (401, 403):
            result.retry(skus, f"not authorised: {error_summary(response)}", after=30.0)
            log.error("woocommerce: %s %s", path, error_summary(response))
            return []
        payload = json_or_none(response) if status == 200 else None
        if status != 200 or not isinstance(payload, dict):
            result.permanent(skus, f"batch refused: {error_summary(response)}")
            log.error("woocommerce: %s %s", path, error_summary(response))
            return []
        entries = payload.get("update")
        entries = entries if isinstance(entries, list) else []
        by_id: dict[int, dict[str, Any]] = {}
        for entry in entries:
            if isinstance(entry, dict):
                try:
                    by_id.setdefault(int(entry.get("id") or 0), entry)
                except (TypeError, ValueError):
                    continue
        invalid: list[str] = []
        for index, sku in enumerate(skus):
            item_id = self.ids[sku][0]
            entry = entries[index] if index < len(entries) else None
            if not isinstance(entry, dict) or _entry_id(entry) != item_id:
                entry = by_id.get(item_id)
            if entry is None:
                result.retry([sku], "no answer for this item in the batch response")
                continue
            error = entry.get("error")
            if isinstance(error, dict):
                code = str(error.get("code") or "")
                data = error.get("data")
                item_status = int((data.get("status") if isinstance(data, dict) else 0) or 400)
                message = f"{code}: {error.get('message')}"
                if code.endswith("_invalid_id") or code in INVALID_ID_CODES:
                    invalid.append(sku)
                elif item_status == 429 or item_status >= 500:
                    result.retry([sku], message)
                else:
                    result.permanent([sku], message)
                    log.warning("woocommerce: %s refused: %s", sku, message)
                continue
            if entry.get("manage_stock") is not True or entry.get("stock_quantity") is None:
                result.permanent([sku], "the store does not manage stock for this item")
                log.warning("woocommerce: %s: the store ignored stock_quantity", sku)
                continue
            result.ok([sku])
        return invalid


def _entry_id(entry: Mapping[str, Any]) -> int | None:
    try:
        return int(entry.get("id") or 0)
    except (TypeError, ValueError):
        return None


def create(settings: Mapping[str, Any], store: str, hooks: ClientHooks) -> WooCommerceClient:
    """From the IntegrationConfigured settings (url, consumer_key, consumer_secret,
    auth, pretty_permalinks, max_requests_per_second)."""
    echo: EchoMemory | None = None
    if hooks.redis is not None:
        echo = RedisEchoMemory(hooks.redis, hooks.redis_prefix, store)
    key, secret = settings.get("consumer_key"), settings.get("consumer_secret")
    if not key or not secret:
        raise ValueError(f"woocommerce integration {store!r} has no consumer key/secret")
    return WooCommerceClient(
        str(settings["url"]),
        str(key),
        str(secret),
        hooks=hooks,
        rate=float(settings.get("max_requests_per_second") or 5.0),
        auth=settings.get("auth") or "auto",
        pretty_permalinks=settings.get("pretty_permalinks") is not False,
        echo=echo,
    )
