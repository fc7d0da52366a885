"""How good is KA-Net? A diagnostic of KAMP's knowledge-association term on the test images.

    python -m bench.ka_diagnostics --protocol cld38-5step --profile cpu --seed 1 --strategy kamp
    python -m bench.ka_diagnostics --protocol cld38-5step --profile cpu --seed 0 --strategy kamp@feature_weight=1

For each step t >= 1 whose models bench/ikl.py has made (the step t-1 model, the teacher, and the step t model
of the strategy or arm, the student), stage I is run again on step t's training images (`models.trainer.fit_ka_net`:
the same triplets, a KA-Net trained the same way), and on the protocol's TEST images, for each triplet
(old <- new1, new2), the old landmark is located five ways, each as a radial error against its label (mm where
the spacing is known):
  - teacher: the step t-1 model's own prediction (what KAMP's distillation preserves);
  - ka_teacher: KA-Net on the teacher's features, given the two new landmarks' LABELS (KA-Net's best case: stage
    I's own input);
  - ka_student: KA-Net on the student's features, the new landmarks' labels (what the l_KA term reads in stage II);
  - student: the step t model's own prediction (the result);
  - and ka_target_gap: the distance between ka_teacher and teacher, i.e. how well KA-Net reproduces its training
    target (the teacher's peak) on unseen images.
If KA-Net's own error is larger than the teacher's, pulling the student towards KA-Net's reading cannot help the
old landmark. Writes bench/results/<protocol>-<profile>/diagnostics/ka-<strategy>-seed<s>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.checkpoint import Checkpoint
from models.codec import HeatmapCodec
from models.datasets import default_data_root, load_protocol
from models.metrics import radial_errors
from models.network import LandmarkNet
from models.precision import autocast, prepare_input
from models.strategies import ASSOCIATING
from models.trainer import FittedKANet, fit_ka_net

from .arms import Arm, parse_arm
from .ikl import RESULTS, Runner, machine
from .profiles import PROFILES, add_precision_argument, with_precision
from .steps import step_data, train_config

WAYS = ("teacher", "ka_teacher", "ka_student", "student", "ka_target_gap")


@torch.inference_mode()
def _locate(
    model: LandmarkNet, fitted: FittedKANet, codec: HeatmapCodec, images: Sequence[np.ndarray], keypoints: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """((N, T, 2) the model's own predictions of each triplet's old landmark, (N, T, 2) KA-Net's reading of the
    model's features given the new landmarks' labels), image pixels, in KA-Net's precision (the step's; `model`
    built for it, Checkpoint.build_frozen).
    keypoints: (N, K, 2) labels in image pixels, K = fitted.codes."""
    ka = fitted.ka
    device = torch.device("cpu")
    own, read = [], []
    for i in range(0, len(images), 8):
        prepared = [codec.to_input(im) for im in images[i : i + 8]]
        x = prepare_input(torch.stack([t for t, _ in prepared]), ka.precision)
        affines = [a for _, a in prepared]
        with autocast(device, ka.precision):
            heatmaps, features = model.forward_with_features(x)
        kp_hm = np.stack(
            [codec.image_to_heatmap(a).apply(kp) for a, kp in zip(affines, keypoints[i : i + 8], strict=True)]
        )
        targets = codec.encode(torch.as_tensor(kp_hm, dtype=torch.float32))  # (B, K, h, w), NaN rows give zeros
        with autocast(device, ka.precision):
            ka_maps = ka.kanet(features, targets[:, ka.new_a], targets[:, ka.new_b]).float()
        own.append(codec.decode_to_image(heatmaps.float()[:, ka.old], affines)[0])
        read.append(codec.decode_to_image(ka_maps, affines)[0])
    return np.concatenate(own), np.concatenate(read)


def diagnose_step(runner: Runner, arm: Arm, seed: int, t: int) -> dict[str, Any] | None:
    teacher_path = runner.ckpt_path(arm.name, seed, t - 1)
    student_path = runner.ckpt_path(arm.name, seed, t)
    if not (teacher_path.is_file() and student_path.is_file()):
        return None
    teacher, student = Checkpoint.load(teacher_path), Checkpoint.load(student_path)
    config = train_config(runner.profile, seed, t, runner.device, arm.overrides)
    data = step_data(runner.protocol, runner.ds, arm.strategy, t, runner.profile)
    fitted = fit_ka_net(teacher, data, arm.strategy, config)
    test = runner.test.select(fitted.codes)
    codec = HeatmapCodec(teacher.codec)
    old = [fitted.codes.index(o) for o, _, _ in fitted.triplets]
    truth = test.keypoints[:, old]  # (N, T, 2)
    t_own, t_read = _locate(
        teacher.build_frozen("cpu", fitted.ka.precision), fitted, codec, test.images, test.keypoints
    )
    s_own, s_read = _locate(
        student.build_frozen("cpu", fitted.ka.precision), fitted, codec, test.images, test.keypoints
    )
    located = {"teacher": t_own, "ka_teacher": t_read, "ka_student": s_read, "student": s_own}
    errors = {k: radial_errors(v, truth, test.spacing_mm) for k, v in located.items()}
    errors["ka_target_gap"] = radial_errors(t_read, t_own, test.spacing_mm)
    return {
        "step": t,
        "kanet_loss": fitted.loss,
        "triplets": [
            {"triplet": list(tr), **{w: float(np.nanmean(errors[w][:, j])) for w in WAYS}}
            for j, tr in enumerate(fitted.triplets)
        ],
        "mean": {w: float(np.nanmean(errors[w])) for w in WAYS},
    }


def markdown(result: dict[str, Any]) -> str:
    unit = result["unit"]
    lines = [
        f"# KA-Net diagnostic: {result['protocol']}, {result['strategy']}, seed {result['seed']}",
        "",
        f"Mean radial error ({unit}) on {result['test_images']} test images of each triplet's old landmark: the "
        "teacher's (step t-1) prediction, KA-Net's reading of the teacher's and of the student's features given the "
        "new landmarks' labels, the student's (step t) prediction; and the gap between KA-Net's reading and the "
        "teacher's peak (its training target).",
        "",
        "| step | triplet (old <- new1, new2) | KA-Net loss | teacher | KA-Net, teacher features | "
        "KA-Net, student features | student | KA-Net to its target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for step in result["steps"]:
        for tr in step["triplets"]:
            o, a, b = tr["triplet"]
            lines.append(
                f"| {step['step']} | {o} <- {a}, {b} | {step['kanet_loss']:.3f} | {tr['teacher']:.2f} | "
                f"{tr['ka_teacher']:.2f} | {tr['ka_student']:.2f} | {tr['student']:.2f} | {tr['ka_target_gap']:.2f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.ka_diagnostics", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--protocol", default="cld38-5step")
    p.add_argument("--profile", default="cpu", choices=sorted(PROFILES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--strategy", default="kamp", help="kamp, kamp_random, or an arm of either (kamp@feature_weight=1)")
    p.add_argument("--data-root", type=Path, default=None)
    p.add_argument("--out", type=Path, default=RESULTS)
    add_precision_argument(p)
    args = p.parse_args(argv)
    try:
        arm = parse_arm(args.strategy)
    except ValueError as exc:
        p.error(str(exc))
    if arm.strategy not in ASSOCIATING:
        p.error(f"{args.strategy!r} has no KA-Net to diagnose: use kamp, kamp_random or an arm of either")
    root = args.data_root or default_data_root()
    protocol = load_protocol(root, args.protocol)
    out = args.out / f"{args.protocol}-{args.profile}"
    runner = Runner(protocol, with_precision(PROFILES[args.profile], args.precision), root, out, "cpu")
    steps = []
    for t in range(1, protocol.num_steps):
        result = diagnose_step(runner, arm, args.seed, t)
        if result is None:
            print(f"step {t}: no models of {args.strategy} seed {args.seed} (run bench.ikl first); stopping")
            break
        steps.append(result)
        print(f"step {t}: " + ", ".join(f"{w} {v:.2f}" for w, v in result["mean"].items()), flush=True)
    if not steps:
        print(f"no step of {args.strategy} seed {args.seed} to diagnose under {out}/checkpoints", file=sys.stderr)
        return 2
    unit = "mm" if np.isfinite(runner.test.spacing_mm).all() else "px"
    result = {
        "protocol": args.protocol,
        "profile": args.profile,
        "strategy": args.strategy,
        "seed": args.seed,
        "unit": unit,
        "test_images": len(runner.test),
        "machine": machine(),
        "steps": steps,
    }
    target = out / "diagnostics" / f"ka-{args.strategy}-seed{args.seed}"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.with_suffix(".json").write_text(json.dumps(result, indent=1))
    target.with_suffix(".md").write_text(markdown(result))
    print(f"wrote {target}.json and .md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
