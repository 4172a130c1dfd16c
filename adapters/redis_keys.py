"""The Redis read model's key names (the layout is described in `projections.readmodel`
and docs/read-model.md): written by the projector, read by the API and the channel pushers.
"""

from __future__ import annotations


class RedisKeys:
    """The keys of one read model under `prefix`: `skus` (the set of projected SKUs), `meta`
    (position, build, heartbeat ...) and, per SKU, keys with the `{sku}` hash tag so they
    share one Redis Cluster slot."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.skus = f"{prefix}:skus"
        self.meta = f"{prefix}:meta"
        self.index_base = f"{prefix}:{{index}}:"
        """Every list index shares the `{index}` hash tag (one Cluster slot), so one script
        can update them all."""
        self.index_of = f"{self.index_base}of"
        """Hash: sku -> its memberships and their position (projections.indexes)."""

    def index(self, name: str) -> str:
        """Sorted set: the list index `name` (projections.indexes), every score 0."""
        return f"{self.index_base}{name}"

    def ats(self, sku: str) -> str:
        """Hash: channel -> the figure document, and `_position` (ledger position reflected)."""
        return f"{self.prefix}:{{{sku}}}:ats"

    def item(self, sku: str) -> str:
        """The GET /v1/items/{sku} document."""
        return f"{self.prefix}:{{{sku}}}:item"

    def state(self, sku: str) -> str:
        """The projector's folded item state without its holds (msgspec JSON; see `holds`)."""
        return f"{self.prefix}:{{{sku}}}:state"

    def holds(self, sku: str) -> str:
        """Hash: reservation id -> `[sequence number, hold]` (msgspec JSON) of each of the
        SKU's holds; the `state` key holds the rest of the folded state."""
        return f"{self.prefix}:{{{sku}}}:holds"

    def published(self, sku: str) -> str:
        """Hash: channel -> "available|status" last published on RabbitMQ."""
        return f"{self.prefix}:{{{sku}}}:published"
