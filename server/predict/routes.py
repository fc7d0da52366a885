"""POST /v1/projects/{id}/predict and /predict/batch."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Request, Response, UploadFile
from sqlalchemy import select
from sqlalchemy.orm import Session, defer
from starlette.concurrency import run_in_threadpool

from models.predictor import Prediction, Predictor

from ..analyses.service import MeasureContext
from ..analyses.service import context as measure_context
from ..auth import Principal, require
from ..db.entities import ModelVersion, Project, Role, VersionStatus
from ..deps import SessionDep, SettingsDep
from ..imaging import DecodedImage
from ..problems import Problem, not_found
from ..settings import Settings
from ..storage import blob_store
from ..studies import names
from ..studies.routes import parse_spacing, read_capped, read_capped_file
from ..studies.service import DecodeSlots, decode_upload, ingest
from .frames import model_inputs, model_size
from .outputs import render_png, structured_report
from .schemas import PredictionOut, prediction_out
from .tracing import check_analysis, tracing_for

router = APIRouter(prefix="/v1/projects/{project_id}", tags=["predict"])
PredictDep = Annotated[Principal, Depends(require(Role.predict, Role.admin, Role.annotator))]
#: Most images in one synchronous batch request.
MAX_BATCH = 16
#: A batch's decoded images, held together until the model has answered them all, may take this many times one
#: image's decode limit (KAMP_MAX_DECODED_BYTES): 16 images at the limit would hold 4 GiB.
BATCH_DECODED_FACTOR = 4


def resolve_version(
    session: Session, clinic_id: uuid.UUID, project_id: uuid.UUID, version_id: uuid.UUID | None
) -> ModelVersion:
    """The given version of the clinic's project (404 if it is not the project's), else the project's active one
    (409 if none); 404 if the project is not the clinic's.

    One query per request: the project's owner and the version together, without what loading the project would
    also fetch (every landmark set, with its landmarks and associations) and without the version's validation
    report. The active version is looked up every time, so a promotion or rollback applies to the next request."""
    wanted = ModelVersion.id == version_id if version_id is not None else ModelVersion.status == VersionStatus.active
    row = session.execute(
        select(Project.clinic_id, ModelVersion)
        .outerjoin(ModelVersion, (ModelVersion.project_id == Project.id) & wanted)
        .where(Project.id == project_id)
        .options(defer(ModelVersion.report), defer(ModelVersion.hyperparameters))
    ).first()
    if row is None or row.clinic_id != clinic_id:
        raise not_found("project")
    if row.ModelVersion is not None:
        return row.ModelVersion
    if version_id is not None:
        raise not_found("model version")
    raise Problem(
        409,
        "the project has no active model version yet: submit a landmark set for training and "
        "let it pass validation (or promote a version)",
        slug="no-model",
    )


def measured_version(
    session: Session, clinic_id: uuid.UUID, project_id: uuid.UUID, version_id: uuid.UUID | None
) -> tuple[ModelVersion, MeasureContext]:
    """resolve_version, and what measuring its predictions needs (server.analyses.service.context)."""
    version = resolve_version(session, clinic_id, project_id, version_id)
    return version, measure_context(session, version)


def _model(request: Request, version: ModelVersion) -> Predictor:
    """The version's predictor from the model cache (loaded on first use)."""
    blobs = blob_store(request.app.state.settings)
    return request.app.state.model_cache.get(version.id, version.checkpoint_blob, blobs)


def decode_for_model(
    request: Request,
    version: ModelVersion,
    data: bytes,
    filename: str | None,
    spacing: tuple[float, float] | None,
    *,
    full_resolution: bool = False,
) -> DecodedImage:
    """An upload decoded for `version`'s model: a JPEG no larger than the model needs, i.e. reduced by 2, 4 or
    8 while decoding as long as both sides stay at least the model's input size (the letterbox then resizes
    less; the answer is mapped back to the file's pixels, see `models.predictor.Reduced`), unless
    `full_resolution` (a rendering draws on the whole image)."""
    at_least = _wanted(request, version, full_resolution)
    settings = request.app.state.settings
    return decode_upload(data, filename, settings.image_limits, spacing, at_least, request.app.state.decode_slots)


