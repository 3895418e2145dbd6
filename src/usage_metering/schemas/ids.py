"""Identifier rules and generated event ids (UUIDv7: time-ordered, random)."""

from __future__ import annotations

import re

import uuid_utils

from .errors import ValidationError

ID_PATTERN = r"^[A-Za-z0-9_.:@-]{1,128}$"  # the JSON Schema's (ECMA: `$` is the very end)
ID_MAX_LENGTH = 128
ID_MESSAGE = "must be 1-128 characters of A-Z a-z 0-9 _ . : @ -"
ID_FULL_PATTERN = (
    r"^[A-Za-z0-9_.:@-]{1,128}\Z"  # the same for Python's re, where `$` also matches before a final newline
)
_ID_RE = re.compile(ID_FULL_PATTERN)


# Identifiers already found valid: tenants, metrics and users repeat from event to event, and a set
# lookup costs a tenth of the pattern match. Event ids rarely repeat and are not kept; nor is anything
# once the set is full.
_KNOWN_VALID: set[str] = set()
_KNOWN_VALID_MAX = 100_000


def check_id(field: str, value: object, *, required: bool = True) -> str | None:
    """Return `value` if it is a valid identifier, else raise naming `field`."""
    if type(value) is str and value in _KNOWN_VALID:
        return value
    if value is None:
        if required:
            raise ValidationError(field, "is required", "missing_field")
        return None
    if not isinstance(value, str):
        raise ValidationError(field, "must be a string", "invalid_type")
    if not _ID_RE.match(value):
        raise ValidationError(field, ID_MESSAGE, "invalid_id")
    if field != "event_id" and type(value) is str and len(_KNOWN_VALID) < _KNOWN_VALID_MAX:
        _KNOWN_VALID.add(value)
    return value


def uuid7() -> str:
    """A UUIDv7 string (RFC 9562): 48-bit Unix milliseconds, then random bits (uuid-utils, in Rust)."""
    return str(uuid_utils.uuid7())
