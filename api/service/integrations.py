"""Channel integrations: configuring a WooCommerce store or an Amazon or eBay account.

Secrets are write-only: a configuration that leaves them out keeps the stored ones, and
they are sealed (adapters.sealing) before they reach the ledger.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from adapters.ledger import StreamKey
from adapters.records import INTEGRATION_INDEX, IntegrationConfigured, IntegrationListed
from adapters.sealing import SECRETS, seal_settings
from api.service.commands import Decision, ServiceWorld
from atp.decide import POLICIES
from atp.errors import InvalidCommand, UnknownChannel
from atp.streams import Stream


def integration_stream(kind: str, store: str) -> Stream:
    """The stream of the integration `kind`/`store` (its IntegrationConfigured records)."""
    return ("integration", f"{kind}:{store}")


def current(records: list[Any]) -> IntegrationConfigured | None:
    """The integration's newest configuration in its records (None: never configured)."""
    found = [r for r in records if isinstance(r, IntegrationConfigured)]
    return found[-1] if found else None


def listed(world: ServiceWorld, kind: str, store: str) -> list[tuple[Any, Any]]:
    """The index entry of an integration not listed yet (see adapters.records)."""
    index = world.records(INTEGRATION_INDEX)
    if any(isinstance(r, IntegrationListed) and (r.kind, r.store) == (kind, store) for r in index):
        return []
    return [(INTEGRATION_INDEX, IntegrationListed(kind=kind, store=store))]


def public_view(record: IntegrationConfigured) -> dict[str, Any]:
    """An integration's settings without its secrets, naming the secrets it holds."""
    secrets = SECRETS[record.kind]
    view = {k: v for k, v in record.settings.items() if k not in secrets}
    view["configured_secrets"] = sorted(k for k in secrets if record.settings.get(k))
    return {"kind": record.kind, "store": record.store, **view}


def require_credentials(settings: dict[str, Any]) -> None:
    """A marketplace account needs an access token or the refresh credentials (given now or
    kept from before); raises InvalidCommand naming the first missing field."""
    refresh = ("client_id", "client_secret", "refresh_token")
    if settings.get("access_token") or all(settings.get(name) for name in refresh):
        return
    missing = next(name for name in refresh if not settings.get(name))
    raise InvalidCommand(missing, f"{missing} is required (or an access_token)")


@dataclass(frozen=True)
class ConfigureIntegration:
    """Decides configuring the integration `kind`/`store` from `given` (its decoded
    settings; secrets None mean "keep the stored one"). Raises UnknownChannel when
    `given["channel"]` is not a configured channel, InvalidCommand when a marketplace has
    no credentials. Records IntegrationConfigured with its secrets sealed under
    `service_key`, and lists the integration once in the index."""

    kind: str
    store: str
    given: dict[str, Any]
    service_key: bytes = field(repr=False)

    @property
    def stream(self) -> StreamKey:
        """The integration's stream (see integration_stream)."""
        return integration_stream(self.kind, self.store)

    @property
    def reads(self) -> Sequence[StreamKey]:
        """The policies (channels), the integration and the index of integrations."""
        return [POLICIES, self.stream, INTEGRATION_INDEX]

    @property
    def fresh(self) -> Sequence[StreamKey]:
        """None: the integration may exist already."""
        return ()

    @property
    def likely_new(self) -> Sequence[StreamKey]:
        """None: reconfiguring an integration is as common as configuring it."""
        return ()

    def __call__(self, world: ServiceWorld, now: datetime, /) -> Decision:
        channel = self.given["channel"]
        if channel not in world.policies().channels:
            raise UnknownChannel("channel", channel)
        secrets = SECRETS[self.kind]
        previous = current(world.records(self.stream))
        settings = dict(self.given)
        for name in secrets:  # write-only: left out means keep
            if settings.get(name) is None and previous is not None:
                settings[name] = previous.settings.get(name)
        if self.kind in ("amazon", "ebay"):
            require_credentials(settings)
        settings = seal_settings(settings, secrets, self.service_key)  # never plain at rest
        record = IntegrationConfigured(
            kind=self.kind, store=self.store, channel=channel, settings=settings
        )
        return [(self.stream, record), *listed(world, self.kind, self.store)]
