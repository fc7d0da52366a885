"""Other forms of a prediction: a PNG for a human to check, and a DICOM Structured Report for a PACS."""

from __future__ import annotations

import io
from collections.abc import Sequence

import highdicom as hd
import numpy as np
import pydicom
from PIL import Image, ImageDraw, ImageFont
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from ..errors import Problem
from .schemas import PredictedLandmark

#: SNOMED CT "Anatomical structure": the finding type of each landmark point.
ANATOMICAL_STRUCTURE = Code("91723000", "SCT", "Anatomical structure")
#: SNOMED CT "Imaging procedure".
IMAGING_PROCEDURE = Code("363679005", "SCT", "Imaging procedure")


def render_png(pixels: np.ndarray, landmarks: Sequence[PredictedLandmark]) -> bytes:
    """(H, W) uint16 display image -> PNG with each landmark drawn as a ring and labelled with its code."""
    grey = (pixels.astype(np.float32) / 257.0).clip(0, 255).astype(np.uint8)
    image = Image.fromarray(grey).convert("RGB")
    draw = ImageDraw.Draw(image)
    h, w = pixels.shape
    r = max(3, round(max(w, h) / 250))
    font = ImageFont.load_default(size=max(10, 4 * r))
    for lm in landmarks:
        # Our coordinates put pixel centres at integers; Pillow's ellipse box is in the same frame.
        colour = (255, 64, 64) if lm.confidence < 0.3 else (64, 255, 96)
        draw.ellipse((lm.x - r, lm.y - r, lm.x + r, lm.y + r), outline=colour, width=max(1, r // 2))
        draw.text(
            (lm.x + 1.5 * r, lm.y - 1.5 * r),
            lm.code,
            fill=colour,
            font=font,
            stroke_width=max(1, r // 3),
            stroke_fill=(0, 0, 0),
        )
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


#: The patient and study attributes an SR copies from its evidence; DICOM makes them type 2 (present, maybe
#: empty), and highdicom refuses an evidence image that lacks them (a de-identified or hand-made file may).
TYPE2_COPIED = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ReferringPhysicianName",
)


def _with_type2_attributes(source: pydicom.Dataset) -> pydicom.Dataset:
    """`source` with every TYPE2_COPIED attribute present (empty where it was missing)."""
    for keyword in TYPE2_COPIED:
        if keyword not in source:
            setattr(source, keyword, "")
    return source


def structured_report(dicom_bytes: bytes, landmarks: Sequence[PredictedLandmark], model: str) -> bytes:
    """A TID 1500 measurement report (Comprehensive 3D SR) with one planar ROI group per landmark: a POINT in
    the source image, tracked by the landmark's code and name, found by the named model.

    It references the image as the caller sent it (its own SOP Instance UID, patient and study), so a PACS files
    it beside the image; it is returned, never stored here. DICOM puts the top-left pixel's centre at
    (0.5, 0.5), ours at (0, 0): the points are shifted by half a pixel."""
    try:
        source = _with_type2_attributes(pydicom.dcmread(io.BytesIO(dicom_bytes)))
        region_source = hd.sr.SourceImageForRegion(
            referenced_sop_class_uid=source.SOPClassUID, referenced_sop_instance_uid=source.SOPInstanceUID
        )
    except Exception as exc:
        raise Problem(
            422, f"a structured report needs the DICOM image it refers to: {exc}", slug="sr-needs-dicom"
        ) from exc
    algorithm = hd.sr.AlgorithmIdentification(name="KAMP landmarks", version=model)
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(uid=hd.UID(), name="KAMP landmarks"),
    )
    groups = [
        hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"{lm.code} {lm.name}".strip()),
            referenced_region=hd.sr.ImageRegion(
                graphic_type=hd.sr.GraphicTypeValues.POINT,
                graphic_data=np.array([[lm.x + 0.5, lm.y + 0.5]]),
                source_image=region_source,
            ),
            finding_type=ANATOMICAL_STRUCTURE,
            algorithm_id=algorithm,
        )
        for lm in landmarks
    ]
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=IMAGING_PROCEDURE,
        imaging_measurements=groups,
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=[source],
        content=report,
        series_instance_uid=hd.UID(),
        series_number=990,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="KAMP landmarks",
    )
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, sr, enforce_file_format=True)
    return buf.getvalue()
