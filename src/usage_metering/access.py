"""Access control: API keys, who they belong to, and checking a presented token.

A token looks like ``um_<key_id>_<secret>``: the key id (16 hex characters)
finds the stored key, the SHA-256 of the whole token verifies it. Tokens are
shown once, when created; only the hash is stored.

Authentication is on as soon as any key exists, revoked ones included, so
revoking the last key never quietly opens a server. Valid keys are cached in
memory and the cache is rebuilt on every create and revoke: a revoked key fails
on the next request. On a lake, where other nodes change them too, the node
re-reads them every few seconds (`refresh`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, ConfigDict, Field, model_validator
from pydantic.config import JsonDict

from .schemas import ValidationError, check_id, validate
from .schemas.validation import closed, reported_as
from .schemas.wire import Identifier
from .store import Database
from .store.keys import ApiKey, insert_key, load_key, load_keys, mark_revoked

ADMIN = "admin"
TENANT = "tenant"
TOKEN_PREFIX = "um_"
KEY_ID_HEX_CHARS = 16
NAME_MAX_LENGTH = 200
NAME_MESSAGE = f"must be 1-{NAME_MAX_LENGTH} printable characters"


def _printable(name: str) -> str:
    cleaned = name.strip()
    if not cleaned or not cleaned.isprintable():
        raise ValidationError(None, NAME_MESSAGE, "invalid_name")
    return cleaned


KeyName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=NAME_MAX_LENGTH,
        description="Printable characters, not only blanks; kept without surrounding whitespace",
    ),
    reported_as("invalid_name", NAME_MESSAGE, string_type=("invalid_name", "must be a string")),
    AfterValidator(_printable),
]

# A tenant key names its tenant; an admin key has none (`ApiKeyRequest._tenant_for_tenant_keys`).
TENANT_FOR_TENANT_KEYS: JsonDict = {
    "anyOf": [
        {"properties": {"scope": {"const": ADMIN}, "tenant_id": {"type": "null"}}},
        {"required": ["tenant_id"], "properties": {"scope": {"const": TENANT}, "tenant_id": {"type": "string"}}},
    ]
}


@dataclass(frozen=True)
class ApiKeyRequest:
    """What a new key is to be: the `POST /api/keys` body, and what `KeyRing.create` checks."""

    __pydantic_config__: ClassVar[ConfigDict] = closed(TENANT_FOR_TENANT_KEYS)

    name: KeyName
    scope: Annotated[Literal["admin", "tenant"], reported_as("invalid_scope", "must be admin or tenant")]
    tenant_id: Annotated[Identifier | None, Field(description="Tenant keys only (and required there)")] = None

    @model_validator(mode="after")
    def _tenant_for_tenant_keys(self) -> ApiKeyRequest:
        if self.scope == ADMIN and self.tenant_id is not None:
            raise ValidationError("tenant_id", "only tenant keys have a tenant", "unexpected_field")
        if self.scope == TENANT and self.tenant_id is None:
            raise ValidationError("tenant_id", "is required", "missing_field")
        return self


@dataclass(frozen=True)
class Principal:
    """Who a valid token belongs to: an admin, or one tenant."""

    key_id: str
    name: str
    scope: str
    tenant_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.scope == ADMIN

    def may_access(self, tenant_id: object) -> bool:
        return self.is_admin or tenant_id == self.tenant_id


def hash_token(token: str) -> str:
    """SHA-256 hex of the whole token.

    A plain fast hash is enough here (no salt, no bcrypt): tokens carry 256
    random bits from `secrets`, so there is nothing to guess or look up in a
    table, unlike a password.
    """
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> tuple[str, str]:
    """(key_id, token) for a new key."""
    key_id = secrets.token_hex(KEY_ID_HEX_CHARS // 2)
    return key_id, f"{TOKEN_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def key_id_of(token: str) -> str | None:
    """The key id inside a well-formed token, else None."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    key_id, separator, secret = token[len(TOKEN_PREFIX) :].partition("_")
    if not separator or not secret or len(key_id) != KEY_ID_HEX_CHARS:
        return None
    return key_id


def _principal(key: ApiKey) -> Principal:
    return Principal(key.key_id, key.name or "", key.scope, key.tenant_id)


class KeyRing:
    """The stored keys plus an in-memory map of the valid ones for `authenticate`."""

    def __init__(self, database: Database, *, clock: Callable[[], datetime] | None = None) -> None:
        self.database = database
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self._lock = threading.Lock()  # one write (and cache rebuild) at a time
        self._valid: dict[str, tuple[str, Principal]] = {}
        self._any_key = False
        self._rebuild_cache()

    @property
    def enabled(self) -> bool:
        """Whether requests need a key: true once any key has been created."""
        return self._any_key

    def refresh(self) -> None:
        """Re-read the stored keys (on a lake, other nodes create and revoke them)."""
        with self._lock:
            self._rebuild_cache()

    def _rebuild_cache(self) -> None:
        keys = load_keys(self.database.cursor())
        self._valid = {k.key_id: (k.key_hash, _principal(k)) for k in keys if not k.revoked}
        self._any_key = bool(keys)

    def create(self, name: str, scope: str, tenant_id: str | None = None) -> tuple[ApiKey, str]:
        """Store a new key; returns it with its token, which is not kept anywhere."""
        request = validate(ApiKeyRequest, {"name": name, "scope": scope, "tenant_id": tenant_id})
        key_id, token = new_token()
        key = ApiKey(key_id, request.name, request.scope, request.tenant_id, self.clock(), key_hash=hash_token(token))
        with self._lock:
            insert_key(self.database.cursor(), key)
            self._rebuild_cache()
        return key, token

    def all_keys(self) -> list[ApiKey]:
        return load_keys(self.database.cursor())

    def revoke(self, key_id: str) -> ApiKey | None:
        """Revoke a key (again is harmless); None when there is no such key."""
        check_id("key_id", key_id)
        with self._lock:
            cursor = self.database.cursor()
            if load_key(cursor, key_id) is None:
                return None
            mark_revoked(cursor, key_id, self.clock())
            self._rebuild_cache()
            return load_key(cursor, key_id)

    def authenticate(self, token: str) -> Principal | None:
        """The principal of a valid token; None for malformed, unknown or revoked ones."""
        key_id = key_id_of(token)
        entry = self._valid.get(key_id) if key_id is not None else None
        if entry is None:
            return None
        stored_hash, principal = entry
        return principal if hmac.compare_digest(hash_token(token), stored_hash) else None
