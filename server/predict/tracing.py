"""An analysis drawn on the rendered prediction: its lines and angle arcs (models.analyses.tracing), one colour
per measurement, and a legend of the measured values."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from PIL import ImageDraw, ImageFont

from models.analyses import Analysis, load_catalogue, to_catalogue
from models.analyses.tracing import Arc, Segment, trace

from ..analyses.schemas import MeasurementOut
from ..problems import Problem
from .schemas import PredictionOut

#: One colour per measurement, in the legend's order (distinct on a grey radiograph).
PALETTE = [
    (255, 196, 0),
    (0, 200, 255),
    (255, 96, 208),
    (160, 255, 64),
    (255, 128, 32),
    (128, 160, 255),
    (255, 255, 128),
    (64, 255, 200),
    (224, 128, 255),
    (255, 80, 80),
]
UNITS = {"deg": "°", "mm": " mm", "%": "%", "ratio": ""}


@dataclass(frozen=True)
class Tracing:
    """What to draw: the shapes (image pixels) and the analysis' measured values, in legend order."""

    name: str
    shapes: list[Segment | Arc]
    values: list[MeasurementOut]


def legend_line(m: MeasurementOut) -> str:
    """'SNA 84.9° (82 ± 2) prognathic maxilla'."""
    digits = 2 if m.unit == "ratio" else 1
    text = f"{m.code} {m.value:.{digits}f}{UNITS.get(m.unit, '')}"
    if m.norm_mean is not None and m.norm_sd is not None:
        text += f" ({m.norm_mean:g} ± {m.norm_sd:g})"
    if m.class_name:
        text += f" {m.class_name}"
    return text


def draw_tracing(
    draw: ImageDraw.ImageDraw, tracing: Tracing, r: int, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, stroke: int
) -> None:
    """The tracing's lines and arcs, then its legend in the top-left corner on a dark box."""
    colours = {m.code: PALETTE[i % len(PALETTE)] for i, m in enumerate(tracing.values)}
    width = max(1, r // 2)
    for shape in tracing.shapes:
        colour = colours.get(shape.measurement, PALETTE[0])
        if isinstance(shape, Segment):
            draw.line((shape.start, shape.end), fill=colour, width=1 if shape.helper else width)
        else:
            (cx, cy), rad = shape.centre, shape.radius
            draw.arc((cx - rad, cy - rad, cx + rad, cy + rad), shape.start_deg, shape.end_deg, fill=colour, width=width)
    lines = [(tracing.name, (255, 255, 255))] + [(legend_line(m), colours[m.code]) for m in tracing.values]
    pad = 2 * r
    boxes = [draw.textbbox((0, 0), text, font=font, stroke_width=stroke) for text, _ in lines]
    step = max(b[3] - b[1] for b in boxes) + r
    right = pad + max(b[2] - b[0] for b in boxes) + 2 * pad
    draw.rectangle((pad, pad, right, pad + step * len(lines) + pad), fill=(0, 0, 0))
    for i, ((text, colour), box) in enumerate(zip(lines, boxes, strict=True)):
        draw.text((2 * pad - box[0], 2 * pad + i * step - box[1]), text, fill=colour, font=font)


def tracing_for(analysis: str, result: PredictionOut, mapping: Mapping[str, str]) -> Tracing:
    """The tracing of `analysis` (a catalogue code; 422 otherwise) on a prediction, through the project's
    landmark mapping."""
    catalogue = load_catalogue()
    chosen = check_analysis(analysis)
    points = to_catalogue({lm.code: (lm.x, lm.y) for lm in result.landmarks}, mapping, catalogue)
    values = [m for m in result.measurements if m.analysis == analysis]
    measured = {m.code for m in values}  # not the lines of one it omitted (a length without a spacing)
    shapes = [s for s in trace(analysis, points, catalogue) if s.measurement in measured]
    return Tracing(chosen.name, shapes, values)


def check_analysis(analysis: str) -> Analysis:
    """The catalogue's analysis `analysis`; 422 naming the known ones otherwise."""
    try:
        return load_catalogue().analysis(analysis)
    except KeyError as exc:
        raise Problem(422, f"analysis: {exc.args[0]}", slug="invalid-request", title="Invalid request") from exc
