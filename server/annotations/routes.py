"""/v1/projects/{id}/landmark-sets/{k}/annotations."""

from __future__ import annotations

import uuid

from fastapi import APIRouter
from sqlalchemy import select

from ..auth import AnnotatorDep
from ..db.entities import Annotation, LandmarkSet, Split
from ..deps import SessionDep, SettingsDep
from ..errors import not_found
from ..projects import repository as projects
from ..studies.service import get_study
from . import service
from .schemas import AnnotationIn, AnnotationOut, PointOut

router = APIRouter(prefix="/v1/projects/{project_id}/landmark-sets/{step}/annotations", tags=["annotations"])


def _out(row: Annotation, landmark_set: LandmarkSet, role: str) -> AnnotationOut:
    return AnnotationOut(
        id=row.id,
        study_id=row.study_id,
        step=landmark_set.step,
        version=row.version,
        annotator=row.annotator,
        split=role,
        points=[PointOut(code=c, x=xy[0], y=xy[1]) for c, xy in row.points.items()],
        source=row.source,
        created_at=row.created_at,
    )


def _roles(session: SessionDep, landmark_set: LandmarkSet) -> dict[uuid.UUID, str]:
    return {s.study_id: s.role for s in session.scalars(select(Split).where(Split.set_id == landmark_set.id))}


@router.post("", status_code=201, response_model=AnnotationOut)
def annotate(
    project_id: uuid.UUID,
    step: int,
    body: AnnotationIn,
    session: SessionDep,
    settings: SettingsDep,
    principal: AnnotatorDep,
) -> AnnotationOut:
    """Annotate the set's landmarks (all or some) on one study. A second post for the same study and set is a
    new version; the study's train/val role in the set is drawn at its first annotation and never changes."""
    clinic = principal.clinic()
    landmark_set = projects.get_set(session, projects.get_project(session, clinic, project_id), step)
    study = get_study(session, clinic, body.study_id)
    points = service.validate_points(body.points, landmark_set, study)
    row, split = service.add_annotation(
        session,
        study,
        landmark_set,
        points,
        annotator=body.annotator or principal.name or str(principal.key_id),
        api_key_id=principal.key_id,
        validation_fraction=settings.validation_fraction,
    )
    return _out(row, landmark_set, split.role)


@router.get("", response_model=list[AnnotationOut])
def list_annotations(
    project_id: uuid.UUID, step: int, session: SessionDep, principal: AnnotatorDep
) -> list[AnnotationOut]:
    """The current (latest) annotation of every study in the set."""
    landmark_set = projects.get_set(session, projects.get_project(session, principal.clinic(), project_id), step)
    roles = _roles(session, landmark_set)
    return [_out(a, landmark_set, roles[a.study_id]) for a in service.current_annotations(session, landmark_set)]


@router.get("/{study_id}", response_model=list[AnnotationOut])
def annotation_history(
    project_id: uuid.UUID, step: int, study_id: uuid.UUID, session: SessionDep, principal: AnnotatorDep
) -> list[AnnotationOut]:
    """Every version of one study's annotation in the set, oldest first."""
    clinic = principal.clinic()
    landmark_set = projects.get_set(session, projects.get_project(session, clinic, project_id), step)
    get_study(session, clinic, study_id)
    rows = list(
        session.scalars(
            select(Annotation)
            .where(Annotation.set_id == landmark_set.id, Annotation.study_id == study_id)
            .order_by(Annotation.version)
        )
    )
    if not rows:
        raise not_found("annotation of this study in this set")
    role = _roles(session, landmark_set)[study_id]
    return [_out(a, landmark_set, role) for a in rows]
