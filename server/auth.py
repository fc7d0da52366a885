"""API keys: per clinic with a role, stored hashed; a system-admin key made at install."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from .db.entities import ApiKey, Role
from .deps import SessionDep, SettingsDep
from .problems import Problem

KEY_PREFIX = "kamp"


@dataclass(frozen=True)
class Principal:
    key_id: uuid.UUID
    clinic_id: uuid.UUID | None
    role: Role
    name: str

    def clinic(self) -> uuid.UUID:
        """The caller's clinic; a system key has none and cannot act inside one."""
        if self.clinic_id is None:
            raise Problem(403, "a system key manages clinics and keys; use a clinic's key for this", slug="forbidden")
        return self.clinic_id


def new_key() -> tuple[str, str, str]:
    """(the key to hand out once, its public prefix, the sha256 of the key to store)."""
    prefix = secrets.token_hex(6)
    key = f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    return key, prefix, hash_key(key)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(session: Session, *, role: Role, clinic_id: uuid.UUID | None, name: str = "") -> tuple[ApiKey, str]:
    key, prefix, digest = new_key()
    row = ApiKey(role=role, clinic_id=clinic_id, name=name, prefix=prefix, secret_sha256=digest)
    session.add(row)
    session.flush()
    return row, key


def presented_key(headers: Mapping[str, str]) -> str:
    """The key a request presents (Authorization: Bearer, or X-API-Key), or ""."""
    header = headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return headers.get("x-api-key", "").strip()


class RateLimiter:
    """Requests per minute per key, in this process (a sliding window of request times)."""

    def __init__(self) -> None:
        self._hits: dict[uuid.UUID, deque[float]] = {}
        self._lock = threading.Lock()

    def check(self, key_id: uuid.UUID, per_minute: int) -> None:
        if per_minute <= 0:
            return
        now = time.monotonic()
        with self._lock:
            hits = self._hits.setdefault(key_id, deque())
            while hits and now - hits[0] >= 60.0:
                hits.popleft()
            if len(hits) >= per_minute:
                retry = max(1, int(60.0 - (now - hits[0])) + 1)
                raise Problem(
                    429,
                    f"more than {per_minute} requests in a minute with this key; retry in {retry} s",
                    slug="rate-limited",
                    headers={"Retry-After": str(retry)},
                )
            hits.append(now)


def verify_key(session: Session, key: str) -> Principal:
    """The principal of a presented key; 401 for none, an unknown, mistyped or revoked one."""
    unauthorized = {"WWW-Authenticate": "Bearer"}
    if not key:
        raise Problem(
            401, "an API key is required (Authorization: Bearer <key>)", slug="unauthorized", headers=unauthorized
        )
    parts = key.split("_")
    row = None
    if len(parts) >= 3 and parts[0] == KEY_PREFIX:
        row = session.scalar(select(ApiKey).where(ApiKey.prefix == parts[1]))
    if row is None or row.revoked_at is not None or not hmac.compare_digest(row.secret_sha256, hash_key(key)):
        raise Problem(
            401, "the API key is not valid (unknown, mistyped or revoked)", slug="unauthorized", headers=unauthorized
        )
    return Principal(key_id=row.id, clinic_id=row.clinic_id, role=row.role, name=row.name)


#: Where server.body_guard leaves the principal it verified before letting a request's body be read.
VERIFIED = "verified_principal"


def authenticate(request: Request, session: SessionDep, settings: SettingsDep) -> Principal:
    principal = request.scope.get("state", {}).get(VERIFIED) or verify_key(session, presented_key(request.headers))
    request.app.state.rate_limiter.check(principal.key_id, settings.rate_limit_per_minute)
    return principal


def require(*roles: Role) -> Callable[..., Awaitable[Principal]]:
    """Dependency: the caller's principal, if its role is one of `roles`."""

    async def dependency(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        # async: it only compares roles, so it need not take a trip through the thread pool as a plain def would.
        if principal.role not in roles:
            allowed = ", ".join(r.value for r in roles)
            raise Problem(
                403, f"this needs a key with role {allowed}; yours is {principal.role.value}", slug="forbidden"
            )
        return principal

    return dependency


PrincipalDep = Annotated[Principal, Depends(authenticate)]
KeyManagerDep = Annotated[Principal, Depends(require(Role.system, Role.admin))]
SystemDep = Annotated[Principal, Depends(require(Role.system))]
AdminDep = Annotated[Principal, Depends(require(Role.admin))]
ReaderDep = Annotated[Principal, Depends(require(Role.admin, Role.annotator))]
AnnotatorDep = Annotated[Principal, Depends(require(Role.admin, Role.annotator))]
