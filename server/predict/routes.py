"""POST /v1/projects/{id}/predict and /predict/batch."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from ..auth import Principal, require
from ..db.entities import ModelVersion, Role, VersionStatus
from ..deps import SessionDep, SettingsDep
from ..errors import Problem, not_found
from ..imaging import DecodedImage
from ..projects import repository as projects
from ..storage import LocalBlobStore
from ..studies.routes import parse_spacing, read_capped
from ..studies.schemas import Spacing
from ..studies.service import decode_upload
from .schemas import PredictedLandmark, PredictionOut

router = APIRouter(prefix="/v1/projects/{project_id}", tags=["predict"])
PredictDep = Annotated[Principal, Depends(require(Role.predict, Role.admin, Role.annotator))]
#: Most images in one synchronous batch request.
MAX_BATCH = 16


def _version(session: SessionDep, project_id: uuid.UUID, version_id: uuid.UUID | None) -> ModelVersion:
    if version_id is not None:
        version = session.get(ModelVersion, version_id)
        if version is None or version.project_id != project_id:
            raise not_found("model version")
        return version
    version = session.scalar(
        select(ModelVersion).where(ModelVersion.project_id == project_id, ModelVersion.status == VersionStatus.active)
    )
    if version is None:
        raise Problem(
            409,
            "the project has no active model version yet: submit a landmark set for training and "
            "let it pass validation (or promote a version)",
            slug="no-model",
        )
    return version


def _predict(
    request: Request, version: ModelVersion, images: list[tuple[DecodedImage, str | None]]
) -> list[PredictionOut]:
    blobs = LocalBlobStore(request.app.state.settings.resolved_blob_dir)
    predictor = request.app.state.model_cache.get(version.id, version.checkpoint_blob, blobs)
    results = predictor.predict([im.pixels for im, _ in images], [im.spacing_mm for im, _ in images])
    out = []
    for (image, filename), prediction in zip(images, results, strict=True):
        sx, sy = image.spacing_mm or (None, None)
        out.append(
            PredictionOut(
                model_version_id=version.id,
                model_version_number=version.number,
                checkpoint_sha256=version.checkpoint_sha256,
                width=image.width,
                height=image.height,
                spacing=Spacing(x_mm=sx, y_mm=sy, source=str(image.spacing_source)),
                landmarks=[PredictedLandmark(**vars(lm)) for lm in prediction.landmarks],
                filename=filename,
            )
        )
    return out


SpacingX = Annotated[float | None, Form(description="mm per pixel along x; overrides the file's")]
SpacingY = Annotated[float | None, Form(description="mm per pixel along y")]
VersionField = Annotated[uuid.UUID | None, Form(description="a version of this project; default: the active one")]


@router.post("/predict", response_model=PredictionOut)
async def predict(
    project_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: PredictDep,
    file: Annotated[UploadFile, File(description="DICOM, PNG, JPEG, BMP, TIFF, MHA, NRRD or NIfTI")],
    spacing_x_mm: SpacingX = None,
    spacing_y_mm: SpacingY = None,
    version_id: VersionField = None,
) -> PredictionOut:
    """Every landmark the model knows, in the original image's pixels (and mm where the spacing is known), with
    the model version that produced them. Nothing of the image is stored."""
    projects.get_project(session, principal.clinic(), project_id)
    version = _version(session, project_id, version_id)
    spacing = parse_spacing(spacing_x_mm, spacing_y_mm)
    data = await read_capped(file, settings.max_upload_bytes)
    image = await run_in_threadpool(decode_upload, data, file.filename, settings.max_image_pixels, spacing)
    [result] = await run_in_threadpool(_predict, request, version, [(image, file.filename)])
    return result


@router.post("/predict/batch", response_model=list[PredictionOut])
async def predict_batch(
    project_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: PredictDep,
    files: Annotated[list[UploadFile], File(description=f"up to {MAX_BATCH} images")],
    spacing_x_mm: SpacingX = None,
    spacing_y_mm: SpacingY = None,
    version_id: VersionField = None,
) -> list[PredictionOut]:
    """Several images in one request (one forward pass in batches); the spacing, if given, applies to all.
    Any unusable image refuses the whole request, naming the file."""
    projects.get_project(session, principal.clinic(), project_id)
    version = _version(session, project_id, version_id)
    if len(files) > MAX_BATCH:
        raise Problem(413, f"at most {MAX_BATCH} images per request; got {len(files)}", slug="batch-too-large")
    spacing = parse_spacing(spacing_x_mm, spacing_y_mm)
    images = []
    for f in files:
        data = await read_capped(f, settings.max_upload_bytes)
        try:
            image = await run_in_threadpool(decode_upload, data, f.filename, settings.max_image_pixels, spacing)
        except Problem as exc:
            exc.detail = f"{f.filename}: {exc.detail}"
            raise
        images.append((image, f.filename))
    return await run_in_threadpool(_predict, request, version, images)
