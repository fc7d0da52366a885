"""Choice of the local stage's settings on a validation split carved from step 0's OWN training images.

    python -m bench.local_probe --protocol cld38-5step --profile cpu --seed 0 \\
        --variant base --variant crop_size=96 --variant backbone=hrnet_w18_small

The first stage is trained once (the profile's step 0, on the step's images minus a held-out share; cached
under bench/results/<protocol>-<profile>/local/). Each variant (RefineConfig and RefineTrainConfig fields,
`name=value` joined by `;`; `base` for the defaults) then trains a crop network on the same images and is
measured on the held-out ones:
  - two_stage / one_stage: MRE and SDR of the model with and without its local stage;
  - recall: the share of held-out landmarks whose true point lies inside the crop around the first stage's
    estimate (the local stage cannot recover the others);
  - at_truth / at_truth_jitter: the local stage's error on crops centred on the true point, and offset from it
    by the training jitter: its precision without the first stage's misses.
Results go to local/probe-step0-seed<s>.json (one entry per variant, written as each finishes, so a rerun
resumes) and a markdown table beside it. Test images are never read.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from typing import Any

import numpy as np
import torch

from models.checkpoint import Checkpoint
from models.config import CodecConfig, RefineConfig, RefineTrainConfig, from_dict, to_dict
from models.crops import crop_affine, image_pixels_per_crop_pixel
from models.datasets import default_data_root, load_protocol
from models.metrics import radial_errors, summarize
from models.precision import prepare_frozen, prepare_module, resolve_precision, set_torch_threads
from models.predictor import Predictor
from models.refine import Refiner, build_crop_network
from models.refine_training import make_task, train_crop_network
from models.step_data import StepData
from models.trainer import resolve_device, train_step

from .arms import parse_value
from .ikl import RESULTS
from .profiles import PROFILES, add_precision_argument, with_precision
from .select import split
from .steps import step_data, train_config

#: Peak priors (RefineConfig.prior, crop pixels) each variant's network is also measured with, at prediction.
PRIORS = (0.0, 8.0, 12.0, 16.0, 24.0)
REFINE_FIELDS = {f.name for f in dataclasses.fields(RefineConfig)}
REFINE_TRAIN_FIELDS = {f.name for f in dataclasses.fields(RefineTrainConfig)}


def parse_variant(text: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """'crop_size=96;jitter=8' -> (RefineConfig overrides, RefineTrainConfig overrides); 'base' -> ({}, {})."""
    net: dict[str, Any] = {}
    train: dict[str, Any] = {}
    for item in [] if text == "base" else text.split(";"):
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--variant wants name=value;...; got {item!r}")
        if name in REFINE_FIELDS:
            net[name] = parse_value(value)
        elif name in REFINE_TRAIN_FIELDS:
            train[name] = parse_value(value)
        else:
            raise ValueError(f"{name!r} is neither a RefineConfig nor a RefineTrainConfig field")
    return net, train


def recall(config: RefineConfig, estimates: np.ndarray, truth: np.ndarray, spacing: np.ndarray) -> float:
    """Share of finite (image, landmark) truths inside the crop around the estimate (image pixels)."""
    inside, total = 0, 0
    for i in range(len(truth)):
        for j in range(truth.shape[1]):
            if not np.isfinite(truth[i, j]).all():
                continue
            p = crop_affine(config, estimates[i, j], spacing[i]).apply(truth[i, j])
            total += 1
            inside += bool(((p >= -0.5) & (p <= config.crop_size - 0.5)).all())
    return inside / max(1, total)


def at_truth(refiner: Refiner, val: StepData, jitter: float, rng: np.random.Generator) -> dict[str, float]:
    """The local stage on crops centred on each true point, offset by N(0, jitter) crop pixels per axis."""
    centres = val.keypoints.copy()
    for i in range(len(val)):
        kx, ky = image_pixels_per_crop_pixel(refiner.config, val.spacing_mm[i])
        centres[i] += rng.normal(0.0, jitter, size=centres[i].shape) * (kx, ky)
    confidence = np.ones(centres.shape[:2])
    refined = refiner.refine(val.images, centres, confidence, val.spacing_mm)
    return summarize(radial_errors(refined.points, val.keypoints, val.spacing_mm)).to_dict()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocol", default="cld38-5step")
    ap.add_argument("--profile", default="cpu", choices=sorted(PROFILES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--holdout", type=float, default=0.25)
    ap.add_argument("--variant", action="append", default=[], help="'base' or name=value;... (repeatable)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="auto")
    add_precision_argument(ap)
    args = ap.parse_args(argv)
    set_torch_threads(args.threads)
    profile = with_precision(PROFILES[args.profile], args.precision)
    root = default_data_root()
    protocol = load_protocol(root, args.protocol)
    ds = protocol.load_dataset(root)
    data = step_data(protocol, ds, "finetune", 0, profile)
    tr, va = split(len(data), args.holdout, args.seed)
    train, val = data.subset(tr.tolist()), data.subset(va.tolist())
    out = RESULTS / f"{args.protocol}-{profile.name}" / "local"
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(args.device)
    precision = resolve_precision(profile.precision, device)
    config = train_config(profile, args.seed, 0, args.device)
    first_path = out / f"step0-split-seed{args.seed}-{precision}.safetensors"
    if first_path.is_file():
        first = Checkpoint.load(first_path)
    else:
        print(f"training the first stage on {len(train)} images ...", file=sys.stderr)
        first, _ = train_step(
            None,
            train,
            "finetune",
            config,
            backbone=profile.backbone_config(),
            codec=CodecConfig(input_size=profile.input_size, sigma=profile.sigma),
        )
        first.save(first_path)
    estimates, _ = Predictor(first, precision=precision).predict_arrays(val.images)
    one = summarize(radial_errors(estimates, val.keypoints, val.spacing_mm)).to_dict()
    results_path = out / f"probe-step0-seed{args.seed}-{precision}.json"
    results: dict[str, Any] = json.loads(results_path.read_text()) if results_path.is_file() else {}
    for variant in args.variant or ["base"]:
        if variant in results:
            continue
        net_over, train_over = parse_variant(variant)
        refine = from_dict(RefineConfig, {**to_dict(RefineConfig()), **net_over})
        run_config = dataclasses.replace(config)
        run_config.refine = from_dict(RefineTrainConfig, {**to_dict(config.refine), **train_over})
        torch.manual_seed(args.seed)
        rng = np.random.default_rng(args.seed)
        net = build_crop_network(refine, first.step_sizes).to(device)
        prepare_module(net, precision)
        task = make_task(train, first.codes, None, 0, refine, device)
        t0 = time.perf_counter()
        result = train_crop_network(net, None, task, "finetune", refine, run_config, precision, rng)
        seconds = time.perf_counter() - t0
        refiner = Refiner(prepare_frozen(net.frozen(), precision), refine, precision)
        staged = refiner.refine(val.images, estimates, np.ones(estimates.shape[:2]), val.spacing_mm)
        torch.save(net.state_dict(), out / f"variant-{_slug(variant)}-seed{args.seed}-{precision}.pt")
        by_passes = {}
        for passes in (1, 2, 3):
            again = Refiner(refiner.network, refine, precision, passes=passes)
            pts = again.refine(val.images, estimates, np.ones(estimates.shape[:2]), val.spacing_mm).points
            by_passes[str(passes)] = summarize(radial_errors(pts, val.keypoints, val.spacing_mm)).to_dict()
        by_prior = {}
        for prior in PRIORS:
            again = Refiner(refiner.network, refine, precision, prior=prior)
            pts = again.refine(val.images, estimates, np.ones(estimates.shape[:2]), val.spacing_mm).points
            by_prior[str(prior)] = summarize(radial_errors(pts, val.keypoints, val.spacing_mm)).to_dict()
        entry: dict[str, Any] = {
            "refine": to_dict(refine),
            "refine_train": to_dict(run_config.refine),
            "train_seconds": seconds,
            "train_images": len(train),
            "val_images": len(val),
            "one_stage": one,
            "two_stage": summarize(radial_errors(staged.points, val.keypoints, val.spacing_mm)).to_dict(),
            "local_share": float(staged.local.mean()),
            "by_passes": by_passes,
            "by_prior": by_prior,
            "recall": recall(refine, estimates, val.keypoints, val.spacing_mm),
            "at_truth": at_truth(refiner, val, 0.0, np.random.default_rng(1)),
            "at_truth_jitter": at_truth(refiner, val, run_config.refine.jitter, np.random.default_rng(1)),
            "last_loss": result.history[-1] if result.history else None,
        }
        results[variant] = entry
        results_path.write_text(json.dumps(results, indent=1))
        print(
            f"{variant}: two-stage {entry['two_stage']['mre']:.3f} one-stage {one['mre']:.3f} "
            f"recall {entry['recall']:.3f} at-truth {entry['at_truth']['mre']:.3f} ({seconds:.0f} s)"
        )
    (out / f"probe-step0-seed{args.seed}-{precision}.md").write_text(table(results))
    return 0


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| variant | two-stage MRE | SDR 2 mm | 2 passes | 3 passes | one-stage MRE | recall | at truth "
        "| at truth + jitter | train s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, e in results.items():  # e: one variant's entry
        lines.append(
            f"| {name} | {e['two_stage']['mre']:.3f} | {e['two_stage']['sdr']['2.0']:.3f} "
            f"| {_passes(e, '2')} | {_passes(e, '3')} | {e['one_stage']['mre']:.3f}"
            f" | {e['recall']:.3f} | {e['at_truth']['mre']:.3f} | {e['at_truth_jitter']['mre']:.3f}"
            f" | {e['train_seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def _slug(variant: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in variant)


def _passes(entry: dict[str, Any], n: str) -> str:
    s = entry.get("by_passes", {}).get(n)
    return "" if s is None else f"{s['mre']:.3f} ({s['sdr']['2.0']:.2f})"


if __name__ == "__main__":
    sys.exit(main())
