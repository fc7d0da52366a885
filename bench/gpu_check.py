"""The GPU check, for a session that is lent a GPU: the `gpu` profile's model trained in fp32 eager, in bf16 +
channels_last, and in bf16 + channels_last through torch.compile, side by side.

    python -m bench.gpu_check --iterations 300

Each variant runs one distilling step's computation (bench/train_load.py: the student's forward, backward and Adam
step beside a frozen teacher's forward, on a fixed batch of real images) for warm-up + `--iterations`
iterations; the figures are images per second of the timed iterations (synchronised), the ratio to fp32 eager,
and the model FLOP utilisation (MFU): the student's forward + backward and the teacher's forward FLOPs
(torch.utils.flop_counter) per second over the GPU's dense bf16 peak. Writes bench/results/gpu_check.json.
Exits with status 2 and a message on a machine without CUDA.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from models.config import BackboneConfig
from models.network import LandmarkNet
from models.precision import Resolved

from .compute import network_flops
from .ikl import RESULTS, machine
from .profiles import PROFILES
from .train_load import training_step

#: Dense bf16 tensor-core peaks in TFLOP/s (vendors' data sheets, without sparsity), by a name fragment.
BF16_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0}
#: (name, precision, torch.compile)
VARIANTS: tuple[tuple[str, Resolved, bool], ...] = (
    ("fp32 eager", "fp32", False),
    ("bf16 + channels_last", "bf16", False),
    ("bf16 + channels_last + torch.compile", "bf16", True),
)


def bf16_peak(name: str, override: float | None) -> float | None:
    if override:
        return override
    return next((peak for key, peak in BF16_PEAK_TFLOPS.items() if key in name), None)


def time_variant(step: Any, warmup: int, iterations: int) -> float:
    """Seconds per iteration of `step` after `warmup` iterations (compilation happens there)."""
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iterations):
        step()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / iterations


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.gpu_check", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--iterations", type=int, default=300)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak, where it is not in the table")
    p.add_argument("--skip-compile", action="store_true")
    p.add_argument("--out", type=Path, default=RESULTS / "gpu_check.json")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench.gpu_check: no CUDA device on this machine; run it where a GPU is lent", file=sys.stderr)
        return 2
    profile = PROFILES["gpu"]
    device = torch.device("cuda")
    name = torch.cuda.get_device_name(0)
    peak = bf16_peak(name, args.peak_tflops)
    net = LandmarkNet(backbone=BackboneConfig(name=profile.backbone), step_sizes=[19, 5])
    flops = network_flops(net.train(), profile.input_size, backward=True) + network_flops(
        net.eval(), profile.input_size, backward=False
    )
    rows: list[dict[str, Any]] = []
    for label, precision, compiled in VARIANTS:
        if compiled and args.skip_compile:
            continue
        step = training_step(
            profile.backbone, profile.input_size, profile.batch_size, precision, device, compile=compiled
        )
        seconds = time_variant(step, args.warmup, args.iterations)
        images_s = profile.batch_size / seconds
        tflops = flops * images_s / 1e12
        rows.append(
            {
                "variant": label,
                "precision": precision,
                "compile": compiled,
                "images_per_s": images_s,
                "achieved_tflops": tflops,
                "mfu": tflops / peak if peak else None,
            }
        )
        print(f"{label:<40} {images_s:8.1f} images/s  {tflops:6.1f} TFLOP/s", flush=True)
        del step
        torch.cuda.empty_cache()
    for row in rows:
        row["speedup_vs_fp32_eager"] = row["images_per_s"] / rows[0]["images_per_s"]
    result = {
        "machine": machine(),
        "gpu": name,
        "bf16_peak_tflops": peak,
        "profile": profile.name,
        "backbone": profile.backbone,
        "input_size": list(profile.input_size),
        "batch_size": profile.batch_size,
        "flops_per_image": flops,
        "iterations": args.iterations,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
