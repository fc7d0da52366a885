"""Training speed: seconds per training image of the real trainer loop, per backbone and input size.

    python -m bench.train_speed --backbones hrnet_w18_small,hrnet_w32 --sizes 256x320,512x640

Each configuration runs `train_step` (strategy kamp, so a frozen teacher forward is included, as in every
distilling step) on real images of ../shared/data for warm-up + timed iterations; the figure is the
trainer's own steady-state seconds per image: (loop time of 1 + n iterations - that of 1) / (n x batch),
side by side in one process. Writes bench/results/train_speed.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from models.config import BackboneConfig, CodecConfig, TrainConfig
from models.datasets import default_data_root, load_protocol
from models.trainer import train_step

from .ikl import RESULTS, machine


def measure(backbone: str, size: tuple[int, int], batch: int, iterations: int, root: Path) -> dict:
    protocol = load_protocol(root, "cld38-5step")
    ds = protocol.load_dataset(root)
    s0 = ds.step_data(protocol.steps[0].images[:batch], protocol.steps[0].landmarks, protocol.annotator)
    s1 = ds.step_data(protocol.steps[1].images[:batch], protocol.steps[1].landmarks, protocol.annotator)
    codec = CodecConfig(input_size=size)
    base = TrainConfig(iterations=1, batch_size=batch, warmup=1)
    v0, _ = train_step(None, s0, "finetune", base, backbone=BackboneConfig(name=backbone), codec=codec)
    out = {"backbone": backbone, "input_size": list(size), "batch_size": batch, "iterations": iterations}
    for strategy in ("finetune", "kamp_ksd_only"):
        # Steady state: the time of 1 + n iterations minus that of 1 (allocator and kernel warm-up) over n batches.
        seconds = []
        for n in (1, 1 + iterations):
            config = TrainConfig(iterations=n, batch_size=batch, warmup=1)
            _, report = train_step(v0, s1, strategy, config)
            seconds.append(report.seconds)
        out[f"s_per_image_{strategy}"] = (seconds[1] - seconds[0]) / (iterations * batch)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.train_speed", description=__doc__)
    p.add_argument("--backbones", default="hrnet_w18_small,hrnet_w32")
    p.add_argument("--sizes", default="256x320,512x640")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--out", type=Path, default=RESULTS / "train_speed.json")
    args = p.parse_args(argv)
    root = default_data_root()
    rows = []
    t0 = time.perf_counter()
    for size in args.sizes.split(","):
        w, h = (int(v) for v in size.split("x"))
        for backbone in args.backbones.split(","):
            row = measure(backbone, (w, h), args.batch, args.iterations, root)
            rows.append(row)
            print(
                f"{backbone:<16} {w}x{h}  finetune {row['s_per_image_finetune']:.3f} s/img   "
                f"with teacher (KSD) {row['s_per_image_kamp_ksd_only']:.3f} s/img",
                flush=True,
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine(), "rows": rows, "seconds": time.perf_counter() - t0}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
