"""fp32 training and prediction speed in the two memory layouts, side by side, on this CPU: the plain (NCHW)
layout against channels_last (NHWC), which `models.precision.memory_format` chooses between for fp32.

    python -m bench.layout_speed --backbones hrnet_w18_small --sizes 256x320 --threads 2

Per backbone and input size: the trainer's steady-state seconds per training image (bench.train_speed's
measure: strategy finetune, and kamp_ksd_only with the frozen teacher's forward), the seconds of one
prediction forward of a frozen model (batch 1, the fastest of `--forwards`) and of the default local stage's
network on one image's crops (one per landmark), each with the layout forced for the networks' weights and
inputs. The layouts alternate `--repeats` times in one process and each keeps its
fastest repeat, so both see the same machine. Writes bench/results/layout_speed-<cpu>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from models import precision as precision_module
from models.checkpoint import Checkpoint
from models.config import RefineConfig
from models.datasets import default_data_root
from models.precision import cpu_has_avx512, prepare_frozen, prepare_input, set_torch_threads
from models.refine import build_crop_network

from .ikl import RESULTS, machine
from .jsonio import write_json
from .train_speed import STRATEGIES, steady_seconds_per_image, timed_steps

LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}


@contextlib.contextmanager
def forced_layout(fmt: torch.memory_format) -> Iterator[None]:
    """Every network prepared inside takes `fmt` whatever the precision and device (models.precision looks its
    layout up at each call)."""
    chosen = precision_module.memory_format
    precision_module.memory_format = lambda precision, device="cpu": fmt  # type: ignore[assignment]
    try:
        yield
    finally:
        precision_module.memory_format = chosen  # type: ignore[assignment]


def forward_seconds(v0: Checkpoint, size: tuple[int, int], forwards: int) -> float:
    """Seconds of one fp32 forward of v0's frozen model on a (1, 1, H, W) input, the fastest of `forwards`."""
    net = v0.build_frozen(torch.device("cpu"), "fp32")
    return _fastest_forward(net, prepare_input(torch.rand(1, 1, size[1], size[0]), "fp32"), forwards)


def crops_forward_seconds(landmarks: int, forwards: int) -> float:
    """Seconds of one fp32 forward of the default local stage's frozen network (models.refine) on one image's
    crops, (landmarks, 1, crop, crop), the fastest of `forwards`."""
    config = RefineConfig()
    net = prepare_frozen(build_crop_network(config, [landmarks]).frozen(), "fp32")
    x = prepare_input(torch.rand(landmarks, 1, config.crop_size, config.crop_size), "fp32")
    return _fastest_forward(net, x, forwards)


def _fastest_forward(net: torch.nn.Module, x: torch.Tensor, forwards: int) -> float:
    """Seconds of the fastest of `forwards` forward passes of `net` on `x`, after one that warms the kernels up."""
    best = float("inf")
    with torch.no_grad():
        net(x)
        for _ in range(forwards):
            t = time.perf_counter()
            net(x)
            best = min(best, time.perf_counter() - t)
    return best


def measure(backbone: str, size: tuple[int, int], args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """{"backbone", "input_size", layout -> {s_per_image, s_per_image_with_teacher, forward_s, crops_forward_s}}
    for fp32."""
    v0, s1 = timed_steps(backbone, size, args.batch, root)
    best: dict[tuple[str, str], float] = {}
    for _ in range(args.repeats):
        for name, fmt in LAYOUTS.items():
            with forced_layout(fmt):
                timed = {
                    key: steady_seconds_per_image(v0, s1, s, "fp32", args.batch, args.iterations)
                    for s, key in STRATEGIES.items()
                }
                timed["forward_s"] = forward_seconds(v0, size, args.forwards)
                timed["crops_forward_s"] = crops_forward_seconds(len(v0.landmarks), args.forwards)
            for key, s in timed.items():
                best[name, key] = min(s, best.get((name, key), float("inf")))
    keys = [*STRATEGIES.values(), "forward_s", "crops_forward_s"]
    return {
        "backbone": backbone,
        "input_size": list(size),
        "batch_size": args.batch,
        **{name: {key: best[name, key] for key in keys} for name in LAYOUTS},
        "nchw_over_channels_last": {key: best["nchw", key] / best["channels_last", key] for key in keys},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.layout_speed", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--backbones", default="hrnet_w18_small")
    p.add_argument("--sizes", default="256x320")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--iterations", type=int, default=3, help="timed training iterations per measurement")
    p.add_argument("--forwards", type=int, default=5, help="timed prediction forwards per measurement")
    p.add_argument("--repeats", type=int, default=2, help="alternations of the two layouts")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: every core)")
    p.add_argument("--out", type=Path, default=None, help="default: bench/results/layout_speed-<cpu>.json")
    args = p.parse_args(argv)
    args.threads = set_torch_threads(args.threads)
    root = default_data_root()
    t0 = time.perf_counter()
    rows = []
    for size in args.sizes.split(","):
        w, h = (int(v) for v in size.split("x"))
        for backbone in args.backbones.split(","):
            row = measure(backbone, (w, h), args, root)
            rows.append(row)
            ratios = ", ".join(f"{k} {v:.2f}x" for k, v in row["nchw_over_channels_last"].items())
            print(f"{backbone:<16} {w}x{h} fp32, NCHW time / channels_last time: {ratios}", flush=True)
    out = args.out or RESULTS / f"layout_speed-{'avx512' if cpu_has_avx512() else 'avx2'}.json"
    result = {
        "machine": machine() | {"avx512": cpu_has_avx512()},
        "threads": args.threads,
        "rows": rows,
        "seconds": time.perf_counter() - t0,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
