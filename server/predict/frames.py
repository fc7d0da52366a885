"""Between a decoded upload and the model: how a reduced decode's pixels map back to the file's."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from models.predictor import Predictor, Reduced

from ..imaging import DecodedImage


def model_size(predictor: Predictor) -> tuple[int, int] | None:
    """(W, H): the smallest image the model needs, its input size, so a JPEG may be decoded down to it; None (the
    whole image) for a two-stage model, whose local stage crops the image at its own resolution."""
    return predictor.codec.input_size if predictor.stages == 1 else None


def model_inputs(
    images: Sequence[DecodedImage],
) -> tuple[list[np.ndarray], list[tuple[float, float] | None], list[Reduced | None]]:
    """`Predictor.predict`'s per-image arguments: the (H, W) pixels, the spacing in mm/px, the reductions."""
    return [im.pixels for im in images], [im.spacing_mm for im in images], [reduced_frame(im) for im in images]


def reduced_frame(image: DecodedImage) -> Reduced | None:
    """How the image's pixels stand for the file's, where it was decoded reduced; None otherwise."""
    return Reduced(image.reduction, (image.width, image.height)) if image.reduction > 1 else None
