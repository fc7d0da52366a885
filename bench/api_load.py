"""The service under many concurrent clients, as the outside attack of issue 17 loaded it: a real `kamp serve`
(API, training worker and prediction worker), two clinics, N client threads for a fixed time, and a probe of
/healthz every 100 ms throughout.

    python -m bench.api_load --clients 32 --seconds 60
    python -m bench.api_load --clients 32 --seconds 60 --postgres --redis   # PostgreSQL + Redis, as in production

Each client loops over one mix, by its number: upload a new image (annotator), list studies and projects, write
the annotation of one shared study (concurrent writes of one annotation: 201 or 409, never 500), submit a
prediction job of 4 images to the active version, predict one image, and send a bad request (a wrong key, an
unknown field, a damaged image). Every answer's status is counted; any 5xx and any /healthz slower than 1 s is a
failure. The active version is a tiny HRNet trained for 2 iterations here (only the load matters, not its
answers), registered as the project's active version. Writes bench/results/api_load[-postgres].json.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from .ikl import RESULTS, machine
from .service_models import activate_checkpoint

PROJECT = {"name": "Lateral ceph", "modality": "cephalometric", "backbone": "hrnet_w18_tiny", "local_stage": None}
STEP0 = {"name": "skeletal", "landmarks": [{"code": c} for c in ("S", "N", "Me", "Go")]}


def _png(seed: int, size: int = 256) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def _fresh_postgres(name: str) -> str:
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


def _environment(folder: Path, postgres: bool, redis: bool) -> dict[str, str]:
    env = {"KAMP_DATA_DIR": str(folder / "var"), "KAMP_RATE_LIMIT_PER_MINUTE": "0", "OMP_NUM_THREADS": "1"}
    if postgres:
        env["KAMP_DATABASE_URL"] = _fresh_postgres("kamp_load")
    if redis:
        env["KAMP_BROKER_URL"] = env["KAMP_RESULT_BACKEND"] = "redis://127.0.0.1:6379/14"
    return env


def _install(env: dict[str, str]) -> str:
    run = subprocess.run(
        [sys.executable, "-m", "server.cli", "install"], env={**os.environ, **env}, capture_output=True, text=True
    )
    line = next((line for line in run.stdout.splitlines() if line.startswith("system-admin key")), "")
    key = line.rsplit(" ", 1)[-1] if line else None
    if run.returncode != 0 or key is None:
        raise SystemExit(f"kamp install failed: {run.stdout} {run.stderr}")
    return key


@contextlib.contextmanager
def _served(env: dict[str, str], port: int) -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "serve", "--port", str(port)],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            time.sleep(0.5)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=60)


class Clinic:
    """One clinic's keys, project and shared study, made through the API."""

    def __init__(self, http: httpx.Client, system_key: str, name: str) -> None:
        made = _ok(http.post("/v1/clinics", json={"name": name}, headers=_auth(system_key)))
        self.id, self.admin = made["clinic"]["id"], made["admin_key"]["key"]
        self.annotator, self.predict = self._key(http, "annotator"), self._key(http, "predict")
        self.project = _ok(http.post("/v1/projects", json=PROJECT, headers=_auth(self.admin)))["id"]
        _ok(http.post(f"/v1/projects/{self.project}/landmark-sets", json=STEP0, headers=_auth(self.admin)))
        upload = http.post("/v1/studies", files={"file": ("a.png", _png(hash(name) % 1000))}, headers=_auth(self.admin))
        self.study = _ok(upload)["id"]

    def _key(self, http: httpx.Client, role: str) -> str:
        return str(
            _ok(http.post(f"/v1/clinics/{self.id}/api-keys", json={"role": role}, headers=_auth(self.admin)))["key"]
        )


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _ok(response: httpx.Response) -> dict:  # type: ignore[type-arg]
    if response.status_code >= 300:
        raise SystemExit(f"{response.request.method} {response.request.url}: {response.status_code} {response.text}")
    return response.json()  # type: ignore[no-any-return]