def _wanted(request: Request, version: ModelVersion, full_resolution: bool) -> tuple[int, int] | None:
    """The smallest image size (W, H) `version`'s model needs, or None for the whole image."""
    return None if full_resolution else model_size(_model(request, version))


def _outputs(
    version: ModelVersion,
    images: list[tuple[DecodedImage, str | None]],
    predictions: list[Prediction],
    analyses: MeasureContext,
) -> list[PredictionOut]:
    return [
        prediction_out(
            version, prediction, spacing_source=str(image.spacing_source), filename=filename, analyses=analyses
        )
        for (image, filename), prediction in zip(images, predictions, strict=True)
    ]


def _predict_here(
    request: Request, version: ModelVersion, images: list[tuple[DecodedImage, str | None]], analyses: MeasureContext
) -> list[PredictionOut]:
    """Predict on the calling thread (a web server worker thread, when so configured)."""
    timings: dict[str, float] = {}
    pixels, spacing, frames = model_inputs([im for im, _ in images])
    predictions = _model(request, version).predict(pixels, spacing, timings, frames)
    request.state.model_timings = timings
    return _outputs(version, images, predictions, analyses)


async def _infer(
    request: Request, version: ModelVersion, images: list[tuple[DecodedImage, str | None]], analyses: MeasureContext
) -> list[PredictionOut]:
    """Predict on the inference thread, batched with other requests waiting for the same model (see
    `server.predict.batcher`), or, if so configured, on one of the web server's worker threads."""
    if not request.app.state.settings.inference_single_thread:
        return await run_in_threadpool(_predict_here, request, version, images, analyses)
    predictor = request.app.state.model_cache.loaded(version.id) or await run_in_threadpool(_model, request, version)
    served = request.app.state.inference.submit(predictor, *model_inputs([im for im, _ in images]))
    predictions, request.state.model_timings = await asyncio.wrap_future(served)
    return _outputs(version, images, predictions, analyses)


SpacingX = Annotated[float | None, Form(description="mm per pixel along x; overrides the file's")]
SpacingY = Annotated[float | None, Form(description="mm per pixel along y")]
VersionField = Annotated[uuid.UUID | None, Form(description="a version of this project; default: the active one")]
StoreField = Annotated[
    bool,
    Form(
        description="also keep the image as a study of the clinic (de-identified, as POST /v1/studies does; the "
        "same pixels twice give the same study), answered as study_id; default: nothing of the image is stored"
    ),
]


ImageFile = Annotated[UploadFile, File(description="DICOM, PNG, JPEG, BMP, TIFF, MHA, NRRD or NIfTI")]


def chosen_analysis(
    analysis: Annotated[
        str | None, Form(description="an analysis of GET /v1/analyses to draw (its lines, angles and values)")
    ] = None,
) -> str | None:
    """Dependency: the analysis a rendering draws, checked before any prediction (422 naming the known ones)."""
    if analysis is not None:
        check_analysis(analysis)
    return analysis


AnalysisDep = Annotated[str | None, Depends(chosen_analysis)]


@dataclass
class Predicted:
    """One uploaded image, decoded, and the model's prediction on it."""

    data: bytes
    image: DecodedImage
    result: PredictionOut
    #: The project's landmark mapping and the version's errors, that measured it.
    analyses: MeasureContext
    #: Server-Timing header value, ms: "image" (decoding the upload), "preprocess", "forward", "decode" (heatmaps to
    #: points) and, for a two-stage model, "local" (the local stage) of the pass that served it, "model" (from
    #: handing the image over to the answer: with the wait for the inference thread), and "batch" (desc: the
    #: images in that pass, this request's and others').
    timing: str


