"""Other forms of a prediction: a PNG for a human to check, and a DICOM Structured Report for a PACS."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import highdicom as hd
import numpy as np
import pydicom
from PIL import Image, ImageDraw, ImageFont
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from ..analyses.schemas import MeasurementOut
from ..problems import Problem
from .labels import place_labels
from .schemas import PredictedLandmark
from .tracing import Tracing, draw_tracing

#: SNOMED CT "Anatomical structure": the finding type of each landmark point.
ANATOMICAL_STRUCTURE = Code("91723000", "SCT", "Anatomical structure")
#: SNOMED CT "Imaging procedure".
IMAGING_PROCEDURE = Code("363679005", "SCT", "Imaging procedure")


def label_style(width: int, height: int) -> tuple[int, ImageFont.FreeTypeFont | ImageFont.ImageFont, int]:
    """The marker radius (image pixels), the label font and its stroke width for an image of this size."""
    r = max(3, round(max(width, height) / 250))
    return r, ImageFont.load_default(size=max(10, 4 * r)), max(1, r // 3)


def label_boxes(
    codes: Sequence[str], font: ImageFont.FreeTypeFont | ImageFont.ImageFont, stroke: int
) -> list[tuple[float, float, float, float]]:
    """Each code's ink box (left, top, right, bottom) as Pillow draws it at the origin with this font and stroke,
    pixels; the box's top-left is not the origin (the font's ascent and bearing)."""
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    boxes = (draw.textbbox((0, 0), code, font=font, stroke_width=stroke) for code in codes)
    return [(float(left), float(top), float(right), float(bottom)) for left, top, right, bottom in boxes]


def render_png(pixels: np.ndarray, landmarks: Sequence[PredictedLandmark], tracing: Tracing | None = None) -> bytes:
    """(H, W) uint16 display image -> PNG with each landmark drawn as a ring and labelled with its code, over an
    analysis' tracing where one is given (its lines, the arcs of its angles and a legend of its values).

    The labels are placed apart (see labels.place_labels): one displaced from its ring is joined to it by a thin
    leader line of its colour, from the ring's edge to the label's box."""
    grey = (pixels.astype(np.float32) / 257.0).clip(0, 255).astype(np.uint8)
    image = Image.fromarray(grey).convert("RGB")
    draw = ImageDraw.Draw(image)
    h, w = pixels.shape
    r, font, stroke = label_style(w, h)
    if tracing is not None:
        draw_tracing(draw, tracing, r, font, stroke)
    inks = label_boxes([lm.code for lm in landmarks], font, stroke)
    places = place_labels(
        [(lm.x, lm.y) for lm in landmarks],
        [(right - left, bottom - top) for left, top, right, bottom in inks],
        (w, h),
        r,
    )
    colours = [(255, 64, 64) if lm.confidence < 0.3 else (64, 255, 96) for lm in landmarks]
    for lm, place, colour in zip(landmarks, places, colours, strict=True):
        # Our coordinates put pixel centres at integers; Pillow's ellipse box is in the same frame.
        draw.ellipse((lm.x - r, lm.y - r, lm.x + r, lm.y + r), outline=colour, width=max(1, r // 2))
        if place.leader_end is not None:
            ex, ey = place.leader_end
            length = max(math.hypot(ex - lm.x, ey - lm.y), 1e-9)
            start = (lm.x + r * (ex - lm.x) / length, lm.y + r * (ey - lm.y) / length)
            draw.line((start, place.leader_end), fill=colour, width=max(1, r // 4))
    # The texts last, so that no ring or leader crosses a label.
    for lm, ink, place, colour in zip(landmarks, inks, places, colours, strict=True):
        draw.text(
            (place.x - ink[0], place.y - ink[1]),
            lm.code,
            fill=colour,
            font=font,
            stroke_width=stroke,
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


def structured_report(
    dicom_bytes: bytes,
    landmarks: Sequence[PredictedLandmark],
    model: str,
    measurements: Sequence[MeasurementOut] = (),
) -> bytes:
    """A TID 1500 measurement report (Comprehensive 3D SR) with one planar ROI group per landmark: a POINT in
    the source image, tracked by the landmark's code and name, found by the named model; and one measurement
    group (TID 1501) per analysis, holding its measurements as numeric measurements (TID 300) with UCUM units
    and, where the value has a clinical class, that class as a qualitative evaluation.

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
    analyses = measurement_groups(measurements, algorithm, source)
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=IMAGING_PROCEDURE,
        imaging_measurements=[*groups, *analyses],
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


#: The coding scheme of our measurement names and classes (a private scheme: DICOM reserves "99" prefixes).
SCHEME = "99KAMP"
#: UCUM codes of the catalogue's units.
UCUM = {
    "deg": Code("deg", "UCUM", "degree"),
    "mm": Code("mm", "UCUM", "millimeter"),
    "%": Code("%", "UCUM", "percent"),
    "ratio": Code("1", "UCUM", "no units"),
}


def measurement_code(m: MeasurementOut) -> Code:
    """The coded name of a measurement: "<analysis>.<code>" in our scheme, its name as the meaning (at most 64
    characters, as DICOM's Code Meaning allows)."""
    return Code(f"{m.analysis}.{m.code}", SCHEME, m.name[:64])


def class_evaluation(m: MeasurementOut) -> hd.sr.QualitativeEvaluation:
    """A measurement's clinical class as a coded value: concept "<analysis>.<measurement>.class", value
    "<analysis>.<measurement>.<class>" (one code, one meaning: classes of the same name differ by measurement)."""
    assert m.class_code is not None
    concept = Code(f"{m.analysis}.{m.code}.class", SCHEME, f"Class of {m.name}"[:64])
    value = Code(f"{m.analysis}.{m.code}.{m.class_code}", SCHEME, (m.class_name or m.class_code)[:64])
    return hd.sr.QualitativeEvaluation(name=concept, value=value)


def measurement_groups(
    measurements: Sequence[MeasurementOut], algorithm: hd.sr.AlgorithmIdentification, source: pydicom.Dataset
) -> list[hd.sr.MeasurementsAndQualitativeEvaluations]:
    """One TID 1501 group per analysis, in the order the measurements come."""
    by_analysis: dict[str, list[MeasurementOut]] = {}
    for m in measurements:
        by_analysis.setdefault(m.analysis, []).append(m)
    image = hd.sr.SourceImageForMeasurementGroup.from_source_image(source)
    return [
        hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"analysis {analysis}"),
            algorithm_id=algorithm,
            source_images=[image],
            measurements=[
                hd.sr.Measurement(name=measurement_code(m), value=m.value, unit=UCUM[m.unit], algorithm_id=algorithm)
                for m in group
            ],
            qualitative_evaluations=[class_evaluation(m) for m in group if m.class_code is not None] or None,
        )
        for analysis, group in by_analysis.items()
    ]
