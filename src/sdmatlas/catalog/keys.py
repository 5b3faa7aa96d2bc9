"""API keys for write access: created and revoked by the CLI, checked on every request
that creates, changes or deletes something.

A key reads ``sdm_<prefix>_<secret>``: the prefix (8 hex digits) is public and finds
the row; only the SHA-256 of the whole key is stored. Keys are 256-bit random, so a
fast hash is enough (a slow password hash defends guessable secrets, which these are
not). The hash is compared with :func:`hmac.compare_digest`, in constant time, and an
unknown prefix is compared against a dummy hash, so timing tells nothing about which
prefixes exist.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select

from sdmatlas.catalog.db import Catalog
from sdmatlas.catalog.schema import ApiKey
from sdmatlas.errors import (
    AuthenticationError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
)

#: Every scope a key may hold.
SCOPES = {
    "jobs:write": "create and cancel on-demand prediction jobs",
    "admin": "every write route (implies all other scopes)",
}
_KEY = re.compile(r"^sdm_([0-9a-f]{8})_([A-Za-z0-9_-]{43})$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")
_DUMMY = hashlib.sha256(b"no such key").hexdigest()


@dataclass(frozen=True)
class KeyInfo:
    id: int
    name: str
    prefix: str
    scopes: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _info(row: ApiKey) -> KeyInfo:
    return KeyInfo(row.id, row.name, row.prefix, tuple(row.scopes), row.created_at, row.revoked_at)


def check_scopes(scopes: list[str]) -> list[str]:
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise InvalidInputError(
            f"scopes {unknown or '(none)'} are not known; give one or more of {sorted(SCOPES)}"
        )
    return sorted(set(scopes))


def create_key(catalog: Catalog, name: str, scopes: list[str]) -> tuple[KeyInfo, str]:
    """A new key named ``name`` with ``scopes``; returns it and the token, which is shown
    this once and never stored."""
    if not _NAME.match(name):
        raise InvalidInputError(
            f"key name {name[:40]!r}: use 1-100 letters, digits and . _ @ -, starting with "
            "a letter or digit"
        )
    scopes = check_scopes(scopes)
    with catalog.session() as s:
        if s.scalar(select(ApiKey.id).where(ApiKey.name == name)) is not None:
            raise ConflictError(f"a key named {name!r} exists: revoke it or choose another name")
        while True:
            prefix = secrets.token_hex(4)
            if s.scalar(select(ApiKey.id).where(ApiKey.prefix == prefix)) is None:
                break
        token = f"sdm_{prefix}_{secrets.token_urlsafe(32)}"
        row = ApiKey(
            name=name,
            prefix=prefix,
            secret_hash=_hash(token),
            scopes=scopes,
            created_at=datetime.now(UTC),
        )
        s.add(row)
        s.flush()
        return _info(row), token


def revoke_key(catalog: Catalog, name: str) -> KeyInfo:
    """Revoke the key named ``name`` (its row stays, for the jobs it made)."""
    with catalog.session() as s:
        row = s.scalar(select(ApiKey).where(ApiKey.name == name))
        if row is None:
            raise NotFoundError(f"no API key named {name!r}")
        if row.revoked_at is None:
            row.revoked_at = datetime.now(UTC)
        return _info(row)


def list_keys(catalog: Catalog) -> list[KeyInfo]:
    with catalog.session() as s:
        return [_info(r) for r in s.scalars(select(ApiKey).order_by(ApiKey.id))]


def authenticate(catalog: Catalog, authorization: str | None, scope: str) -> KeyInfo:
    """The key an ``Authorization: Bearer`` header carries, if it is valid, not revoked,
    and holds ``scope`` (or ``admin``). 401 for no, malformed, unknown or revoked keys;
    403 for a valid key without the scope."""
    if not authorization:
        raise AuthenticationError(
            "this route needs an API key: send it as 'Authorization: Bearer <key>' "
            "(keys are made by 'sdmatlas keys create')"
        )
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthenticationError("send the API key as 'Authorization: Bearer <key>'")
    m = _KEY.match(token)
    with catalog.session() as s:
        row = s.scalar(select(ApiKey).where(ApiKey.prefix == m[1])) if m else None
    stored = row.secret_hash if row is not None else _DUMMY
    if not hmac.compare_digest(stored, _hash(token)) or row is None:
        raise AuthenticationError("the API key is not valid")
    if row.revoked_at is not None:
        raise AuthenticationError(f"the API key {row.name!r} was revoked")
    if scope not in row.scopes and "admin" not in row.scopes:
        raise PermissionDeniedError(
            f"the API key {row.name!r} lacks the scope {scope!r} (it has {sorted(row.scopes)})"
        )
    return _info(row)
