"""Does the first stage fit its landmarks worse when it must place more of them at once? Step 0 again, with more.

    python -m bench.landmark_load --protocol cld38-5step --profile cpu-local-preact --seed 0 --landmarks 38

Trains the profile's step 0 (its images, iterations and seed) from nothing, first stage only, on the first
`--landmarks` landmarks of the protocol instead of step 0's own, and measures the first stage's radial error of step
0's landmarks on those training images and on the test images beside the committed step-0 model's (the same images,
iterations and seed, step 0's landmarks alone), with each step-0 landmark's nearest added landmark. Only the number
of landmarks differs between the two: the joint oracle trains every landmark so far at once, and an oracle that
falls behind the incremental strategies (docs/benchmarks.md) may be paying for that. A diagnosis, not a model
choice: nothing here feeds a benchmark row. Writes
bench/results/<protocol>-<profile>/diagnostics/landmark-load-seed<s>-k<K>.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.backbones import build_backbone
from models.checkpoint import Checkpoint
from models.codec import HeatmapCodec
from models.config import CodecConfig, TrainConfig
from models.evaluate import evaluate
from models.precision import Precision
from models.predictor import Predictor
from models.step_data import StepData
from models.trainer import train_step

from .ikl import RESULTS, Runner
from .joint_restart import group_mre
from .profiles import PROFILES, Profile
from .steps import train_config


def step0_errors(checkpoint: Checkpoint, data: StepData, precision: Precision) -> dict[str, list[float]]:
    """Landmark code -> the first stage's radial errors (mm) over `data`'s images, for `data`'s landmarks."""
    result = evaluate(Predictor(checkpoint, precision=precision, local=False), data)
    return {c: [float(v) for v in result.errors[:, j]] for j, c in enumerate(result.codes)}


def nearest_added(data: StepData, own: list[str], codec: HeatmapCodec) -> dict[str, dict[str, Any]]:
    """For each of step 0's landmarks (`own`), the added landmark of `data` nearest to it (median over the images)
    and that median distance in mm and in heatmap pixels (what the first stage's Gaussians of sigma pixels blur)."""
    index = {c: j for j, c in enumerate(data.codes)}
    added = [c for c in data.codes if c not in own]
    sizes = [(im.shape[1], im.shape[0]) for im in data.images]
    to_heatmap = np.array([codec.image_to_heatmap(codec.letterbox(wh)).mean_scale for wh in sizes])  # (N,)
    mm_per_px = np.nanmean(data.spacing_mm, axis=1)  # (N,)
    out: dict[str, dict[str, Any]] = {}
    for code in own:
        gap = np.linalg.norm(data.keypoints[:, [index[a] for a in added]] - data.keypoints[:, [index[code]]], axis=-1)
        median_px = np.nanmedian(gap, axis=0)  # (added,) image pixels
        k = int(np.nanargmin(median_px))
        out[code] = {
            "nearest": added[k],
            "mm": round(float(np.nanmedian(gap[:, k] * mm_per_px)), 2),
            "heatmap_px": round(float(np.nanmedian(gap[:, k] * to_heatmap)), 2),
        }
    return out


