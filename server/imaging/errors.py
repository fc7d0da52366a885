"""The one error type of the imaging ingest: a machine-readable code and a message fit to show a clinician."""

from __future__ import annotations

from typing import Literal

ImagingErrorCode = Literal[
    "empty-file",
    "not-an-image",
    "unsupported-format",
    "truncated-dicom",
    "truncated-image",
    "invalid-dicom",
    "no-pixel-data",
    "unsupported-transfer-syntax",
    "unsupported-photometric",
    "empty-image",
    "image-too-small",
    "image-too-large",
    "multi-frame",
    "not-2d",
    "bad-spacing",
]

# Every code is a 422 (the upload is understood but cannot be used) except a size refusal, which is a 413.
_HTTP_STATUS: dict[str, int] = {"image-too-large": 413}


class ImagingError(Exception):
    """An uploaded image that cannot be ingested.

    Attributes:
        code: a short machine-readable slug (``"truncated-dicom"``, ``"image-too-large"``, ...), stable across
            releases; the API uses it as the problem type.
        message: what is wrong and what to do about it, in words a clinician can act on.
    """

    def __init__(self, code: ImagingErrorCode, message: str) -> None:
        super().__init__(message)
        self.code: ImagingErrorCode = code
        self.message: str = message

    @property
    def http_status(self) -> int:
        """The HTTP status the API answers with: 413 for ``image-too-large``, 422 for everything else."""
        return _HTTP_STATUS.get(self.code, 422)

    def __repr__(self) -> str:
        return f"ImagingError(code={self.code!r}, message={self.message!r})"
