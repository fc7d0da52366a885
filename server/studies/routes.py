"""/v1/studies: upload (multipart), read, list, and the display image."""

from __future__ import annotations

import uuid
from typing import Annotated, BinaryIO

from fastapi import APIRouter, File, Form, Query, Request, Response, UploadFile
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from ..auth import AnnotatorDep
from ..db.entities import Study
from ..deps import SessionDep, SettingsDep
from ..imaging.types import plausible_spacing, spacing_rule
from ..problems import Problem
from ..storage import BlobStore, blob_store
from . import names, service
from .schemas import Spacing, StudyOut

router = APIRouter(prefix="/v1/studies", tags=["studies"])


def study_out(study: Study, created: bool = True) -> StudyOut:
    return StudyOut(
        id=study.id,
        width=study.width,
        height=study.height,
        format=study.format,
        modality=study.modality,
        spacing=Spacing(x_mm=study.spacing_x_mm, y_mm=study.spacing_y_mm, source=study.spacing_source),
        deid_method=study.deid_method,
        pixel_sha256=study.pixel_sha256,
        created_at=study.created_at,
        created=created,
    )


def request_blobs(request: Request) -> BlobStore:
    return blob_store(request.app.state.settings)


async def read_capped(upload: UploadFile, limit: int) -> bytes:
    """The upload's bytes, refusing (413) anything over `limit` without reading it all into memory."""
    return await run_in_threadpool(read_capped_file, upload.file, limit)


def read_capped_file(file: BinaryIO, limit: int) -> bytes:
    """`read_capped` of an upload's spooled file, for code already off the event loop."""
    file.seek(0)
    data = file.read(limit + 1)
    if len(data) > limit:
        raise Problem(413, f"the upload is larger than the limit of {limit} bytes", slug="upload-too-large")
    return data


def parse_spacing(x: float | None, y: float | None) -> tuple[float, float] | None:
    if x is None and y is None:
        return None
    if x is None or y is None:
        raise Problem(422, "give both spacing_x_mm and spacing_y_mm, or neither", slug="bad-spacing")
    if not plausible_spacing(x, y):
        raise Problem(422, f"pixel spacing must be {spacing_rule()}; got ({x}, {y})", slug="bad-spacing")
    return (x, y)


@router.post(
    "",
    status_code=201,
    response_model=StudyOut,
    responses={200: {"model": StudyOut, "description": "the same image was uploaded before: that study"}},
)
async def upload_study(
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    principal: AnnotatorDep,
    file: Annotated[UploadFile, File(description="DICOM, PNG, JPEG, BMP, TIFF, MHA, NRRD or NIfTI")],
    spacing_x_mm: Annotated[float | None, Form(description="mm per pixel along x; overrides the file's")] = None,
    spacing_y_mm: Annotated[float | None, Form(description="mm per pixel along y")] = None,
) -> StudyOut:
    """Upload one image. DICOM is de-identified on ingest; no patient identifier is stored or returned. The
    same pixels uploaded again answer 200 with the existing study."""
    spacing = parse_spacing(spacing_x_mm, spacing_y_mm)
    data = await read_capped(file, settings.max_upload_bytes)
    image = await run_in_threadpool(
        service.decode_upload,
        data,
        file.filename,
        settings.image_limits,
        spacing,
        None,
        request.app.state.decode_slots,
    )
    study, created = await run_in_threadpool(
        service.ingest,
        session,
        request_blobs(request),
        principal.clinic(),
        image,
        file.filename,
        names.pseudonym_key(settings),
    )
    if not created:
        response.status_code = 200
    response.headers["Location"] = f"/v1/studies/{study.id}"
    return study_out(study, created)


@router.get("", response_model=list[StudyOut])
def list_studies(
    session: SessionDep,
    principal: AnnotatorDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1, description="studies to skip")] = 0,
) -> list[StudyOut]:
    rows = session.scalars(
        select(Study)
        .where(Study.clinic_id == principal.clinic())
        .order_by(Study.created_at, Study.id)
        .limit(limit)
        .offset(offset)
    )
    return [study_out(s) for s in rows]


@router.get("/{study_id}", response_model=StudyOut)
def get_study(study_id: uuid.UUID, session: SessionDep, principal: AnnotatorDep) -> StudyOut:
    return study_out(service.get_study(session, principal.clinic(), study_id))


@router.get(
    "/{study_id}/image",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "16-bit greyscale display image"}},
)
def get_study_image(study_id: uuid.UUID, request: Request, session: SessionDep, principal: AnnotatorDep) -> Response:
    study = service.get_study(session, principal.clinic(), study_id)
    return Response(request_blobs(request).get(study.pixels_blob), media_type="image/png")


@router.get(
    "/{study_id}/thumbnail",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}, "description": "8-bit JPEG, longest side at most `size`"}},
)
def get_study_thumbnail(
    study_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    principal: AnnotatorDep,
    size: Annotated[int, Query(ge=32, le=1024, description="longest side in pixels")] = 256,
) -> Response:
    """A small JPEG of the study for grids (the console's); the image itself is GET .../image. Made within a
    decoding slot, as uploads are: a grid asks for many at once, and each decodes the whole image."""
    study = service.get_study(session, principal.clinic(), study_id)
    png16 = request_blobs(request).get(study.pixels_blob)
    with request.app.state.decode_slots.held():
        jpeg = service.thumbnail(png16, size)
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})
