"""What decoding a JPEG reduced (libjpeg DCT scaling, as the predict routes do) costs in accuracy, and saves in
time, on real cephalograms with a trained model.

    python -m bench.reduced_decode --protocol cld38-5step \
        --checkpoint bench/results/cld38-5step-cpu/checkpoints/seed0/shared/step0.safetensors

For each test image of the protocol: the JPEG decoded whole and decoded reduced for the model's input size
(server.imaging.decode_image with at_least), both predicted by the same model; the reduced answer is mapped back
to the file's pixels (models.predictor.Reduced). Reports the MRE of each against the labels, the distance between
the two answers, and the median time of decoding + preprocessing (letterbox) each way, side by side in one run.
Writes bench/results/reduced_decode.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from models.checkpoint import Checkpoint
from models.datasets import default_data_root, load_protocol
from models.metrics import radial_errors
from models.predictor import Predictor
from server.imaging import decode_image
from server.predict.frames import model_size, reduced_frame

from .ikl import RESULTS, machine


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.reduced_decode", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--protocol", default="cld38-5step")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--data-root", type=Path, default=None)
    p.add_argument("--images", type=int, default=0, help="use only the first N test images (0: all)")
    p.add_argument("--out", type=Path, default=RESULTS / "reduced_decode.json")
    args = p.parse_args(argv)
    root = args.data_root or default_data_root()
    protocol = load_protocol(root, args.protocol)
    dataset = protocol.load_dataset(root)
    checkpoint = Checkpoint.load(args.checkpoint)
    predictor = Predictor(checkpoint, device="cpu")
    codes = [c for c in predictor.codes if c in dataset.codes]
    cols = [predictor.codes.index(c) for c in codes]
    ids = protocol.test_images[: args.images or None]
    labels = dataset.step_data(ids, codes, protocol.annotator, images=[np.zeros((1, 1))] * len(ids))
    at_least = model_size(predictor)
    points: dict[str, list[np.ndarray]] = {"whole": [], "reduced": []}
    times: dict[str, list[float]] = {"whole": [], "reduced": []}
    reductions = set()
    with torch.inference_mode():
        for image_id in ids:
            data = dataset.image_path(image_id).read_bytes()
            for way, wanted in (("whole", None), ("reduced", at_least)):
                t0 = time.perf_counter()
                image = decode_image(data, at_least=wanted)
                predictor.codec.to_input(image.pixels)
                times[way].append(1e3 * (time.perf_counter() - t0))
                [prediction] = predictor.predict([image.pixels], reduced=[reduced_frame(image)])
                points[way].append(np.array([(lm.x, lm.y) for lm in prediction.landmarks])[cols])
                if wanted is not None:
                    reductions.add(image.reduction)
    whole, reduced = np.stack(points["whole"]), np.stack(points["reduced"])
    mre = {
        k: float(np.nanmean(radial_errors(np.stack(v), labels.keypoints, labels.spacing_mm))) for k, v in points.items()
    }
    shift = radial_errors(reduced, whole, labels.spacing_mm)
    result = {
        "machine": machine(),
        "protocol": args.protocol,
        "checkpoint": str(args.checkpoint),
        "input_size": list(at_least) if at_least else None,
        "images": len(ids),
        "reductions": sorted(reductions),
        "mre_mm": mre,
        "shift_mm": {"mean": float(shift.mean()), "p95": float(np.percentile(shift, 95)), "max": float(shift.max())},
        "decode_and_letterbox_ms_p50": {k: statistics.median(v) for k, v in times.items()},
    }
    print(json.dumps(result, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
