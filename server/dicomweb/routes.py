"""/dicomweb and /dicomweb/projects/{project_id}: the same DICOMweb service at two roots. The clinic is the key's;
the project root only decides what STOW-RS does besides storing (the project's `sr_on_store` setting): searches
and retrievals answer the clinic's instances at both."""

# No `from __future__ import annotations`: the routes are defined in a function, and FastAPI must see their
# dependency annotations (which name that function's `scope`) evaluated, not as strings.
import itertools
import json
import uuid
from collections.abc import Callable, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from models.predictor import Prediction, Predictor

from ..auth import AnnotatorDep, ReaderDep
from ..db.entities import Project
from ..deps import SessionDep
from ..imaging import DecodedImage
from ..predict.frames import model_inputs
from ..projects import repository as projects
from ..studies.routes import request_blobs
from . import service
from .multipart import BodySpool, new_boundary, stream
from .params import Uid
from .pixel_routes import install_pixels
from .results import Infer
from .store import StowServices, boundary, store_all

DICOM_JSON = "application/dicom+json"
#: What a spooled body is written to disk in: uvicorn hands it over in chunks of 64 KiB.
_SPOOL_CHUNK = 1 << 20


_JSON_OK: dict[int | str, dict[str, Any]] = {200: {"content": {DICOM_JSON: {}}, "description": "DICOM JSON"}}
_MULTIPART_OK: dict[int | str, dict[str, Any]] = {
    200: {"content": {'multipart/related; type="application/dicom"': {}}, "description": "the stored instances"},
    406: {"description": "the Accept header does not allow the stored transfer syntax"},
}
_STOW_DOC: dict[int | str, dict[str, Any]] = {
    200: {"content": {DICOM_JSON: {}}, "description": "every instance stored (Store Instances Response)"},
    202: {"content": {DICOM_JSON: {}}, "description": "some stored; the others failed or were stored with a warning"},
    409: {"content": {DICOM_JSON: {}}, "description": "none stored: FailedSOPSequence says why for each instance"},
    415: {"description": 'the body is not multipart/related; type="application/dicom"'},
}


async def _no_project() -> None:
    return None


def _the_project(project_id: uuid.UUID, session: SessionDep, principal: ReaderDep) -> Project:
    return projects.get_project(session, principal.clinic(), project_id)


def _json(results: Any, warnings: Sequence[str] = ()) -> Response:
    headers = {"Warning": ", ".join(f'299 - "{w}"' for w in warnings)} if warnings else None
    return Response(json.dumps(results), media_type=DICOM_JSON, headers=headers)


def _multipart(parts: list[tuple[str, Callable[[], bytes]]]) -> Response:
    """The instances streamed one after the other. The first is read before the answer starts, so a lone
    instance whose blob is missing still gets a problem answer; a later one's ends the stream short of its final
    delimiter, which a multipart reader reports as a truncated body."""
    boundary = new_boundary()
    kind = f'multipart/related; type="application/dicom"; boundary={boundary}'
    body = stream(parts, boundary)
    head = next(body)
    return StreamingResponse(itertools.chain([head], body), media_type=kind)


def _base(request: Request, project: Project | None) -> str:
    root = f"/dicomweb/projects/{project.id}" if project is not None else "/dicomweb"
    return str(request.base_url).rstrip("/") + root


def _services(request: Request, project: Project | None) -> StowServices:
    state = request.app.state
    return StowServices(
        state.settings,
        request_blobs(request),
        state.decode_slots,
        state.model_cache,
        _infer(request),
        _base(request, project),
    )


def _infer(request: Request) -> Infer:
    """Prediction as the predict routes do it: on the inference thread (batched with others), if so configured."""
    state = request.app.state

    def infer(predictor: Predictor, image: DecodedImage) -> Prediction:
        pixels, spacing, frames = model_inputs([image])
        if state.settings.inference_single_thread:
            predictions, _ = state.inference.submit(predictor, pixels, spacing, frames).result()
        else:
            predictions = predictor.predict(pixels, spacing, None, frames)
        return predictions[0]

    return infer


