"""Prediction speed in fp32 and bf16 side by side: the network in process per backbone and input size, the predict
endpoint of a real `kamp serve` process, and one machine that trains and predicts at once.

    python -m bench.predict --backbone hrnet_w18_small --input-size 256x320 --requests 48

Models are freshly initialised networks (their speed does not depend on their training); the served image is a
real cephalogram (968x1200 JPEG).
- In process (`inference`): the forward pass alone on one image and per image of a batch of 4, the whole
  Predictor call on one image, and the forward pass's achieved GFLOP/s beside the CPU's peak.
- The endpoint (`rows`): latency p50/p95/p99 and throughput under 1, 4 and 16 concurrent clients, in each
  inference mode and precision, with the server's own timings (Server-Timing: image decoding, preprocess, forward,
  heatmap decoding, and `app`, the application's whole time, request handed over -> response headers sent).
  Service overhead = 1 - the server's forward time / request latency, both medians of the same single-client
  requests; it splits into the time in the application beside the forward pass (app - forward) and the time
  outside it (latency - app: the client library, the loopback connection and the HTTP server's parsing).
- Stages (`stages`): one client's latency with the served backbone and size, one-stage and with the default
  local stage (models.refine), side by side.
- Contention (`contention`): one client's predict latency and a training process's seconds per iteration
  (bench/train_load.py, the served backbone and size), each alone and both at once, per thread policy.
Writes bench/results/predict.json.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.analyses import load_catalogue
from models.checkpoint import REFINER_PREFIX, Checkpoint, LandmarkInfo
from models.codec import HeatmapCodec
from models.config import BackboneConfig, CodecConfig, Precision, RefineConfig
from models.datasets import default_data_root
from models.network import LandmarkNet
from models.precision import autocast, cpu_bf16_flags, prepare_input, set_torch_threads
from models.refine import build_crop_network

from .compute import COMPARED, cpu_peak_gflops, cpu_vector_flags, network_flops
from .ikl import RESULTS, machine
from .predict_server import run_clients, served


def model_codes(n: int) -> list[str]:
    """The bench model's landmark codes: the analyses' catalogue codes first (ISBI 2015's 19, then more), so that
    the endpoint answers cephalometric measurements as it does for a real cephalometric model."""
    known = list(load_catalogue().landmarks)
    return known[:n] + [f"L{i}" for i in range(len(known), n)]


def model_times(checkpoint: Checkpoint, image: np.ndarray, precision: Precision, repeats: int) -> dict[str, float]:
    """Median milliseconds, in this process, of the forward pass alone on one image and per image of a batch of
    4 (the inference thread's largest by default), and of the whole Predictor call on one image."""
    from models.predictor import Predictor

    predictor = Predictor(checkpoint, device="cpu", precision=precision)
    x, _ = HeatmapCodec(checkpoint.codec).to_input(image)
    one = prepare_input(x[None], predictor.precision)
    four = prepare_input(x[None].expand(4, -1, -1, -1), predictor.precision)
    cpu = torch.device("cpu")
    times: dict[str, list[float]] = {"forward_ms_p50": [], "forward_ms_per_image_batch4": [], "predictor_ms_p50": []}
    with torch.inference_mode(), autocast(cpu, predictor.precision):
        predictor.model(one), predictor.model(four)
        for _ in range(repeats):
            for key, batch, n in (("forward_ms_p50", one, 1), ("forward_ms_per_image_batch4", four, 4)):
                t0 = time.perf_counter()
                predictor.model(batch)
                times[key].append(1e3 * (time.perf_counter() - t0) / n)
            t0 = time.perf_counter()
            predictor.predict_arrays([image])
            times["predictor_ms_p50"].append(1e3 * (time.perf_counter() - t0))
    return {k: statistics.median(v) for k, v in times.items()}


def inference_rows(
    backbones: list[str], sizes: list[tuple[int, int]], landmarks: int, image: np.ndarray, repeats: int, threads: int
) -> list[dict[str, Any]]:
    """One row per (backbone, input size, precision): in-process times (model_times) with the forward pass's
    achieved GFLOP/s beside the CPU's peak. The precisions alternate twice and each keeps its faster run."""
    rows = []
    for size in sizes:
        for backbone in backbones:
            checkpoint = fresh_checkpoint(backbone, size, landmarks)
            flops = network_flops(checkpoint.build_model(), size, backward=False)
            best: dict[str, dict[str, float]] = {}
            for _ in range(2):
                for precision in COMPARED:
                    t = model_times(checkpoint, image, precision, repeats)
                    if precision not in best or t["forward_ms_p50"] < best[precision]["forward_ms_p50"]:
                        best[precision] = t
            for precision in COMPARED:
                t = best[precision]
                peak = cpu_peak_gflops(precision, threads, cpu_vector_flags())
                achieved = flops / (t["forward_ms_per_image_batch4"] / 1e3) / 1e9
                rows.append(
                    {
                        "backbone": backbone,
                        "input_size": list(size),
                        "precision": precision,
                        "s_per_image": t["predictor_ms_p50"] / 1e3,
                        **t,
                        "forward_gflop_per_image": flops / 1e9,
                        "achieved_gflops_batch4": achieved,
                        "peak_gflops": peak,
                        "peak_fraction": achieved / peak if peak else None,
                    }
                )
                print(
                    f"{backbone:<16} {size[0]}x{size[1]} {precision}: forward {t['forward_ms_p50']:.1f} ms, "
                    f"{t['forward_ms_per_image_batch4']:.1f} ms/image in 4 ({achieved:.0f} GFLOP/s), "
                    f"Predictor {t['predictor_ms_p50']:.1f} ms",
                    flush=True,
                )
    return rows


#: The server's inference modes compared side by side: the setting each needs.
MODES = {
    "one inference thread, batches of up to 4 (default)": {"KAMP_INFERENCE_MAX_BATCH": "4"},
    "one inference thread, one request at a time": {"KAMP_INFERENCE_MAX_BATCH": "1"},
    "web worker threads": {"KAMP_INFERENCE_SINGLE_THREAD": "0"},
}


def fresh_checkpoint(
    backbone: str, size: tuple[int, int], landmarks: int, local: RefineConfig | None = None
) -> Checkpoint:
    """A freshly initialised model of `landmarks` landmarks; two-stage where `local` configures a local stage."""
    torch.manual_seed(0)
    net = LandmarkNet(backbone=BackboneConfig(name=backbone), step_sizes=[landmarks])
    weights = {k: v.contiguous() for k, v in net.state_dict().items()}
    if local is not None:
        crop_net = build_crop_network(local, [landmarks])
        weights |= {REFINER_PREFIX + k: v.contiguous() for k, v in crop_net.state_dict().items()}
    return Checkpoint(
        state_dict=weights,
        landmarks=[LandmarkInfo(code=c, step=0) for c in model_codes(landmarks)],
        backbone=BackboneConfig(name=backbone),
        codec=CodecConfig(input_size=size),
        refine=local,
        step=0,
        strategy="bench",
    )


def stage_rows(args: argparse.Namespace, data: bytes, port: int) -> list[dict[str, Any]]:
    """One client's predict latency for the served model with and without its local stage (the service's default
    settings), `kamp serve` started anew for each; the two alternate twice and each keeps its faster run."""
    w, h = (int(v) for v in args.input_size.split("x"))
    models = {
        "one stage": fresh_checkpoint(args.backbone, (w, h), args.landmarks),
        "two stages": fresh_checkpoint(args.backbone, (w, h), args.landmarks, RefineConfig()),
    }
    best: dict[str, dict[str, Any]] = {}
    for _ in range(2):
        for name, checkpoint in models.items():
            with served(port, checkpoint, {}) as (base, pid, key):
                run_clients(base, pid, key, data, 1, 3)  # warm-up: loads the model into the cache
                row = run_clients(base, pid, key, data, 1, args.requests) | {"model": name}
            if name not in best or row["p50_ms"] < best[name]["p50_ms"]:
                best[name] = row
    for name, row in best.items():
        print(
            f"{name}: one client p50 {row['p50_ms']:.1f} ms, p95 {row['p95_ms']:.1f} ms (server: image "
            f"{row['server_image_ms_p50']:.1f}, forward {row['server_forward_ms_p50']:.1f}, local "
            f"{row.get('server_local_ms_p50', 0.0):.1f} ms)",
            flush=True,
        )
    return list(best.values())


#: How one machine shares its cores between the API's inference thread and a training process: the environment
#: both get (the server's and the training load's), compared side by side.
#: GOMP_SPINCOUNT=300000 is libgomp's own default spin before a thread sleeps, set explicitly so that `kamp serve`
#: keeps it (it chooses passive waiting only where the operator chose neither).
POLICIES: dict[str, dict[str, str]] = {
    "both on every core, OpenMP's default waiting": {"GOMP_SPINCOUNT": "300000"},
    "both on every core, OpenMP threads spin 10,000 rounds, then sleep": {"GOMP_SPINCOUNT": "10000"},
    "both on every core, idle OpenMP threads sleep": {"OMP_WAIT_POLICY": "PASSIVE"},
}
OPENMP_WAITING = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def start_train_load(env: dict[str, str], backbone: str, size: str, seconds: float) -> tuple[subprocess.Popen, list]:
    """bench.train_load in its own process; the returned list fills with its (end time, seconds) per iteration."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.train_load",
            "--backbone",
            backbone,
            "--input-size",
            size,
            "--seconds",
            str(seconds),
        ],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    iterations: list[tuple[float, float]] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            item = json.loads(line)
            iterations.append((item["t"], item["s"]))

    threading.Thread(target=read, daemon=True).start()
    return proc, iterations


def _load_env(policy: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAMP_") and k not in OPENMP_WAITING}
    return env | policy


def contention(
    args: argparse.Namespace, checkpoint: Checkpoint, data: bytes, port: int, policy: dict[str, str]
) -> dict[str, Any]:
    """Predict latency (one client) and training seconds per iteration, each alone and both at once."""
    env = _load_env(policy)
    with served(port, checkpoint, {}, env) as (base, pid, key):
        run_clients(base, pid, key, data, 1, 3)  # warm-up: loads the model into the cache
        alone = run_clients(base, pid, key, data, 1, args.requests)
        proc, its = start_train_load(env, args.backbone, args.input_size, args.train_seconds)
        proc.wait()
        train_alone = statistics.median(s for _, s in its[3:])
        proc, its = start_train_load(env, args.backbone, args.input_size, args.train_seconds + 120)
        while len(its) < 4 and proc.poll() is None:
            time.sleep(0.2)
        t0 = time.time()
        both = run_clients(base, pid, key, data, 1, args.requests)
        t1 = time.time()
        while not any(end - s > t1 for end, s in its) and proc.poll() is None:
            time.sleep(0.2)
        proc.terminate()
        proc.wait()
    during = [s for end, s in its if end > t0 and end - s < t1]  # iterations that overlapped the requests
    return {
        "predict_p50_ms_alone": alone["p50_ms"],
        "predict_p50_ms_beside_training": both["p50_ms"],
        "predict_p95_ms_beside_training": both["p95_ms"],
        "train_s_per_iteration_alone": train_alone,
        "train_s_per_iteration_beside_predictions": statistics.median(during) if during else None,
        "train_iterations_beside_predictions": len(during),
    }


def service_rows(args: argparse.Namespace, checkpoint: Checkpoint, data: bytes, port: int) -> list[dict[str, Any]]:
    """Every inference mode in each precision, `kamp serve` started anew for each, the clients' levels in turn."""
    rows = []
    for precision in COMPARED:
        for mode, settings in MODES.items():
            with served(port, checkpoint, settings | {"KAMP_PRECISION": precision}) as (base, pid, key):
                run_clients(base, pid, key, data, 1, 3)  # warm-up: loads the model into the cache
                print(f"{precision}, {mode}", flush=True)
                for c in (int(v) for v in args.concurrency.split(",")):
                    row = run_clients(base, pid, key, data, c, max(args.requests, c))
                    rows.append(row | {"mode": mode, "precision": precision})
                    print(
                        f"{c:>3} clients: p50 {row['p50_ms']:7.1f}  p95 {row['p95_ms']:7.1f}  "
                        f"p99 {row['p99_ms']:7.1f} ms  {row['throughput_rps']:5.2f} req/s  "
                        f"(server forward p50 {row['server_forward_ms_p50']:.1f} ms)",
                        flush=True,
                    )
    return rows


def overhead(row: dict[str, Any]) -> dict[str, float]:
    """Service overhead of one client's requests: 1 - the server's forward time / request latency (medians of the
    same requests), split into the application's time beside the forward pass and the time outside it."""
    return {
        "overhead_p50": 1 - row["server_forward_ms_p50"] / row["p50_ms"],
        "in_app_ms": row["server_app_ms_p50"] - row["server_forward_ms_p50"],
        "outside_app_ms": row["p50_ms"] - row["server_app_ms_p50"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.predict", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--backbone", default="hrnet_w18_small", help="the served model (and the training load's)")
    p.add_argument("--input-size", default="256x320")
    p.add_argument("--backbones", default="hrnet_w18_small,hrnet_w32", help="in-process table")
    p.add_argument("--sizes", default="160x200,256x320", help="in-process table")
    p.add_argument("--landmarks", type=int, default=19)
    p.add_argument("--requests", type=int, default=48, help="requests per concurrency level")
    p.add_argument("--concurrency", default="1,4,16")
    p.add_argument("--train-seconds", type=float, default=30.0, help="training load alone, per policy")
    p.add_argument("--skip", default="", help="comma-separated parts to leave out: model, service, stages, contention")
    p.add_argument("--out", type=Path, default=RESULTS / "predict.json")
    args = p.parse_args(argv)
    skip = set(args.skip.split(",")) - {""}
    threads = set_torch_threads(None)
    w, h = (int(v) for v in args.input_size.split("x"))
    checkpoint = fresh_checkpoint(args.backbone, (w, h), args.landmarks)
    path = default_data_root() / "isbi2015" / "images" / "151.jpg"
    data = path.read_bytes()
    from server.imaging import decode_image

    pixels = decode_image(data).pixels
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    result: dict[str, Any] = {
        "machine": machine() | {"bf16_flags": sorted(cpu_bf16_flags())},
        "backbone": args.backbone,
        "input_size": [w, h],
        "image": path.name,
    }
    if "model" not in skip:
        backbones = args.backbones.split(",")
        result["inference"] = inference_rows(backbones, sizes, args.landmarks, pixels, 20, threads)  # type: ignore[arg-type]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    if "service" not in skip:
        rows = service_rows(args, checkpoint, data, port)
        result["rows"] = rows
        default = next(iter(MODES))
        singles = {r["precision"]: r for r in rows if r["mode"] == default and r["concurrency"] == 1}
        result["overhead_single_client"] = {k: overhead(r) for k, r in singles.items()}
        for precision, o in result["overhead_single_client"].items():
            r = singles[precision]
            print(
                f"{precision}: one client p50 {r['p50_ms']:.1f} ms, service overhead {100 * o['overhead_p50']:.1f}% "
                f"({o['in_app_ms']:.1f} ms in the application beside the forward pass, {o['outside_app_ms']:.1f} "
                f"ms outside it; image {r['server_image_ms_p50']:.1f}, preprocess {r['server_preprocess_ms_p50']:.1f}, "
                f"forward {r['server_forward_ms_p50']:.1f}, decode {r['server_decode_ms_p50']:.1f} ms)",
                flush=True,
            )
    if "stages" not in skip:
        result["stages"] = stage_rows(args, data, port)
    if "contention" not in skip:
        result["contention"] = {}
        for name, policy in POLICIES.items():
            c = result["contention"][name] = contention(args, checkpoint, data, port, policy)
            print(
                f"{name}: predict p50 {c['predict_p50_ms_alone']:.1f} ms alone, "
                f"{c['predict_p50_ms_beside_training']:.1f} beside training; training "
                f"{c['train_s_per_iteration_alone']:.2f} s/it alone, "
                f"{c['train_s_per_iteration_beside_predictions'] or float('nan'):.2f} beside predictions "
                f"({c['train_iterations_beside_predictions']} iterations)",
                flush=True,
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
