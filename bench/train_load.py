"""A training load for bench.predict: KAMP-sized training iterations in a process of their own, set up as a worker
sets itself up (KAMP_TORCH_THREADS, KAMP_PRECISION), printing when each iteration ends.

    python -m bench.train_load --backbone hrnet_w18_small --input-size 256x320 --seconds 60

Each iteration is one student forward, backward and Adam step plus a frozen teacher's forward on a batch of real
images (what a distilling step computes), timed on its own; the trainer's per-10-iteration progress would be too
coarse to see a few seconds of predictions beside it. Prints one JSON line per iteration: {"t": seconds since
the Unix epoch at its end, "s": its duration}.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import torch

from models.codec import HeatmapCodec
from models.config import BackboneConfig, CodecConfig
from models.datasets import default_data_root, load_protocol
from models.losses import heatmap_mse, ksd_loss
from models.network import LandmarkNet
from models.precision import Resolved, autocast, prepare_input, prepare_module, resolve_precision, set_torch_threads
from server.settings import Settings


def batch(codec: HeatmapCodec, size: int) -> torch.Tensor:
    """(size, 1, H, W) letterboxed real cephalograms."""
    root = default_data_root()
    protocol = load_protocol(root, "cld38-5step")
    ds = protocol.load_dataset(root)
    data = ds.step_data(protocol.steps[0].images[:size], protocol.steps[0].landmarks, protocol.annotator)
    return torch.stack([codec.to_input(im)[0] for im in data.images])


def training_step(
    backbone: str,
    size: tuple[int, int],
    batch_size: int,
    precision: Resolved,
    device: torch.device,
    *,
    landmarks: int = 19,
    compile: bool = False,
) -> Callable[[], None]:
    """One distilling step's computation on a fixed batch of real images, as a callable: the student's forward,
    backward and Adam step beside a frozen teacher's forward (input size (W, H) pixels). `compile`: the student
    and the teacher through torch.compile."""
    codec = HeatmapCodec(CodecConfig(input_size=size))
    config = BackboneConfig(name=backbone)
    student = prepare_module(LandmarkNet(backbone=config, step_sizes=[landmarks, 5]).to(device), precision).train()
    teacher = prepare_module(LandmarkNet(backbone=config, step_sizes=[landmarks]).to(device), precision).eval()
    teacher.requires_grad_(False)
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-3)
    forward_s: Callable[[torch.Tensor], torch.Tensor] = torch.compile(student) if compile else student
    forward_t: Callable[[torch.Tensor], torch.Tensor] = torch.compile(teacher) if compile else teacher
    x = prepare_input(batch(codec, batch_size).to(device), precision)
    w, h = codec.heatmap_size
    target = torch.zeros(batch_size, landmarks + 5, h, w, device=device)

    def step() -> None:
        with autocast(device, precision):
            hm = forward_s(x)
            with torch.no_grad():
                t_hm = forward_t(x)
        old = hm.float()[:, :landmarks]
        loss = heatmap_mse(hm.float(), target) + ksd_loss(old, t_hm.float(), temperature=0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.train_load", description=__doc__)
    p.add_argument("--backbone", default="hrnet_w18_small")
    p.add_argument("--input-size", default="256x320")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seconds", type=float, default=60.0)
    args = p.parse_args(argv)
    settings = Settings()
    set_torch_threads(settings.torch_threads)
    device = torch.device("cpu")
    w, h = (int(v) for v in args.input_size.split("x"))
    step = training_step(args.backbone, (w, h), args.batch, resolve_precision(settings.precision, device), device)
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        t0 = time.perf_counter()
        step()
        print(json.dumps({"t": time.time(), "s": time.perf_counter() - t0}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
