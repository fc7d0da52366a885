"""The predict endpoint of a real `kamp serve` process, driven by concurrent clients (bench/predict.py's harness).

`served` starts the server on a fresh data folder with a checkpoint as a project's active version; `run_clients`
measures latency percentiles, throughput and the server's own timings (Server-Timing) of its requests.
"""

from __future__ import annotations

import contextlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np

from models.checkpoint import Checkpoint

from .service_models import activate_checkpoint


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def start_server(
    data_dir: Path, port: int, settings: dict[str, str], base_env: dict[str, str] | None = None
) -> tuple[subprocess.Popen, str]:
    env = base_env or {k: v for k, v in os.environ.items() if not k.startswith("KAMP_")}  # the embedded defaults
    env = env | {"KAMP_DATA_DIR": str(data_dir), "KAMP_RATE_LIMIT_PER_MINUTE": "0", **settings}
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
    from server.settings import Settings

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
    activate_checkpoint(settings, uuid.UUID(pid), checkpoint, "bench")
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


@contextlib.contextmanager
def served(
    port: int, checkpoint: Checkpoint, settings: dict[str, str], base_env: dict[str, str] | None = None
) -> Iterator[tuple[str, str, str]]:
    """A `kamp serve` process on a fresh data folder with `checkpoint` as a project's active version: yields
    (base URL, project id, predict key); stops the server after."""
    with tempfile.TemporaryDirectory(prefix="kamp-bench-") as tmp:
        server, system_key = start_server(Path(tmp), port, settings, base_env)
        try:
            base = f"http://127.0.0.1:{port}"
            pid, key = setup_project(base, system_key, checkpoint, Path(tmp))
            yield base, pid, key
        finally:
            server.terminate()
            server.wait(timeout=30)