def predicted_on(*, full_resolution: bool, dicom_only: bool = False) -> Callable[..., Awaitable[Predicted]]:
    """Dependency: the single-image predict routes' shared work (the project, the version, the image, the
    prediction); `full_resolution` for a route that needs the whole image's pixels (see `decode_for_model`);
    `dicom_only` for one that can answer only for a DICOM upload (refused before any prediction)."""

    async def predicted(
        project_id: uuid.UUID,
        request: Request,
        session: SessionDep,
        settings: SettingsDep,
        principal: PredictDep,
        file: ImageFile,
        spacing_x_mm: SpacingX = None,
        spacing_y_mm: SpacingY = None,
        version_id: VersionField = None,
        store: StoreField = False,
    ) -> Predicted:
        spacing = parse_spacing(spacing_x_mm, spacing_y_mm)
        data = await read_capped(file, settings.max_upload_bytes)

        def prepare() -> tuple[ModelVersion, MeasureContext, DecodedImage, float]:
            # One trip through the thread pool for the database lookup and the decoding (the lookup would
            # otherwise block the event loop, or take a trip of its own).
            version, analyses = measured_version(session, principal.clinic(), project_id, version_id)
            t0 = time.perf_counter()
            whole = full_resolution or store  # a study keeps the whole image
            image = decode_for_model(request, version, data, file.filename, spacing, full_resolution=whole)
            if dicom_only and image.format != "dicom":
                raise Problem(
                    422, "a structured report refers to a DICOM image: upload the DICOM file", slug="sr-needs-dicom"
                )
            return version, analyses, image, 1e3 * (time.perf_counter() - t0)

        version, analyses, image, image_ms = await run_in_threadpool(prepare)
        t1 = time.perf_counter()
        [result] = await _infer(request, version, [(image, file.filename)], analyses)
        parts = {"image": image_ms, **request.state.model_timings, "model": 1e3 * (time.perf_counter() - t1)}
        stages = request.app.state.metrics.predict_seconds
        stages.labels("decode").observe(image_ms / 1e3)
        stages.labels("model").observe(parts["model"] / 1e3)
        if store:
            result.study_id = await _keep(request, session, principal, image, file.filename)
        batch = parts.pop("batch", None)  # images in the forward pass that served this request: not a duration
        timing = ", ".join(
            [f"{k};dur={v:.1f}" for k, v in parts.items()] + ([f"batch;desc={batch:.0f}"] if batch else [])
        )
        return Predicted(data, image, result, analyses, timing)

    return predicted


PredictedDep = Annotated[Predicted, Depends(predicted_on(full_resolution=False))]
WholeImagePredictedDep = Annotated[Predicted, Depends(predicted_on(full_resolution=True))]
DicomPredictedDep = Annotated[Predicted, Depends(predicted_on(full_resolution=False, dicom_only=True))]


@router.post("/predict", response_model=PredictionOut)
async def predict(response: Response, p: PredictedDep) -> PredictionOut:
    """Every landmark the model knows, in the original image's pixels (and mm where the spacing is known), with
    the model version that produced them. Nothing of the image is stored unless asked (store=true: kept as a
    study of the clinic, its id answered as study_id)."""
    response.headers["Server-Timing"] = p.timing
    return p.result


@router.post(
    "/predict/render",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "the image with the landmarks drawn"}},
)
async def predict_render(analysis: AnalysisDep, p: WholeImagePredictedDep) -> Response:
    """The prediction drawn on the image (rings labelled with the codes; red where the confidence is below
    0.3), for a human to check; with `analysis`, over that analysis' lines, angle arcs and a legend of its values.
    The JSON prediction is in the X-Model-Version header and /predict."""
    tracing = tracing_for(analysis, p.result, p.analyses.mapping) if analysis else None
    png = await run_in_threadpool(render_png, p.image.pixels, p.result.landmarks, tracing)
    return Response(png, media_type="image/png", headers={"X-Model-Version": str(p.result.model_version_id)})


