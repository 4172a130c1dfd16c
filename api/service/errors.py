"""Errors of the application layer: an operation could not be carried out for a reason
that is not a domain rule (those are atp.errors.DomainError). The HTTP layer maps each
class to its status; nothing here knows about HTTP."""

from __future__ import annotations

from typing import Any


class ApplicationError(Exception):
    """Base: `kind` names the reason (a problem's `code`), `detail` says it to a person,
    `data` carries the figures a caller may act on."""

    kind = "application-error"

    def __init__(self, detail: str, **data: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.data = data


class ReadModelRebuilding(ApplicationError):
    """The read model is missing or incomplete (Redis flushed, restarted empty, or being
    rebuilt): a missing document proves nothing. Retry shortly."""

    kind = "read-model-rebuilding"

    def __init__(self) -> None:
        super().__init__("the read model is being rebuilt from the ledger; retry shortly")


class ReadModelBehind(ApplicationError):
    """The read model has not reached `min_position` (a ledger position) within the wait;
    `position` is where it is."""

    kind = "read-model-behind"

    def __init__(self, position: int, min_position: int) -> None:
        super().__init__(
            f"the read model is at position {position}, not yet {min_position}",
            position=position,
            min_position=min_position,
        )


class ChannelNotFound(ApplicationError):
    """The channel named by the caller is not in the (complete) read model's policies."""

    kind = "not-found"

    def __init__(self, channel: str) -> None:
        super().__init__(f"channel {channel!r} not found")


class LocationNotFound(ApplicationError):
    """The location named by the caller is not in the (complete) read model's policies."""

    kind = "not-found"

    def __init__(self, location: str) -> None:
        super().__init__(f"location {location!r} not found")


class InvalidQuery(ApplicationError):
    """A query's parameter is out of its range or is not one the query gave (a cursor):
    `field` names it."""

    kind = "validation-failed"

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(detail, field=field)
