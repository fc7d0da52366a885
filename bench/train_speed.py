"""Training speed in fp32 and bf16 side by side: seconds per training image of the real trainer loop and the
achieved GFLOP/s beside the CPU's peak, per backbone and input size.

    python -m bench.train_speed --backbones hrnet_w18_small,hrnet_w32 --sizes 160x200,256x320 --threads 2

Each configuration runs `train_step` on real images of ../shared/data, strategy finetune (the network's own
forward, backward and Adam step) and kamp_ksd_only (plus the frozen teacher's forward, as in every distilling
step). The figure is the trainer's steady-state seconds per image: (loop time of 1 + n iterations - that of 1)
/ (n x batch). The precisions alternate `--repeats` times in one process and each keeps its fastest repeat, so
both see the same machine. Writes bench/results/train_speed.json: one row per (backbone, input size, precision).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from models.checkpoint import Checkpoint
from models.config import BackboneConfig, CodecConfig, Precision, TrainConfig
from models.datasets import default_data_root, load_protocol
from models.precision import cpu_bf16_flags, set_torch_threads
from models.step_data import StepData
from models.trainer import train_step

from .compute import COMPARED, cpu_peak_gflops, cpu_vector_flags, network_flops
from .ikl import RESULTS, machine

STRATEGIES = {"finetune": "s_per_image", "kamp_ksd_only": "s_per_image_with_teacher"}


def steady_seconds_per_image(
    v0: Checkpoint, data: StepData, strategy: str, precision: Precision, batch: int, iterations: int
) -> float:
    """(time of 1 + n iterations - time of 1) / (n x batch): without the allocator's and kernels' warm-up."""
    seconds = []
    for n in (1, 1 + iterations):
        config = TrainConfig(iterations=n, batch_size=batch, warmup=1, state_every=0, precision=precision)
        _, report = train_step(v0, data, strategy, config)
        seconds.append(report.seconds)
    return (seconds[1] - seconds[0]) / (iterations * batch)


def timed_steps(backbone: str, size: tuple[int, int], batch: int, root: Path) -> tuple[Checkpoint, StepData]:
    """What the speed benchmarks time a step from: a step-0 model of `backbone` at input `size` (W, H) after one
    fp32 iteration on the first `batch` images of cld38-5step's step 0, and step 1's first `batch` images."""
    protocol = load_protocol(root, "cld38-5step")
    ds = protocol.load_dataset(root)
    s0 = ds.step_data(protocol.steps[0].images[:batch], protocol.steps[0].landmarks, protocol.annotator)
    s1 = ds.step_data(protocol.steps[1].images[:batch], protocol.steps[1].landmarks, protocol.annotator)
    codec = CodecConfig(input_size=size)
    base = TrainConfig(iterations=1, batch_size=batch, warmup=1, state_every=0, precision="fp32")
    v0, _ = train_step(None, s0, "finetune", base, backbone=BackboneConfig(name=backbone), codec=codec)
    return v0, s1


def measure(backbone: str, size: tuple[int, int], args: argparse.Namespace, root: Path) -> list[dict[str, Any]]:
    v0, s1 = timed_steps(backbone, size, args.batch, root)
    flops = network_flops(v0.build_model().train(), size, backward=True)
    best: dict[tuple[str, str], float] = {}
    for _ in range(args.repeats):
        for precision in COMPARED:
            for strategy in STRATEGIES:
                s = steady_seconds_per_image(v0, s1, strategy, precision, args.batch, args.iterations)
                best[precision, strategy] = min(s, best.get((precision, strategy), float("inf")))
    rows = []
    for precision in COMPARED:
        s = best[precision, "finetune"]
        peak = cpu_peak_gflops(precision, args.threads, cpu_vector_flags())
        achieved = flops / s / 1e9
        rows.append(
            {
                "backbone": backbone,
                "input_size": list(size),
                "precision": precision,
                "batch_size": args.batch,
                **{key: best[precision, strategy] for strategy, key in STRATEGIES.items()},
                "train_gflop_per_image": flops / 1e9,
                "achieved_gflops": achieved,
                "peak_gflops": peak,
                "peak_fraction": achieved / peak if peak else None,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.train_speed", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--backbones", default="hrnet_w18_small,hrnet_w32")
    p.add_argument("--sizes", default="160x200,256x320")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--iterations", type=int, default=3, help="timed iterations per measurement")
    p.add_argument("--repeats", type=int, default=2, help="alternations of the two precisions")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: every core)")
    p.add_argument("--out", type=Path, default=RESULTS / "train_speed.json")
    args = p.parse_args(argv)
    args.threads = set_torch_threads(args.threads)
    root = default_data_root()
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for size in args.sizes.split(","):
        w, h = (int(v) for v in size.split("x"))
        for backbone in args.backbones.split(","):
            fp32, bf16 = measure(backbone, (w, h), args, root)
            rows += [fp32, bf16]
            for row in (fp32, bf16):
                print(
                    f"{backbone:<16} {w}x{h} {row['precision']}: {row['s_per_image']:.3f} s/img "
                    f"({row['achieved_gflops']:.0f} GFLOP/s of {row['peak_gflops'] or float('nan'):.0f}), "
                    f"with teacher {row['s_per_image_with_teacher']:.3f} s/img",
                    flush=True,
                )
            print(
                f"  bf16 speed-up {fp32['s_per_image'] / bf16['s_per_image']:.2f}x, with teacher "
                f"{fp32['s_per_image_with_teacher'] / bf16['s_per_image_with_teacher']:.2f}x",
                flush=True,
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "machine": machine() | {"bf16_flags": sorted(cpu_bf16_flags())},
        "threads": args.threads,
        "rows": rows,
        "seconds": time.perf_counter() - t0,
    }
    args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