async def _spool(request: Request, spool: BodySpool) -> None:
    """The body into `spool`, off the event loop in pieces of about a MiB (server.body_guard caps its size)."""
    pending = bytearray()
    async for chunk in request.stream():
        pending += chunk
        if len(pending) >= _SPOOL_CHUNK:
            await run_in_threadpool(spool.write, bytes(pending))
            pending.clear()
    if pending:
        await run_in_threadpool(spool.write, bytes(pending))


def _install(router: APIRouter, scope: Callable[..., Any]) -> None:
    """Every DICOMweb route on `router`, the project of its root from the `scope` dependency."""
    Scope = Annotated[Project | None, Depends(scope)]
    _install_stow(router, Scope)
    _install_search(router, Scope)
    _install_retrieve(router, Scope)


def _install_stow(router: APIRouter, Scope: Any) -> None:
    """STOW-RS: store instances, at the root or into one study."""

    async def stow(
        request: Request, session: SessionDep, principal: AnnotatorDep, project: Scope, study: str | None
    ) -> Response:
        separator = boundary(request.headers.get("content-type", ""))  # 415 before any byte is read
        services = _services(request, project)
        # The project's lookup began a transaction: its pooled connection goes back while a slow body arrives.
        await run_in_threadpool(session.rollback)
        spool = BodySpool()
        try:
            await _spool(request, spool)
            body = spool.view()
            args = (session, services, principal.clinic(), project, body, separator, study)
            result = await run_in_threadpool(store_all, *args)
        finally:
            spool.close()
        return Response(json.dumps(result.body), status_code=result.status, media_type=DICOM_JSON)

    @router.post("/studies", responses=_STOW_DOC, response_class=Response)
    async def store_instances(
        request: Request, session: SessionDep, principal: AnnotatorDep, project: Scope
    ) -> Response:
        """STOW-RS: store each instance as a study (de-identified: answered with its stored, new UIDs). The body is
        multipart/related; type="application/dicom", one DICOM Part-10 file per part (described here, not as a
        requestBody: OpenAPI tools have no serializer for multipart/related)."""
        return await stow(request, session, principal, project, None)

    @router.post("/studies/{study}", responses=_STOW_DOC, response_class=Response)
    async def store_study_instances(
        study: Uid, request: Request, session: SessionDep, principal: AnnotatorDep, project: Scope
    ) -> Response:
        """STOW-RS into one study: an instance whose Study Instance UID (as sent) is another fails alone. The body is
        multipart/related; type="application/dicom"."""
        return await stow(request, session, principal, project, study)


def _install_search(router: APIRouter, Scope: Any) -> None:
    """QIDO-RS: the clinic's studies, series and instances, at every level."""

    @router.get("/studies", responses=_JSON_OK, response_class=Response)
    def search_studies(request: Request, session: SessionDep, principal: ReaderDep, project: Scope) -> Response:
        """QIDO-RS: the clinic's studies (StudyInstanceUID, PatientID, StudyDate, ModalitiesInStudy; limit,
        offset, includefield, fuzzymatching)."""
        params = list(request.query_params.multi_items())
        return _json(*service.query(session, principal.clinic(), "study", params, _base(request, project)))

    @router.get("/series", responses=_JSON_OK, response_class=Response)
    def search_all_series(request: Request, session: SessionDep, principal: ReaderDep, project: Scope) -> Response:
        """QIDO-RS: the clinic's series, of every study."""
        params = list(request.query_params.multi_items())
        return _json(*service.query(session, principal.clinic(), "series", params, _base(request, project)))

    @router.get("/instances", responses=_JSON_OK, response_class=Response)
    def search_all_instances(request: Request, session: SessionDep, principal: ReaderDep, project: Scope) -> Response:
        """QIDO-RS: the clinic's instances, of every study."""
        params = list(request.query_params.multi_items())
        return _json(*service.query(session, principal.clinic(), "instance", params, _base(request, project)))

    @router.get("/studies/{study}/series", responses=_JSON_OK, response_class=Response)
    def search_series(
        study: Uid, request: Request, session: SessionDep, principal: ReaderDep, project: Scope
    ) -> Response:
        """QIDO-RS: the study's series (Modality, SeriesInstanceUID)."""
        params, base = list(request.query_params.multi_items()), _base(request, project)
        return _json(*service.query(session, principal.clinic(), "series", params, base, StudyInstanceUID=study))

    @router.get("/studies/{study}/instances", responses=_JSON_OK, response_class=Response)
    def search_study_instances(
        study: Uid, request: Request, session: SessionDep, principal: ReaderDep, project: Scope
    ) -> Response:
        """QIDO-RS: the study's instances."""
        params, base = list(request.query_params.multi_items()), _base(request, project)
        return _json(*service.query(session, principal.clinic(), "instance", params, base, StudyInstanceUID=study))

    @router.get("/studies/{study}/series/{series}/instances", responses=_JSON_OK, response_class=Response)
    def search_series_instances(
        study: Uid, series: Uid, request: Request, session: SessionDep, principal: ReaderDep, project: Scope
    ) -> Response:
        """QIDO-RS: the series' instances (SOPInstanceUID, SOPClassUID)."""
        params, base = list(request.query_params.multi_items()), _base(request, project)
        path = {"StudyInstanceUID": study, "SeriesInstanceUID": series}
        return _json(*service.query(session, principal.clinic(), "instance", params, base, **path))