@router.post(
    "/predict/sr",
    response_class=Response,
    responses={200: {"content": {"application/dicom": {}}, "description": "a TID 1500 DICOM SR"}},
)
async def predict_sr(p: DicomPredictedDep) -> Response:
    """A DICOM Structured Report (TID 1500 measurement report, one point per landmark) that references the
    uploaded DICOM image, for PACS that store results as DICOM. DICOM input only (another format answers 422
    before any prediction)."""
    model = f"v{p.result.model_version_number} {p.result.checkpoint_sha256[:16]}"
    sr = await run_in_threadpool(structured_report, p.data, p.result.landmarks, model, p.result.measurements)
    return Response(sr, media_type="application/dicom", headers={"X-Model-Version": str(p.result.model_version_id)})


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
    store: StoreField = False,
) -> list[PredictionOut]:
    """Several images in one request (one forward pass in batches); the spacing, if given, applies to all.
    Any unusable image refuses the whole request, naming the file; with store=true each image is kept as a
    study once all are predicted."""
    version, analyses = await run_in_threadpool(measured_version, session, principal.clinic(), project_id, version_id)
    if len(files) > MAX_BATCH:
        raise Problem(413, f"at most {MAX_BATCH} images per request; got {len(files)}", slug="batch-too-large")
    spacing = parse_spacing(spacing_x_mm, spacing_y_mm)
    at_least = await run_in_threadpool(_wanted, request, version, store)  # a study keeps the whole image
    slots = request.app.state.decode_slots
    images: list[tuple[DecodedImage, str | None]] = []
    held = 0
    for upload in files:
        image = await decode_named(upload, settings, spacing, at_least, slots)
        images.append((image, upload.filename))
        held += image.pixels.nbytes
        _check_batch_bytes(held, len(images), settings)
    results = await _infer(request, version, images, analyses)
    if store:
        for result, (image, filename) in zip(results, images, strict=True):
            result.study_id = await _keep(request, session, principal, image, filename)
    return results


def _check_batch_bytes(held: int, count: int, settings: Settings) -> None:
    """413 where the batch's first `count` decoded images, `held` bytes together, exceed BATCH_DECODED_FACTOR x
    the one-image limit."""
    limit = BATCH_DECODED_FACTOR * settings.max_decoded_bytes
    if held > limit:
        raise Problem(
            413,
            f"the batch's first {count} images decode to {held / 2**20:,.0f} MiB together; a batch may hold "
            f"{limit / 2**20:,.0f} MiB: send fewer or smaller images per request",
            slug="batch-too-large",
        )


async def _keep(
    request: Request, session: Session, principal: Principal, image: DecodedImage, filename: str | None
) -> uuid.UUID:
    """Keep a predicted image as a study of the caller's clinic (store=true); its id."""
    blobs = blob_store(request.app.state.settings)
    key = names.pseudonym_key(request.app.state.settings)
    study, _ = await run_in_threadpool(ingest, session, blobs, principal.clinic(), image, filename, key)
    return study.id


async def decode_named(
    upload: UploadFile,
    settings: Settings,
    spacing: tuple[float, float] | None,
    at_least: tuple[int, int] | None = None,
    slots: DecodeSlots | None = None,
) -> DecodedImage:
    """One upload of several, decoded (a JPEG reduced down to `at_least` where given, see `decode_for_model`);
    a refusal names the file."""
    return await run_in_threadpool(decode_one_of_several, upload, settings, spacing, at_least, slots)


def decode_one_of_several(
    upload: UploadFile,
    settings: Settings,
    spacing: tuple[float, float] | None,
    at_least: tuple[int, int] | None = None,
    slots: DecodeSlots | None = None,
) -> DecodedImage:
    """One upload of several, read from its spooled file and decoded (blocking: off the event loop); a refusal
    names the file."""
    data = read_capped_file(upload.file, settings.max_upload_bytes)
    try:
        return decode_upload(data, upload.filename, settings.image_limits, spacing, at_least, slots)
    except Problem as exc:
        exc.detail = f"{upload.filename}: {exc.detail}"
        raise
