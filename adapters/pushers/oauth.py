"""Marketplace access tokens that keep working: the OAuth 2 refresh-token grant (RFC 6749
§6) through authlib's httpx client, and an `httpx.Auth` that puts the current token on
every request and renews it once when the marketplace says it expired.

* Amazon SP-API: Login with Amazon (LWA) access tokens expire one hour after issue; renew
  at `https://api.amazon.com/auth/o2/token` with client id and secret in the form body
  (`client_secret_post`). An expired token is a 403 whose error says "expired".
* eBay: user access tokens live about two hours; renew at
  `https://api.ebay.com/identity/v1/oauth2/token` with the client id and secret in HTTP
  Basic (`client_secret_basic`) and the scope (`.../sell.inventory`). An expired token is a
  401 with errorId 1001 "Invalid access token".

A token is renewed before it expires (when less than a tenth of its lifetime, at most five
minutes, is left) and whenever the API calls it expired; concurrent requests share one
renewal.
"""

from __future__ import annotations

import asyncio
import logging
import time
import warnings
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any

import authlib.deprecate  # type: ignore[import-untyped]  # noqa: F401  (installs its "always" filter)
import httpx

with warnings.catch_warnings():
    # authlib 1.9 warns that it would rather drive `httpx2`; plain httpx is what atp uses.
    warnings.filterwarnings("ignore", "The httpx module is deprecated")
    from authlib.integrations.httpx_client import (  # type: ignore[import-untyped]
        AsyncOAuth2Client,
        OAuthError,
    )

from adapters.pushers.base import ClientHooks, RetryableError

log = logging.getLogger("atp.push.oauth")

RENEW_MARGIN = 300.0
"""Renew a token at most this many seconds before it expires..."""
RENEW_FRACTION = 0.1
"""...or when this fraction of its lifetime is left, whichever comes later."""
REFUSED_RETRY = 60.0
"""Seconds before trying again after the token endpoint refused the credentials."""


class TokenSource:
    """The access token of one marketplace account.

    With refresh credentials (client id, client secret, refresh token) it renews the token
    through `token_endpoint`; with only a fixed `access_token` it hands that out and cannot
    renew (`refreshable` is False). `token()` raises RetryableError when the token endpoint
    cannot be reached or answers 5xx, and also when it refuses the credentials
    (`invalid_client`, `invalid_grant`: logged as an error; they must be configured again),
    so figures wait rather than go to the dead-letter queue.
    """

    def __init__(
        self,
        *,
        access_token: str | None = None,
        token_endpoint: str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        refresh_token: str | None = None,
        scope: str | None = None,
        client_auth: str = "client_secret_post",
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.refreshable = bool(token_endpoint and client_id and client_secret and refresh_token)
        if not self.refreshable and not access_token:
            raise ValueError("needs an access token or refresh credentials")
        self._token = access_token
        self._expires_at: float | None = None
        """monotonic time the current token expires; None: unknown (a configured token)."""
        self._renew_at: float | None = None
        self._endpoint = token_endpoint
        self._refresh_token = refresh_token
        self._lock = asyncio.Lock()
        self._client: AsyncOAuth2Client | None = None
        self.renewals = 0
        self.refused_retry = REFUSED_RETRY
        if self.refreshable:
            kwargs: dict[str, Any] = {"timeout": timeout}
            if transport is not None:
                kwargs["transport"] = transport
            self._client = AsyncOAuth2Client(
                client_id=client_id,
                client_secret=client_secret,
                token_endpoint_auth_method=client_auth,
                scope=scope,
                **kwargs,
            )

    async def token(self) -> str:
        """A token that is not about to expire (renewed first if it is)."""
        token = self._token
        if token is not None and (self._renew_at is None or time.monotonic() < self._renew_at):
            return token
        if not self.refreshable:
            assert token is not None
            return token
        return await self.renew(token)

    async def renew(self, stale: str | None) -> str:
        """Renew the token unless another request already replaced `stale`."""
        async with self._lock:
            if self._token is not None and self._token != stale:
                return self._token
            if not self.refreshable:
                raise RetryableError("access token expired and no refresh credentials", 30.0)
            assert self._client is not None and self._endpoint is not None
            try:
                grant = await self._client.refresh_token(
                    self._endpoint, refresh_token=self._refresh_token
                )
            except OAuthError as exc:
                # Revoked or mistyped credentials: the figures wait (retried, never parked)
                # until the integration is configured again.
                log.error("token refresh refused (configure the credentials again): %s", exc)
                raise RetryableError(
                    f"token refresh refused: {exc}", self.refused_retry, wait=True
                ) from None
            except httpx.HTTPError as exc:
                raise RetryableError(f"token refresh failed: {type(exc).__name__}: {exc}") from None
            except ValueError as exc:  # a 5xx or an HTML page instead of the token JSON
                raise RetryableError(f"token refresh failed: {exc}") from None
            token = grant.get("access_token")
            if not isinstance(token, str) or not token:
                raise RetryableError("token refresh answered no access_token")
            lifetime = float(grant.get("expires_in") or 3600)
            now = time.monotonic()
            self._token = token
            self._expires_at = now + lifetime
            self._renew_at = self._expires_at - min(RENEW_MARGIN, lifetime * RENEW_FRACTION)
            if grant.get("refresh_token"):
                self._refresh_token = grant["refresh_token"]
            self.renewals += 1
            log.info("access token renewed (valid %.0fs)", lifetime)
            return token

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()


class TokenAuth(httpx.Auth):
    """Puts `prefix + token` in `header` on every request; when the answer says the token
    expired (`expired(response)`), renews it and sends the request once more."""

    def __init__(
        self,
        source: TokenSource,
        header: str,
        expired: Callable[[httpx.Response], bool],
        prefix: str = "",
    ) -> None:
        self.source = source
        self.header = header
        self.expired = expired
        self.prefix = prefix

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        token = await self.source.token()
        request.headers[self.header] = self.prefix + token
        response = yield request
        if self.source.refreshable and response.status_code in (401, 403):
            await response.aread()
        if (
            self.source.refreshable
            and response.status_code in (401, 403)
            and self.expired(response)
        ):
            log.info("%s: access token expired; renewing", request.url.host)
            token = await self.source.renew(token)
            request.headers[self.header] = self.prefix + token
            yield request


def token_source(
    settings: Mapping[str, Any],
    store: str,
    hooks: ClientHooks,
    *,
    client_auth: str,
    scope: str | None = None,
) -> TokenSource:
    """The TokenSource of a marketplace integration's settings (`access_token`, and/or
    `token_endpoint`, `client_id`, `client_secret`, `refresh_token`). ValueError when it
    has neither a token nor complete refresh credentials."""

    def text(name: str) -> str | None:
        value = settings.get(name)
        return str(value) if value else None

    try:
        return TokenSource(
            access_token=text("access_token"),
            token_endpoint=text("token_endpoint"),
            client_id=text("client_id"),
            client_secret=text("client_secret"),
            refresh_token=text("refresh_token"),
            scope=scope,
            client_auth=client_auth,
            timeout=hooks.http_timeout,
            transport=hooks.transport,
        )
    except ValueError:
        raise ValueError(
            f"integration {store!r} has no access token and no complete refresh credentials "
            "(client_id, client_secret, refresh_token)"
        ) from None
