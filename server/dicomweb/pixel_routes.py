"""WADO-RS pixels at both DICOMweb roots: rendered images (JPEG or PNG) and raw frames (as stored, no
transcoding; the rules in server.dicomweb.frames)."""

# No `from __future__ import annotations`: as in server.dicomweb.routes, FastAPI must see the annotations that
# name the installing function's `Scope` evaluated.
from typing import Any

from fastapi import APIRouter, Request, Response

from ..auth import ReaderDep
from ..deps import SessionDep
from ..problems import PROBLEM_JSON, PROBLEM_SCHEMA
from ..studies.routes import request_blobs
from . import frames, service
from .multipart import encode, new_boundary
from .params import Frame, FrameList, Quality, Uid

_RENDERED_OK: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/jpeg": {}, "image/png": {}}, "description": "8-bit grey display image"},
    406: {"description": "neither image/jpeg nor image/png is acceptable, or the instance is an SR"},
}
_PROBLEM = {"content": {PROBLEM_JSON: {"schema": PROBLEM_SCHEMA}}}
_FRAME_MEDIA = (frames.OCTET, *sorted(set(frames.COMPRESSED_TYPES.values())))
_FRAMES_OK: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {f'multipart/related; type="{kind}"': {} for kind in _FRAME_MEDIA},
        "description": "one part per frame: raw little-endian pixels, or the compressed frame as stored",
    },
    400: {**_PROBLEM, "description": "the frame list is malformed"},
    404: {**_PROBLEM, "description": "no such instance or frame, or the instance is an SR (no pixel data)"},
    406: {**_PROBLEM, "description": "the Accept header asks for another transfer syntax than the stored one"},
}


def install_pixels(router: APIRouter, Scope: Any) -> None:
    """The rendered and frame routes on `router`; `Scope` is its root's project dependency."""
    _install_rendered(router, Scope)
    _install_frames(router, Scope)


def _install_rendered(router: APIRouter, Scope: Any) -> None:
    """WADO-RS rendered: an instance or its frame as a display image."""

    def render(request: Request, session: SessionDep, principal: ReaderDep, quality: int, *uids: str) -> Response:
        kind = service.rendered_type(request.headers.get("accept", ""))
        [row] = service.find(session, principal.clinic(), *uids)
        return Response(service.rendered(session, request_blobs(request), row, kind, quality), media_type=kind)

    @router.get("/studies/{study}/series/{series}/instances/{sop}/rendered", responses=_RENDERED_OK)
    def instance_rendered(
        study: Uid,
        series: Uid,
        sop: Uid,
        request: Request,
        session: SessionDep,
        principal: ReaderDep,
        _: Scope,
        quality: Quality = 90,
    ) -> Response:
        """WADO-RS: the instance as an image (image/jpeg by default, image/png by Accept)."""
        return render(request, session, principal, quality, study, series, sop)

    @router.get("/studies/{study}/series/{series}/instances/{sop}/frames/{frame}/rendered", responses=_RENDERED_OK)
    def frame_rendered(
        study: Uid,
        series: Uid,
        sop: Uid,
        frame: Frame,
        request: Request,
        session: SessionDep,
        principal: ReaderDep,
        _: Scope,
        quality: Quality = 90,
    ) -> Response:
        """WADO-RS: a frame as an image; the service keeps one frame per instance, so only frame 1 exists."""
        if frame != 1:
            service.no_such_frame(frame)
        return render(request, session, principal, quality, study, series, sop)


def _install_frames(router: APIRouter, Scope: Any) -> None:
    """WADO-RS frames: the stored pixels of an instance's frames, not transcoded."""

    @router.get(
        "/studies/{study}/series/{series}/instances/{sop}/frames/{frame_list}",
        responses=_FRAMES_OK,
        response_class=Response,
    )
    def retrieve_frames(
        study: Uid,
        series: Uid,
        sop: Uid,
        frame_list: FrameList,
        request: Request,
        session: SessionDep,
        principal: ReaderDep,
        _: Scope,
    ) -> Response:
        """WADO-RS: frames of the stored instance (e.g. `1`, or `1,2`), multipart/related, one part per frame: an
        uncompressed frame's raw pixel bytes (application/octet-stream, little endian), a compressed one's bytes as
        stored (image/jpeg, image/jls, image/jp2, ... with its transfer-syntax); nothing is transcoded."""
        numbers = frames.frame_numbers(frame_list)
        [row] = service.find(session, principal.clinic(), study, series, sop)
        kind, parts = frames.frame_parts(request_blobs(request), row, request.headers.get("accept", ""), numbers)
        separator = new_boundary()
        media = f'multipart/related; type="{kind.partition(";")[0]}"; boundary={separator}'
        return Response(encode([(kind, p) for p in parts], separator), media_type=media)
