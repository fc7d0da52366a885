"""Does bf16 move the answers? A fixed checkpoint's decoded landmarks in fp32 and bf16, the codec's round trip
through bf16 heatmaps, and the MRE of IKL runs trained in each precision from the same seed.

    python -m bench.precision_check --runs fp32=bench/results/precision/fp32/cld38-5step-cpu \
        bf16=bench/results/precision/bf16/cld38-5step-cpu

- Fixed checkpoint (default: the kept step-0 model of cld38-5step, `cpu` profile, seed 0): every test image of
  cld38-5step through Predictor(precision=fp32) and (precision=bf16); the distance between the two decoded
  positions of each landmark in heatmap pixels, and each precision's MRE.
- Round trip: 19 random points per image encoded as heatmaps, decoded from float32 and from bf16 copies.
- Runs (`--runs NAME=FOLDER ...`): bench.ikl result folders of one protocol, whose evaluations are read per
  (strategy, seed, step) and shown side by side.
Writes bench/results/precision_check.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.checkpoint import Checkpoint
from models.codec import HeatmapCodec
from models.datasets import default_data_root, load_protocol
from models.evaluate import evaluate
from models.metrics import summarize
from models.precision import set_torch_threads
from models.predictor import Predictor

from .evals import record_errors
from .ikl import RESULTS, machine

STEP0 = RESULTS / "cld38-5step-cpu" / "checkpoints" / "seed0" / "shared" / "step0.safetensors"


def _stats(values: np.ndarray) -> dict[str, float]:
    return {"mean": float(values.mean()), "p95": float(np.percentile(values, 95)), "max": float(values.max())}


def fixed_checkpoint(checkpoint: Checkpoint, protocol_name: str) -> dict[str, Any]:
    """Decoded-position shifts (heatmap px) between the precisions, and each precision's test MRE."""
    root = default_data_root()
    protocol = load_protocol(root, protocol_name)
    ds = protocol.load_dataset(root)
    test = ds.step_data(protocol.test_images, checkpoint.codes, protocol.annotator)
    codec = HeatmapCodec(checkpoint.codec)
    points, mre = {}, {}
    for precision in ("fp32", "bf16"):
        predictor = Predictor(checkpoint, device="cpu", precision=precision)  # type: ignore[arg-type]
        points[precision], _ = predictor.predict_arrays(test.images, spacing_mm=test.spacing_mm)
        summary = evaluate(predictor, test).overall
        mre[precision] = {"mre": summary.mre, "sdr_2mm": summary.sdr[2.0]}
    to_heatmap = [codec.image_to_heatmap(codec.to_input(im)[1]) for im in test.images]
    shift = np.stack(
        [
            np.linalg.norm(t.apply(a) - t.apply(b), axis=-1)
            for t, a, b in zip(to_heatmap, points["fp32"], points["bf16"], strict=True)
        ]
    )
    return {"images": len(test), "shift_heatmap_px": _stats(shift.ravel()), "test": mre}


def round_trip(checkpoint: Checkpoint, n: int = 64) -> dict[str, Any]:
    """Encode random points, decode from float32 and from bf16 heatmaps: distances in heatmap px."""
    codec = HeatmapCodec(checkpoint.codec)
    w, h = codec.heatmap_size
    g = torch.Generator().manual_seed(0)
    points = torch.rand(n, 19, 2, generator=g) * torch.tensor([w - 8.0, h - 8.0]) + 4.0
    heatmaps = codec.encode(points)
    fp32, _ = codec.decode(heatmaps)
    bf16, _ = codec.decode(heatmaps.to(torch.bfloat16).float())
    return {
        "fp32_to_points": _stats((fp32 - points).norm(dim=-1).numpy().ravel()),
        "bf16_to_fp32": _stats((bf16 - fp32).norm(dim=-1).numpy().ravel()),
    }


def runs(folders: dict[str, Path]) -> list[dict[str, Any]]:
    """Every evaluation of each folder: (name, strategy, seed, step, MRE, SDR 2 mm, training seconds)."""
    rows = []
    for name, folder in folders.items():
        for path in sorted((folder / "evals").glob("*.json")):
            record = json.loads(path.read_text())
            summary = summarize(np.concatenate(list(record_errors(record).values())))
            rows.append(
                {
                    "run": name,
                    "strategy": record["strategy"],
                    "seed": record["seed"],
                    "step": record["step"],
                    "mre": summary.mre,
                    "sdr_2mm": summary.sdr[2.0],
                    "train_seconds": record.get("train_seconds"),
                    "checkpoint_sha256": record["checkpoint_sha256"],
                    "parent_sha256": record.get("parent_sha256"),
                }
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.precision_check",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--checkpoint", type=Path, default=STEP0)
    p.add_argument("--protocol", default="cld38-5step")
    p.add_argument("--runs", nargs="*", default=[], metavar="NAME=FOLDER", help="bench.ikl result folders")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=RESULTS / "precision_check.json")
    args = p.parse_args(argv)
    try:
        folders = {k: Path(v) for k, _, v in (item.partition("=") for item in args.runs)}
    except ValueError as exc:
        p.error(str(exc))
    if any(not f.is_dir() for f in folders.values()):
        p.error(f"not a folder: {', '.join(str(f) for f in folders.values() if not f.is_dir())}")
    threads = set_torch_threads(args.threads)
    checkpoint = Checkpoint.load(args.checkpoint)
    result = {
        "machine": machine() | {"threads": threads},
        "checkpoint": str(args.checkpoint),
        "fixed_checkpoint": fixed_checkpoint(checkpoint, args.protocol),
        "round_trip": round_trip(checkpoint),
        "runs": runs(folders),
    }
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
