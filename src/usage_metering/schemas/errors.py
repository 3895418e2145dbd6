"""The one error type for bad input, shared by every layer that validates."""

from __future__ import annotations


class ValidationError(ValueError):
    """Input that breaks a format rule; names the offending field.

    `code` is a short machine-readable reason (e.g. ``invalid_quantity``) used in
    HTTP error bodies, dead-letter reasons and rejection metrics.
    """

    def __init__(self, field: str | None, message: str, code: str = "invalid_field") -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message
        self.code = code

    def as_dict(self) -> dict[str, str | None]:
        return {"code": self.code, "message": self.message, "field": self.field}


class NotFoundError(LookupError):
    """An unknown tenant, plan or metric; `kind` names which."""

    def __init__(self, kind: str, identifier: str) -> None:
        super().__init__(f"unknown {kind} {identifier!r}")
        self.kind = kind
        self.identifier = identifier