def _activate_tiny_model(env: dict[str, str], clinic: Clinic) -> None:
    """Train a tiny model for 2 iterations on random images and make it the project's active version, straight
    through the service's storage and database (the load, not the model, is measured)."""
    from models.config import BackboneConfig, CodecConfig, TrainConfig
    from models.step_data import StepData
    from models.trainer import train_step
    from server.settings import Settings

    images = [np.random.default_rng(i).integers(0, 65535, (120, 96), dtype=np.uint16) for i in range(4)]
    points = np.random.default_rng(0).uniform(10, 90, (4, 4, 2)).astype(np.float32)
    data = StepData(images=images, keypoints=points, codes=["S", "N", "Me", "Go"])
    ckpt, _ = train_step(
        None,
        data,
        "finetune",
        TrainConfig(iterations=2, batch_size=2, warmup=1),
        backbone=BackboneConfig(name="hrnet_w18_tiny"),
        codec=CodecConfig(input_size=(64, 80)),
    )
    settings = Settings.model_validate(
        {k.removeprefix("KAMP_").lower(): v for k, v in env.items() if k.startswith("KAMP_")}
    )
    activate_checkpoint(settings, uuid.UUID(clinic.project), ckpt, "finetune")


class Mix:
    """One client's requests, as (name, call) pairs taken in turn: its own clinic's work and a bad request or
    two. Each call takes the client's HTTP session and returns the answer."""

    def __init__(self, clinic: Clinic, other: Clinic, seed: int) -> None:
        self.clinic, self.other, self.rng, self.image = clinic, other, random.Random(seed), _png(seed)
        self.actions: list[tuple[str, Callable[[httpx.Client], httpx.Response]]] = [
            ("upload", self.upload),
            ("list", lambda h: h.get("/v1/studies?limit=50", headers=_auth(clinic.annotator))),
            ("projects", lambda h: h.get("/v1/projects", headers=_auth(clinic.admin))),
            ("annotate", self.annotate),
            ("job", self.job),
            ("predict", self.predict),
            ("foreign", lambda h: h.get(f"/v1/projects/{other.project}", headers=_auth(clinic.admin))),
            ("unknown-field", self.unknown_field),
            ("damaged", self.damaged),
        ]

    def upload(self, http: httpx.Client) -> httpx.Response:
        files = {"file": ("x.png", _png(self.rng.randrange(10**9)))}
        return http.post("/v1/studies", files=files, headers=_auth(self.clinic.annotator))

    def annotate(self, http: httpx.Client) -> httpx.Response:
        """The shared study's annotation, written by every client of the clinic at once."""
        point = {"code": "S", "x": self.rng.uniform(10, 200), "y": self.rng.uniform(10, 200)}
        url = f"/v1/projects/{self.clinic.project}/landmark-sets/0/annotations"
        return http.post(
            url, json={"study_id": self.clinic.study, "points": [point]}, headers=_auth(self.clinic.annotator)
        )

    def job(self, http: httpx.Client) -> httpx.Response:
        files = [("files", (f"{i}.png", self.image)) for i in range(4)]
        url = f"/v1/projects/{self.clinic.project}/predict/jobs"
        return http.post(url, files=files, headers=_auth(self.clinic.predict))

    def predict(self, http: httpx.Client) -> httpx.Response:
        url = f"/v1/projects/{self.clinic.project}/predict"
        return http.post(url, files={"file": ("p.png", self.image)}, headers=_auth(self.clinic.predict))

    def unknown_field(self, http: httpx.Client) -> httpx.Response:
        return http.post("/v1/projects", json={**PROJECT, "traning": {}}, headers=_auth(self.clinic.admin))

    def damaged(self, http: httpx.Client) -> httpx.Response:
        files = {"file": ("d.png", self.image[: len(self.image) // 2])}
        return http.post("/v1/studies", files=files, headers=_auth(self.clinic.annotator))


class Tally:
    """Answers counted by (action, status) from many threads, with the first answer of each kind of failure (a
    5xx or no answer at all)."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()
        self.failures: dict[str, str] = {}
        self._lock = threading.Lock()

    def record(self, name: str, status: str, detail: str) -> None:
        with self._lock:
            self.counts[(name, status)] += 1
            if not status.isdigit() or int(status) >= 500:
                self.failures.setdefault(f"{name} {status}", detail[:300])


def _client(base: str, mix: Mix, deadline: float, tally: Tally) -> None:
    """Send `mix`'s requests in turn until `deadline`."""
    with httpx.Client(base_url=base, timeout=120) as http:
        turn = 0
        while time.monotonic() < deadline:
            name, act = mix.actions[turn % len(mix.actions)]
            turn += 1
            try:
                response = act(http)
                tally.record(name, str(response.status_code), response.text)
            except httpx.HTTPError as exc:
                tally.record(name, type(exc).__name__, str(exc))


def _probe(base: str, stop: threading.Event, latencies: list[float]) -> None:
    with httpx.Client(base_url=base, timeout=30) as http:
        while not stop.is_set():
            start = time.perf_counter()
            with contextlib.suppress(httpx.HTTPError):
                http.get("/healthz")
            latencies.append(time.perf_counter() - start)
            time.sleep(0.1)


def run(clients: int, seconds: float, postgres: bool, redis: bool, port: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="kamp-load-") as folder:
        env = _environment(Path(folder), postgres, redis)
        system_key = _install(env)
        with _served(env, port) as base, httpx.Client(base_url=base, timeout=60) as http:
            a, b = Clinic(http, system_key, "Riverside"), Clinic(http, system_key, "Hillcrest")
            for clinic in (a, b):
                _activate_tiny_model(env, clinic)
            tally, latencies = _load(base, a, b, clients, seconds)
    return _summary(tally.counts, latencies, clients, seconds, postgres, redis) | {"failures": tally.failures}


def _load(base: str, a: Clinic, b: Clinic, clients: int, seconds: float) -> tuple[Tally, list[float]]:
    """`clients` threads, alternately of clinic a and b, for `seconds`, with /healthz probed throughout: the
    tally and the probe's latencies (s)."""
    tally, stop, latencies = Tally(), threading.Event(), list[float]()
    deadline = time.monotonic() + seconds
    probe = threading.Thread(target=_probe, args=(base, stop, latencies))
    probe.start()
    mixes = [Mix(a, b, i) if i % 2 else Mix(b, a, i) for i in range(clients)]
    threads = [threading.Thread(target=_client, args=(base, mix, deadline, tally)) for mix in mixes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stop.set()
    probe.join()
    return tally, latencies


def _summary(
    counts: Counter[tuple[str, str]], latencies: list[float], clients: int, seconds: float, postgres: bool, redis: bool
) -> dict[str, object]:
    by_action: dict[str, dict[str, int]] = {}
    for (name, status), n in sorted(counts.items()):
        by_action.setdefault(name, {})[status] = n
    errors = sum(n for (_, status), n in counts.items() if not status.isdigit() or int(status) >= 500)
    ordered = sorted(latencies)
    return {
        "clients": clients,
        "seconds": seconds,
        "database": "postgresql" if postgres else "sqlite",
        "broker": "redis" if redis else "sqlite",
        "requests": sum(counts.values()),
        "server_errors_or_failures": errors,
        "by_action": by_action,
        "healthz": {
            "probes": len(ordered),
            "p50_s": ordered[len(ordered) // 2],
            "p99_s": ordered[int(len(ordered) * 0.99)],
            "max_s": ordered[-1],
            "over_1s": sum(1 for x in ordered if x > 1.0),
        },
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--postgres", action="store_true", help="a fresh PostgreSQL database at 127.0.0.1:5432")
    p.add_argument("--redis", action="store_true", help="Redis at 127.0.0.1:6379 (database 14) as the broker")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    summary = run(args.clients, args.seconds, args.postgres, args.redis, args.port) | {"machine": machine()}
    out = args.out or RESULTS / f"api_load{'-postgres' if args.postgres else ''}.json"
    out.write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k != "machine"}, indent=1))


if __name__ == "__main__":
    main()