def rank_bound(data: StepData, codec: HeatmapCodec, rank: int) -> float:
    """The lowest l_GT (TrainConfig.gt_scale x mean squared heatmap error) that any heatmaps of rank <= `rank` can
    reach on `data`'s target heatmaps, averaged over its images: a head of 1x1 convs on C feature channels outputs,
    per image, K maps in the span of those C channels and a constant (rank C + 1). Eckart-Young: the energy of each
    image's (K, h*w) target matrix beyond its `rank` largest singular values, over K * h * w."""
    scale = TrainConfig().gt_scale
    losses = []
    for image, keypoints in zip(data.images, data.keypoints, strict=True):
        to_heatmap = codec.image_to_heatmap(codec.letterbox((image.shape[1], image.shape[0])))
        targets = codec.encode(torch.from_numpy(to_heatmap.apply(keypoints))).flatten(1).double()  # (K, h*w)
        tail = torch.linalg.svdvals(targets)[rank:]
        losses.append(scale * float((tail**2).sum()) / targets.numel())
    return float(np.mean(losses))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.landmark_load", description=__doc__.split("\n\n")[0])
    p.add_argument("--protocol", required=True)
    p.add_argument("--profile", choices=sorted(PROFILES), default="cpu-local-preact")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--landmarks", type=int, required=True, help="how many of the protocol's landmarks, in order")
    p.add_argument("--data-root", type=Path, default=None, help="default: models.datasets.default_data_root()")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument(
        "--no-train", action="store_true", help="only recompute the analyses that need no training into a record"
    )
    args = p.parse_args(argv)
    from models.datasets import default_data_root, load_protocol

    profile = PROFILES[args.profile]
    root = args.data_root or default_data_root()
    protocol = load_protocol(root, args.protocol)
    own = protocol.landmarks_up_to(0)
    if not len(own) < args.landmarks <= len(protocol.landmarks):
        p.error(f"--landmarks must lie in {len(own) + 1}..{len(protocol.landmarks)} (step 0 has {len(own)})")
    out = args.out / f"{args.protocol}-{args.profile}"
    runner = Runner(protocol, profile, root, out, "cpu")
    base_path = runner.ckpt_path("step0", args.seed, 0)
    if not base_path.is_file():
        p.error(f"no step-0 model of seed {args.seed} at {base_path}: run bench.ikl first")
    images = protocol.steps[0].images
    data = runner.ds.step_data(images, protocol.landmarks[: args.landmarks], protocol.annotator)
    codec = HeatmapCodec(CodecConfig(input_size=profile.input_size, sigma=profile.sigma))
    path = out / "diagnostics" / f"landmark-load-seed{args.seed}-k{args.landmarks}.json"
    if args.no_train:
        if not path.is_file():
            p.error(f"no record at {path}: run without --no-train first")
        record = {**json.loads(path.read_text()), **analyses(data, own, codec, profile)}
        path.write_text(json.dumps(record, indent=1))
        print(f"wrote {path}")
        return 0
    config = train_config(profile, args.seed, 0, "cpu")
    t0 = time.perf_counter()
    model, report = train_step(
        None,
        data,
        "finetune",
        config,
        backbone=profile.backbone_config(),
        codec=codec.config,
        refine=None,
        names=runner.names,
    )
    seconds = time.perf_counter() - t0
    train = data.select(own)
    test = runner.test.select(own)
    base = Checkpoint.load(base_path)
    precision = profile.precision
    rows: dict[str, Any] = {}
    for name, checkpoint in (("step0", base), (f"k{args.landmarks}", model)):
        errors = {split: step0_errors(checkpoint, d, precision) for split, d in (("train", train), ("test", test))}
        rows[name] = {split: {"mre": group_mre(e, [own])[0], "per_landmark": _means(e)} for split, e in errors.items()}
    record = {
        "protocol": args.protocol,
        "profile": args.profile,
        "seed": args.seed,
        "landmarks": args.landmarks,
        "step0_landmarks": len(own),
        "iterations": config.iterations,
        "train_seconds": seconds,
        "loss_history": report.loss_history,
        "first_stage_step0_landmarks": rows,
        **analyses(data, own, codec, profile),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1))
    for name, row in rows.items():
        print(f"{name}: step-0 landmarks, first stage: train {row['train']['mre']:.2f}, test {row['test']['mre']:.2f}")
    print(f"wrote {path}")
    return 0


def analyses(data: StepData, own: list[str], codec: HeatmapCodec, profile: Profile) -> dict[str, Any]:
    """What needs no training: each step-0 landmark's nearest added one, and the rank bound of the head (the
    channels its 1x1 convs read and a bias) on the targets of step 0's landmarks alone and of all `data`'s."""
    config = profile.backbone_config()
    rank = (config.head_channels or build_backbone(config).out_channels) + 1
    return {
        "nearest_added": nearest_added(data, own, codec),
        "rank": rank,
        "rank_bound_l_gt": {
            "step0": rank_bound(data.select(own), codec, rank),
            f"k{len(data.codes)}": rank_bound(data, codec, rank),
        },
    }


def _means(errors: dict[str, list[float]]) -> dict[str, float]:
    return {c: round(float(np.nanmean(np.array(v, dtype=float))), 3) for c, v in errors.items()}


if __name__ == "__main__":
    raise SystemExit(main())
