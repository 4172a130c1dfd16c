"""Domain errors: each carries the data a caller needs to explain the rejection."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """A command was rejected by the domain rules; nothing was recorded."""

    kind = "domain-error"

    def __init__(self, detail: str, **data: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.data = data


class InvalidCommand(DomainError):
    """A well-formed command that fails validation (maps to 422); `field` names the input."""

    kind = "invalid-command"

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(detail, field=field)
        self.field = field


class UnknownLocation(InvalidCommand):
    """A command names a location that is not defined (422)."""

    kind = "unknown-location"

    def __init__(self, field: str, code: str) -> None:
        super().__init__(field, f"unknown location {code!r}")
        self.code = code


class UnknownChannel(InvalidCommand):
    """A command names a channel that is not defined (422)."""

    kind = "unknown-channel"

    def __init__(self, field: str, code: str) -> None:
        super().__init__(field, f"unknown channel {code!r}")
        self.code = code


class NotFound(DomainError):
    """The resource named in the path does not exist (maps to 404)."""

    kind = "not-found"

    def __init__(self, resource: str, ident: str) -> None:
        super().__init__(f"{resource} {ident!r} not found", resource=resource, id=ident)


class Conflict(DomainError):
    """The command is illegal in the current state (maps to 409)."""

    kind = "conflict"


class AlreadyExists(Conflict):
    """The resource a command would create exists already (409)."""

    kind = "already-exists"

    def __init__(self, resource: str, ident: str) -> None:
        super().__init__(f"{resource} {ident!r} already exists", resource=resource, id=ident)


class IllegalState(Conflict):
    """The resource is in a status that does not allow the action (409), e.g.
    extending a released reservation."""

    kind = "illegal-state"

    def __init__(self, resource: str, ident: str, status: str, action: str) -> None:
        super().__init__(
            f"cannot {action} {resource} {ident!r}: it is {status}",
            resource=resource,
            id=ident,
            current_status=status,
        )


class ShortLine:
    """One line that could not be covered: what was asked and what could be given."""

    __slots__ = ("available", "requested", "sku")

    def __init__(self, sku: str, requested: int, available: int) -> None:
        self.sku = sku
        self.requested = requested
        self.available = available

    def as_dict(self) -> dict[str, Any]:
        """The line as JSON-ready data (the problem body's `lines`)."""
        return {"sku": self.sku, "requested": self.requested, "available": self.available}


class InsufficientStock(Conflict):
    """One or more lines cannot be covered; `lines` names each with what was available."""

    kind = "insufficient-stock"

    def __init__(self, lines: list[ShortLine], detail: str | None = None) -> None:
        text = detail or "insufficient stock: " + ", ".join(
            f"{s.sku} requested {s.requested}, available {s.available}" for s in lines
        )
        super().__init__(text, lines=[s.as_dict() for s in lines])
        self.lines = lines


class NegativeQuantity(Conflict):
    """The command would drive a quantity below zero."""

    kind = "negative-quantity"

    def __init__(self, sku: str, location: str, quantity: str, current: int, change: int) -> None:
        super().__init__(
            f"{quantity} of {sku!r} at {location!r} would go negative: {current} {change:+d}",
            sku=sku,
            location=location,
            quantity=quantity,
            current=current,
            change=change,
        )
