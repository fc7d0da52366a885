"""/v1/projects and /v1/projects/{id}/landmark-sets."""

from __future__ import annotations

import uuid

from fastapi import APIRouter
from sqlalchemy.exc import IntegrityError

from ..analyses.service import check_mapping
from ..auth import AdminDep, ReaderDep
from ..db.entities import Association, Landmark, LandmarkSet, Project
from ..deps import SessionDep, SettingsDep
from ..problems import Problem
from ..training.bounds import check_bounds
from ..training.config import invalid_training
from . import repository as repo
from .params import StepPath
from .schemas import (
    AssociationOut,
    DicomwebIn,
    LandmarkOut,
    LandmarkSetIn,
    LandmarkSetOut,
    ProjectIn,
    ProjectOut,
    project_out,
)

router = APIRouter(prefix="/v1/projects", tags=["projects"])


def _set_out(row: LandmarkSet) -> LandmarkSetOut:
    return LandmarkSetOut(
        id=row.id,
        project_id=row.project_id,
        step=row.step,
        name=row.name,
        description=row.description,
        landmarks=[LandmarkOut.model_validate(lm) for lm in row.landmarks],
        associations=[AssociationOut(old=a.old_code, new=(a.new_code_a, a.new_code_b)) for a in row.associations],
        created_at=row.created_at,
    )


@router.post("", status_code=201, response_model=ProjectOut)
def create_project(body: ProjectIn, session: SessionDep, settings: SettingsDep, principal: AdminDep) -> ProjectOut:
    try:
        check_bounds(body.training, settings.training_bounds)
    except ValueError as exc:
        raise invalid_training(exc) from exc
    mapping = check_mapping(body.analysis_landmarks)
    # The gate keeps only the fields the clinic set: the others follow the service's settings.
    fields = body.model_dump() | {"gate": body.gate.model_dump(exclude_none=True), "analysis_landmarks": mapping}
    project = Project(clinic_id=principal.clinic(), **fields)
    session.add(project)
    try:
        session.flush()
    except IntegrityError as exc:
        raise Problem(409, f"the clinic has a project named {body.name!r} already", slug="conflict") from exc
    session.commit()
    session.refresh(project)
    return project_out(project)


@router.get("", response_model=list[ProjectOut])
def list_projects(session: SessionDep, principal: ReaderDep) -> list[ProjectOut]:
    return [project_out(p) for p in repo.list_projects(session, principal.clinic())]


@router.get("/{project_id}", response_model=ProjectOut)
def get_project(project_id: uuid.UUID, session: SessionDep, principal: ReaderDep) -> ProjectOut:
    return project_out(repo.get_project(session, principal.clinic(), project_id))


@router.put("/{project_id}/dicomweb", response_model=ProjectOut)
def set_dicomweb(project_id: uuid.UUID, body: DicomwebIn, session: SessionDep, principal: AdminDep) -> ProjectOut:
    """Replace the project's DICOMweb settings (e.g. `sr_on_store`); they apply to the next STOW-RS request."""
    project = repo.get_project(session, principal.clinic(), project_id)
    project.dicomweb = body.model_dump()
    session.commit()
    session.refresh(project)
    return project_out(project)


@router.post("/{project_id}/landmark-sets", status_code=201, response_model=LandmarkSetOut)
def append_landmark_set(
    project_id: uuid.UUID, body: LandmarkSetIn, session: SessionDep, principal: AdminDep
) -> LandmarkSetOut:
    """Append the next step. Sets are append-only; codes are unique within the project; an association names
    an old landmark of an earlier step and two new landmarks of this set."""
    project = repo.get_project(session, principal.clinic(), project_id)
    existing = repo.project_codes(session, project)
    reused = sorted(lm.code for lm in body.landmarks if lm.code in existing)
    if reused:
        raise Problem(409, f"landmark codes already used in this project: {', '.join(reused)}", slug="code-reused")
    for a in body.associations:
        if a.old not in existing:
            raise Problem(
                422,
                f"association {a.old} <- {list(a.new)}: {a.old} is not a landmark of an earlier step",
                slug="invalid-request",
            )
    row = LandmarkSet(
        project_id=project.id, step=repo.next_step(session, project), name=body.name, description=body.description
    )
    session.add(row)
    try:
        session.flush()
    except IntegrityError as exc:  # another request appended the same step at the same moment
        raise Problem(409, "another landmark set was appended concurrently; retry", slug="conflict") from exc
    for i, lm in enumerate(body.landmarks):
        session.add(Landmark(project_id=project.id, set_id=row.id, position=i, **lm.model_dump()))
    for a in body.associations:
        session.add(Association(set_id=row.id, old_code=a.old, new_code_a=a.new[0], new_code_b=a.new[1]))
    try:
        session.commit()
    except IntegrityError as exc:
        raise Problem(409, "a landmark code was taken concurrently; retry", slug="conflict") from exc
    session.refresh(row)
    return _set_out(row)


@router.get("/{project_id}/landmark-sets", response_model=list[LandmarkSetOut])
def list_landmark_sets(project_id: uuid.UUID, session: SessionDep, principal: ReaderDep) -> list[LandmarkSetOut]:
    project = repo.get_project(session, principal.clinic(), project_id)
    return [_set_out(s) for s in project.landmark_sets]


@router.get("/{project_id}/landmark-sets/{step}", response_model=LandmarkSetOut)
def get_landmark_set(
    project_id: uuid.UUID, step: StepPath, session: SessionDep, principal: ReaderDep
) -> LandmarkSetOut:
    project = repo.get_project(session, principal.clinic(), project_id)
    return _set_out(repo.get_set(session, project, step))
