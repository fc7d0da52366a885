"""GET /v1/analyses (the catalogue), GET /v1/projects/{id}/analyses and PUT .../analysis-landmarks."""

from __future__ import annotations

import uuid
from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Query

from models.analyses import load_catalogue

from ..auth import AdminDep, PrincipalDep, ReaderDep
from ..deps import SessionDep
from ..projects import repository as projects
from ..projects.schemas import AnalysisLandmarksIn, ProjectOut, project_out
from . import service
from .schemas import AnalysisOut, CatalogueOut, ClassOut, MeasurementDefOut, NormOut, ProjectAnalysesOut

router = APIRouter(prefix="/v1", tags=["analyses"])
VersionQuery = Annotated[uuid.UUID | None, Query(description="a version of the project; default: the active one")]


@router.get("/analyses", response_model=CatalogueOut)
async def catalogue(principal: PrincipalDep) -> CatalogueOut:
    """The catalogue of cephalometric analyses: each measurement's landmarks (catalogue codes), construction,
    unit, norm and clinical classes, with the published source (any valid key, the system key too)."""
    cat = load_catalogue()
    analyses = [
        AnalysisOut(
            code=a.code,
            name=a.name,
            source=a.source,
            measurements=[
                MeasurementDefOut(
                    code=m.code,
                    name=m.name,
                    unit=m.unit,
                    landmarks=cat.landmarks_of(a, m),
                    construction=m.construction,
                    norm=NormOut(mean=m.norm.mean, sd=m.norm.sd) if m.norm else None,
                    classes=[ClassOut(**asdict(c)) for c in m.classes],
                )
                for m in a.answered
            ],
        )
        for a in cat.analyses
    ]
    return CatalogueOut(version=cat.version, landmarks=cat.landmarks, analyses=analyses)


@router.get("/projects/{project_id}/analyses", response_model=ProjectAnalysesOut)
def project_analyses(
    project_id: uuid.UUID,
    session: SessionDep,
    principal: ReaderDep,
    version_id: VersionQuery = None,
) -> ProjectAnalysesOut:
    """Which analyses the project's active (or given) version can compute, and for each measurement it cannot,
    the landmarks it lacks and the step that defines each (none yet: the step a clinic must add)."""
    project = projects.get_project(session, principal.clinic(), project_id)
    version = service.measured_version(session, project, version_id)
    return ProjectAnalysesOut.model_validate(
        {
            "project_id": project.id,
            "model_version_id": version.id if version else None,
            "model_version_number": version.number if version else None,
            "analysis_landmarks": project.analysis_landmarks or {},
            "analyses": service.project_coverage(project, version),
        }
    )


@router.put("/projects/{project_id}/analysis-landmarks", response_model=ProjectOut)
def set_analysis_landmarks(
    project_id: uuid.UUID, body: AnalysisLandmarksIn, session: SessionDep, principal: AdminDep
) -> ProjectOut:
    """Replace the project's mapping of catalogue landmark codes to its own (422 naming an unknown catalogue code
    or a project code given twice); the next prediction measures with it."""
    project = projects.get_project(session, principal.clinic(), project_id)
    project.analysis_landmarks = service.check_mapping(body.analysis_landmarks)
    session.commit()
    session.refresh(project)
    return project_out(project)
