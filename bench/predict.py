"""Predict endpoint speed: latency p50/p95/p99 and throughput under 1, 4 and 16 concurrent clients, on a real
cephalogram (968x1200 JPEG), against a real `kamp serve` process, with the model's own time beside it.

    python -m bench.predict --backbone hrnet_w18_small --input-size 256x320 --requests 40

The model is a freshly initialised network of the given size (its speed does not depend on its training).
"Forward" is the network alone on one preprocessed input, measured in this process before the server starts;
the server reports its decode and model (preprocess + forward + heatmap decoding) times in Server-Timing, and
"app", the application's whole time (request handed over -> response headers sent).
Service overhead = 1 - the server's forward time / request latency, both the medians of the same single-client
requests; it splits into the time in the application beside the forward pass (app - forward) and the time
outside it (latency - app: the client library, the loopback connection and the HTTP server's parsing).
Writes bench/results/predict.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import torch

from models.checkpoint import Checkpoint, LandmarkInfo
from models.codec import HeatmapCodec
from models.config import BackboneConfig, CodecConfig
from models.datasets import default_data_root
from models.network import LandmarkNet

from .ikl import RESULTS, machine


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def model_times(checkpoint: Checkpoint, image: np.ndarray, repeats: int) -> dict[str, float]:
    """Median milliseconds of the forward pass alone and of the whole Predictor call, in this process."""
    from models.predictor import Predictor

    predictor = Predictor(checkpoint, device="cpu")
    x, _ = HeatmapCodec(checkpoint.codec).to_input(image)
    forward, full = [], []
    with torch.inference_mode():
        predictor.model(x[None])
        for _ in range(repeats):
            t0 = time.perf_counter()
            predictor.model(x[None])
            forward.append(1e3 * (time.perf_counter() - t0))
            t0 = time.perf_counter()
            predictor.predict_arrays([image])
            full.append(1e3 * (time.perf_counter() - t0))
    return {"forward_ms_p50": statistics.median(forward), "predictor_ms_p50": statistics.median(full)}


#: The server's inference modes compared side by side: the setting each needs.
MODES = {
    "one inference thread, batches of up to 4 (default)": {"KAMP_INFERENCE_MAX_BATCH": "4"},
    "one inference thread, one request at a time": {"KAMP_INFERENCE_MAX_BATCH": "1"},
    "web worker threads": {"KAMP_INFERENCE_SINGLE_THREAD": "0"},
}


def start_server(data_dir: Path, port: int, settings: dict[str, str]) -> tuple[subprocess.Popen, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAMP_")}  # the embedded defaults, then:
    env |= {"KAMP_DATA_DIR": str(data_dir), "KAMP_RATE_LIMIT_PER_MINUTE": "0", **settings}
    log = data_dir / "serve.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "serve", "--no-worker", "--port", str(port)],
        env=env,
        cwd=data_dir,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    end = time.monotonic() + 90
    while time.monotonic() < end:
        m = re.search(r"system-admin key.*: (kamp_\S+)", log.read_text())
        if m:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    return proc, m.group(1)
            except httpx.HTTPError:
                pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"the server did not start:\n{log.read_text()[-2000:]}")


def setup_project(base: str, system_key: str, checkpoint: Checkpoint, data_dir: Path) -> tuple[str, str]:
    from server.db.entities import ModelVersion, VersionStatus
    from server.db.session import session_factory
    from server.settings import Settings
    from server.storage import LocalBlobStore

    with httpx.Client(base_url=base, timeout=60) as http:
        created = http.post("/v1/clinics", json={"name": "bench"}, headers={"Authorization": f"Bearer {system_key}"})
        clinic, admin = created.json()["clinic"]["id"], created.json()["admin_key"]["key"]
        h = {"Authorization": f"Bearer {admin}"}
        pid = http.post(
            "/v1/projects",
            json={"name": "ceph", "modality": "cephalometric", "backbone": checkpoint.backbone.name},
            headers=h,
        ).json()["id"]
        predict = http.post(f"/v1/clinics/{clinic}/api-keys", json={"role": "predict"}, headers=h).json()["key"]
    settings = Settings(data_dir=data_dir)
    key = LocalBlobStore(settings.resolved_blob_dir).put(checkpoint.to_bytes())
    with session_factory(settings.resolved_database_url)() as session:
        session.add(
            ModelVersion(
                project_id=uuid.UUID(pid),
                number=1,
                step=0,
                checkpoint_blob=key,
                checkpoint_sha256=key,
                strategy="bench",
                status=VersionStatus.active,
            )
        )
        session.commit()
    return pid, predict


def run_clients(base: str, pid: str, key: str, data: bytes, concurrency: int, requests: int) -> dict[str, float]:
    """Latency percentiles and throughput of `concurrency` clients, with the medians of the server's own timings
    (Server-Timing: image decoding, preprocess, forward, heatmap decoding, model) of the same requests."""
    latencies: list[float] = []
    parts: dict[str, list[float]] = {}
    lock = threading.Lock()
    per_client = max(1, requests // concurrency)

    def client() -> None:
        with httpx.Client(base_url=base, timeout=300) as http:
            for _ in range(per_client):
                t0 = time.perf_counter()
                r = http.post(
                    f"/v1/projects/{pid}/predict",
                    files={"file": ("ceph.jpg", data)},
                    headers={"Authorization": f"Bearer {key}"},
                )
                dt = 1e3 * (time.perf_counter() - t0)
                r.raise_for_status()
                timing = re.findall(r"(\w+);dur=([\d.]+)", r.headers.get("server-timing", ""))
                with lock:
                    latencies.append(dt)
                    for name, value in timing:
                        parts.setdefault(name, []).append(float(value))

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        "p99_ms": percentile(latencies, 99),
        "throughput_rps": len(latencies) / wall,
        **{f"server_{k}_ms_p50": statistics.median(v) for k, v in parts.items()},
    }


def fresh_checkpoint(backbone: str, size: tuple[int, int], landmarks: int) -> Checkpoint:
    torch.manual_seed(0)
    net = LandmarkNet(backbone=BackboneConfig(name=backbone), step_sizes=[landmarks])
    return Checkpoint(
        state_dict={k: v.contiguous() for k, v in net.state_dict().items()},
        landmarks=[LandmarkInfo(code=f"L{i}", step=0) for i in range(landmarks)],
        backbone=BackboneConfig(name=backbone),
        codec=CodecConfig(input_size=size),
        step=0,
        strategy="bench",
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.predict", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--backbone", default="hrnet_w18_small")
    p.add_argument("--input-size", default="256x320")
    p.add_argument("--landmarks", type=int, default=19)
    p.add_argument("--requests", type=int, default=48, help="requests per concurrency level")
    p.add_argument("--concurrency", default="1,4,16")
    p.add_argument("--out", type=Path, default=RESULTS / "predict.json")
    args = p.parse_args(argv)
    w, h = (int(v) for v in args.input_size.split("x"))
    checkpoint = fresh_checkpoint(args.backbone, (w, h), args.landmarks)
    path = default_data_root() / "isbi2015" / "images" / "151.jpg"
    data = path.read_bytes()
    from server.imaging import decode_image

    pixels = decode_image(data).pixels
    model = model_times(checkpoint, pixels, repeats=20)
    print(
        f"in process: forward {model['forward_ms_p50']:.1f} ms, Predictor (preprocess + forward + decode) "
        f"{model['predictor_ms_p50']:.1f} ms (p50)",
        flush=True,
    )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    rows = []
    for mode, settings in MODES.items():
        with tempfile.TemporaryDirectory(prefix="kamp-bench-") as tmp:
            server, system_key = start_server(Path(tmp), port, settings)
            try:
                base = f"http://127.0.0.1:{port}"
                pid, key = setup_project(base, system_key, checkpoint, Path(tmp))
                run_clients(base, pid, key, data, 1, 3)  # warm-up: loads the model into the cache
                print(mode, flush=True)
                for c in (int(v) for v in args.concurrency.split(",")):
                    row = run_clients(base, pid, key, data, c, max(args.requests, c)) | {"mode": mode}
                    rows.append(row)
                    print(
                        f"{c:>3} clients: p50 {row['p50_ms']:7.1f}  p95 {row['p95_ms']:7.1f}  "
                        f"p99 {row['p99_ms']:7.1f} ms  {row['throughput_rps']:5.2f} req/s  "
                        f"(server forward p50 {row['server_forward_ms_p50']:.1f} ms)",
                        flush=True,
                    )
            finally:
                server.terminate()
                server.wait(timeout=30)
    single = rows[0]
    # Side by side in the same requests: the server's forward pass against the whole request.
    overhead = 1 - single["server_forward_ms_p50"] / single["p50_ms"]
    in_app = single["server_app_ms_p50"] - single["server_forward_ms_p50"]
    print(
        f"service overhead at p50, one client: {100 * overhead:.1f}% of the request "
        f"({single['p50_ms'] - single['server_forward_ms_p50']:.1f} ms of {single['p50_ms']:.1f} ms: "
        f"{in_app:.1f} ms in the application beside the forward pass, "
        f"{single['p50_ms'] - single['server_app_ms_p50']:.1f} ms outside it; in the server: "
        f"image {single['server_image_ms_p50']:.1f}, preprocess {single['server_preprocess_ms_p50']:.1f}, "
        f"forward {single['server_forward_ms_p50']:.1f}, decode {single['server_decode_ms_p50']:.1f} ms)"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "machine": machine(),
                "backbone": args.backbone,
                "input_size": [w, h],
                "image": path.name,
                "model": model,
                "rows": rows,
                "overhead_p50_single_client": overhead,
                "overhead_in_app_ms_p50_single_client": in_app,
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
