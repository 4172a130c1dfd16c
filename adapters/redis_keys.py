"""Redis key names of the read model, shared by the projector (projections) and the
pushers (adapters.pushers): one place, so the two never disagree."""

from __future__ import annotations


class RedisKeys:
    """The read model's Redis key names under `prefix` (docs/read-model.md): the pushers
    read what the projector writes, so both take the names from here."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.skus = f"{prefix}:skus"
        self.meta = f"{prefix}:meta"

    def ats(self, sku: str) -> str:
        return f"{self.prefix}:{{{sku}}}:ats"

    def item(self, sku: str) -> str:
        return f"{self.prefix}:{{{sku}}}:item"

    def state(self, sku: str) -> str:
        return f"{self.prefix}:{{{sku}}}:state"

    def published(self, sku: str) -> str:
        return f"{self.prefix}:{{{sku}}}:published"
