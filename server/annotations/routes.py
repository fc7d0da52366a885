"""/v1/projects/{id}/landmark-sets/{k}/annotations."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import APIRouter, File, Query, UploadFile
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..auth import AnnotatorDep, Principal
from ..db.entities import Annotation, LandmarkSet, Split
from ..deps import SessionDep, SettingsDep
from ..problems import Problem, not_found
from ..projects import repository as projects
from ..projects.params import StepPath
from ..settings import Settings
from ..studies import names
from ..studies.service import get_study
from . import importers, service
from .schemas import AnnotationIn, AnnotationOut, ImportOut, PointIn, PointOut

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
        seconds=row.seconds,
        created_at=row.created_at,
    )


def _roles(session: SessionDep, landmark_set: LandmarkSet) -> dict[uuid.UUID, str]:
    return {s.study_id: s.role for s in session.scalars(select(Split).where(Split.set_id == landmark_set.id))}


@router.post("", status_code=201, response_model=AnnotationOut)
def annotate(
    project_id: uuid.UUID,
    step: StepPath,
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
    [(row, role)] = service.add_annotations(
        session,
        landmark_set,
        [(study, points)],
        annotator=body.annotator or principal.name or str(principal.key_id),
        api_key_id=principal.key_id,
        validation_fraction=settings.validation_fraction,
        seconds=body.seconds,
    )
    return _out(row, landmark_set, role)


@router.get("", response_model=list[AnnotationOut])
def list_annotations(
    project_id: uuid.UUID, step: StepPath, session: SessionDep, principal: AnnotatorDep
) -> list[AnnotationOut]:
    """The current (latest) annotation of every study in the set."""
    landmark_set = projects.get_set(session, projects.get_project(session, principal.clinic(), project_id), step)
    roles = _roles(session, landmark_set)
    return [_out(a, landmark_set, roles[a.study_id]) for a in service.current_annotations(session, landmark_set)]


@router.get("/{study_id}", response_model=list[AnnotationOut])
def annotation_history(
    project_id: uuid.UUID, step: StepPath, study_id: uuid.UUID, session: SessionDep, principal: AnnotatorDep
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


@router.post("/import", status_code=201, response_model=ImportOut)
async def import_annotations(
    project_id: uuid.UUID,
    step: StepPath,
    session: SessionDep,
    settings: SettingsDep,
    principal: AnnotatorDep,
    files: Annotated[list[UploadFile], File(description="one COCO JSON, or one ISBI/CL-Detection .txt per image")],
    format: Annotated[Literal["coco", "isbi"], Query(description="coco: COCO keypoints JSON; isbi: text")] = "coco",
    annotator: Annotated[str | None, Query(max_length=200)] = None,
) -> ImportOut:
    """Bulk-load annotations of already uploaded studies, matched by file name (COCO images[].file_name, or the
    text file's stem against the uploaded image's name without extension). All or nothing: one bad item
    refuses the whole import and stores nothing."""
    contents = await run_in_threadpool(_read_import, files, settings.max_import_bytes)
    # Parsing and every database read and write block: off the event loop.
    request = _Import(project_id, step, contents, format, annotator)
    return await run_in_threadpool(_import, session, settings, principal, request)


def _read_import(files: list[UploadFile], limit: int) -> dict[str, bytes]:
    """{file name: bytes} of an import's files, read until together they pass `limit` (413); two files of one
    name (422) would hide one of them."""
    contents: dict[str, bytes] = {}
    left = limit
    for i, upload in enumerate(files):
        name = upload.filename or f"file{i}"
        if name in contents:
            raise Problem(422, f"two files are named {name!r}", slug="bad-import")
        upload.file.seek(0)
        contents[name] = upload.file.read(left + 1)
        left -= len(contents[name])
        if left < 0:
            raise Problem(
                413, f"the import's files are larger than the limit of {limit} bytes together", slug="upload-too-large"
            )
    return contents


@dataclass(frozen=True)
class _Import:
    project_id: uuid.UUID
    step: int
    contents: dict[str, bytes]
    format: str
    annotator: str | None


def _import(session: Session, settings: Settings, principal: Principal, request: _Import) -> ImportOut:
    clinic = principal.clinic()
    landmark_set = projects.get_set(session, projects.get_project(session, clinic, request.project_id), request.step)
    codes = [lm.code for lm in landmark_set.landmarks]
    contents, format, annotator = request.contents, request.format, request.annotator
    if format == "coco":
        if len(contents) != 1:
            raise Problem(422, "a COCO import takes exactly one JSON file", slug="bad-import")
        parsed = importers.parse_coco(next(iter(contents.values())), codes)
    else:
        parsed = importers.parse_isbi_text(contents, codes)
    if not parsed:
        raise Problem(422, "the import holds no annotation", slug="bad-import")
    studies = service.studies_by_reference(session, clinic, list(parsed), names.pseudonym_key(settings))
    matched = []
    missing = []
    for ref, points in parsed.items():
        study = studies.get(ref)
        if study is None:
            missing.append(ref)
            continue
        matched.append(
            (
                study,
                service.validate_points(
                    [PointIn(code=c, x=xy[0], y=xy[1]) for c, xy in points.items()], landmark_set, study
                ),
            )
        )
    if missing:
        raise Problem(
            422,
            f"no uploaded study is named {', '.join(sorted(missing)[:20])}; upload the images first",
            slug="bad-import",
        )
    rows = service.add_annotations(
        session,
        landmark_set,
        matched,
        annotator=annotator or principal.name or "import",
        api_key_id=principal.key_id,
        validation_fraction=settings.validation_fraction,
        source=f"import:{format}",
    )
    return ImportOut(imported=len(rows), annotations=[_out(a, landmark_set, role) for a, role in rows])
