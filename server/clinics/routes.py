"""/v1/clinics and /v1/api-keys: the system key creates clinics; clinic admins manage their own keys."""

from __future__ import annotations

import uuid

from fastapi import APIRouter
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ..auth import KeyManagerDep, Principal, PrincipalDep, SystemDep, create_key
from ..db.base import utcnow
from ..db.entities import ApiKey, Clinic, Role
from ..deps import SessionDep
from ..problems import Problem, not_found
from .schemas import ApiKeyIn, ApiKeyOut, ClinicCreated, ClinicIn, ClinicOut, ClinicSettingsIn, NewApiKey, WhoAmI

router = APIRouter(prefix="/v1", tags=["clinics"])


@router.post("/clinics", status_code=201, response_model=ClinicCreated)
def create_clinic(body: ClinicIn, session: SessionDep, _: SystemDep) -> ClinicCreated:
    """Create a clinic and its first admin key (system key only)."""
    clinic = Clinic(name=body.name, keep_descriptors=body.keep_descriptors)
    session.add(clinic)
    try:
        session.flush()
    except IntegrityError as exc:
        raise Problem(409, f"a clinic named {body.name!r} exists already", slug="conflict") from exc
    row, key = create_key(session, role=Role.admin, clinic_id=clinic.id, name="first admin")
    session.commit()
    return ClinicCreated(
        clinic=ClinicOut.model_validate(clinic),
        admin_key=NewApiKey(**ApiKeyOut.model_validate(row).model_dump(), key=key),
    )


@router.get("/clinics", response_model=list[ClinicOut])
def list_clinics(session: SessionDep, _: SystemDep) -> list[Clinic]:
    return list(session.scalars(select(Clinic).order_by(Clinic.created_at)))


@router.patch("/clinics/{clinic_id}", response_model=ClinicOut)
def update_clinic(
    clinic_id: uuid.UUID, body: ClinicSettingsIn, session: SessionDep, principal: KeyManagerDep
) -> Clinic:
    """Change a clinic's settings (its admin or the system key); studies stored before keep what they were
    stored with."""
    clinic = _own_clinic(principal, clinic_id, session)
    clinic.keep_descriptors = body.keep_descriptors
    session.commit()
    return clinic


def _own_clinic(principal: Principal, clinic_id: uuid.UUID, session: SessionDep) -> Clinic:
    clinic = session.get(Clinic, clinic_id)
    # Another clinic's id answers 404, exactly like an id that does not exist.
    if clinic is None or (principal.role != Role.system and principal.clinic_id != clinic_id):
        raise not_found("clinic")
    return clinic


@router.post("/clinics/{clinic_id}/api-keys", status_code=201, response_model=NewApiKey)
def create_api_key(clinic_id: uuid.UUID, body: ApiKeyIn, session: SessionDep, principal: KeyManagerDep) -> NewApiKey:
    """A new key for the clinic (its admins, or the system key). The secret is shown once."""
    _own_clinic(principal, clinic_id, session)
    if body.role == Role.system:
        raise Problem(422, "a clinic key cannot have the system role", slug="invalid-request")
    row, key = create_key(session, role=body.role, clinic_id=clinic_id, name=body.name)
    session.commit()
    return NewApiKey(**ApiKeyOut.model_validate(row).model_dump(), key=key)


@router.get("/clinics/{clinic_id}/api-keys", response_model=list[ApiKeyOut])
def list_api_keys(clinic_id: uuid.UUID, session: SessionDep, principal: KeyManagerDep) -> list[ApiKey]:
    _own_clinic(principal, clinic_id, session)
    return list(session.scalars(select(ApiKey).where(ApiKey.clinic_id == clinic_id).order_by(ApiKey.created_at)))


@router.delete("/api-keys/{key_id}", response_model=ApiKeyOut)
def revoke_api_key(key_id: uuid.UUID, session: SessionDep, principal: KeyManagerDep) -> ApiKey:
    """Revoke a key (kept for the audit trail, never deleted). Revoking twice is harmless."""
    row = session.get(ApiKey, key_id)
    if row is None or (principal.role != Role.system and row.clinic_id != principal.clinic_id):
        raise not_found("API key")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.commit()
    return row


@router.get("/whoami", response_model=WhoAmI)
async def whoami(principal: PrincipalDep) -> WhoAmI:
    """The presented key's role and clinic (any valid key, the system key too)."""
    return WhoAmI(key_id=principal.key_id, clinic_id=principal.clinic_id, role=principal.role, name=principal.name)