def _install_retrieve(router: APIRouter, Scope: Any) -> None:
    """WADO-RS: the stored instances, their metadata, and (server.dicomweb.pixel_routes) their pixels."""

    def retrieve(request: Request, session: SessionDep, principal: ReaderDep, *uids: str) -> Response:
        rows = service.find(session, principal.clinic(), *uids)
        service.check_accept_dicom(request.headers.get("accept", ""), rows)
        return _multipart(service.instance_parts(request_blobs(request), rows))

    def meta(request: Request, session: SessionDep, principal: ReaderDep, *uids: str) -> Response:
        rows = service.find(session, principal.clinic(), *uids)
        return _json(service.metadata_of(request_blobs(request), rows))

    @router.get("/studies/{study}", responses=_MULTIPART_OK, response_class=Response)
    def retrieve_study(study: Uid, request: Request, session: SessionDep, principal: ReaderDep, _: Scope) -> Response:
        """WADO-RS: every instance of the study, as stored (de-identified)."""
        return retrieve(request, session, principal, study)

    @router.get("/studies/{study}/series/{series}", responses=_MULTIPART_OK, response_class=Response)
    def retrieve_series(
        study: Uid, series: Uid, request: Request, session: SessionDep, principal: ReaderDep, _: Scope
    ) -> Response:
        """WADO-RS: every instance of the series."""
        return retrieve(request, session, principal, study, series)

    @router.get("/studies/{study}/series/{series}/instances/{sop}", responses=_MULTIPART_OK, response_class=Response)
    def retrieve_instance(
        study: Uid, series: Uid, sop: Uid, request: Request, session: SessionDep, principal: ReaderDep, _: Scope
    ) -> Response:
        """WADO-RS: the stored, de-identified file of one instance."""
        return retrieve(request, session, principal, study, series, sop)

    @router.get("/studies/{study}/metadata", responses=_JSON_OK, response_class=Response)
    def study_metadata(study: Uid, request: Request, session: SessionDep, principal: ReaderDep, _: Scope) -> Response:
        """WADO-RS: the header of every instance of the study, without bulk data."""
        return meta(request, session, principal, study)

    @router.get("/studies/{study}/series/{series}/metadata", responses=_JSON_OK, response_class=Response)
    def series_metadata(
        study: Uid, series: Uid, request: Request, session: SessionDep, principal: ReaderDep, _: Scope
    ) -> Response:
        """WADO-RS: the header of every instance of the series, without bulk data."""
        return meta(request, session, principal, study, series)

    @router.get(
        "/studies/{study}/series/{series}/instances/{sop}/metadata", responses=_JSON_OK, response_class=Response
    )
    def instance_metadata(
        study: Uid, series: Uid, sop: Uid, request: Request, session: SessionDep, principal: ReaderDep, _: Scope
    ) -> Response:
        """WADO-RS: the instance's header in DICOM JSON, without bulk data (no pixels)."""
        return meta(request, session, principal, study, series, sop)

    install_pixels(router, Scope)


router = APIRouter(prefix="/dicomweb", tags=["dicomweb"])
_install(router, _no_project)
project_router = APIRouter(prefix="/dicomweb/projects/{project_id}", tags=["dicomweb"])
_install(project_router, _the_project)
