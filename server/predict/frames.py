"""Between a decoded upload and the model: how a reduced decode's pixels map back to the file's."""

from __future__ import annotations

from models.predictor import Predictor, Reduced

from ..imaging import DecodedImage


def model_size(predictor: Predictor) -> tuple[int, int]:
    """(W, H): the smallest image the model needs, its input size; a JPEG may be decoded down to it."""
    return predictor.codec.input_size


def reduced_frame(image: DecodedImage) -> Reduced | None:
    """How the image's pixels stand for the file's, where it was decoded reduced; None otherwise."""
    return Reduced(image.reduction, (image.width, image.height)) if image.reduction > 1 else None
