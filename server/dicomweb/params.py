"""The path and query parameters the DICOMweb routes share (FastAPI's, so only route modules import this)."""

from typing import Annotated

from fastapi import Path, Query

Uid = Annotated[str, Path(pattern=r"^[0-9]+(\.[0-9]+)*$", max_length=64, description="a DICOM UID")]
Frame = Annotated[int, Path(ge=1, le=2**31 - 1, description="the frame number (1: single-frame images)")]
#: Checked by server.dicomweb.frames, so that a malformed list answers 400 (FastAPI's own checks answer 422).
FrameList = Annotated[str, Path(description="comma-separated 1-based frame numbers, e.g. 1 or 1,2")]
Quality = Annotated[int, Query(ge=1, le=100, description="JPEG quality")]
