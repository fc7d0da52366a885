"""How fast the web console answers its users, in Debian's chromium against a real `kamp serve`:

    python -m bench.console --studies 5

- `signin_ms`: from navigating to `/` until the sign-in form is shown (the page and its modules loaded).
- `editor_ms`: from navigating to a study's editor until it is ready to annotate (the 16-bit image fetched and
  decoded at full resolution, window/level applied, the annotation history read), on real 968x1200
  cephalograms: `unassisted` while the project has no model, `assisted` once a version is active (the editor
  then also predicts every landmark on the study before it shows).
The model is the page tests' tiny one (its speed, not its accuracy, is what the assisted figure adds; the
service's default model predicts in ~80 ms, docs/benchmarks.md). Time to annotate a study is a human's and is
not measured here: the console records each annotation's `seconds` for that.
Writes bench/results/console.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from models.datasets import default_data_root, load_protocol

TINY = {
    "name": "bench",
    "modality": "cephalometric",
    "backbone": "hrnet_w18_tiny",
    "input_width": 64,
    "input_height": 80,
    "local_stage": {"crop_size": 32},
    "training": {"iterations": 12, "batch_size": 4, "warmup": 2, "refine": {"iterations": 4, "crops": 8}},
    "gate": {"max_new_mre": 1e6},
}
CODES = ["S", "N", "Or", "Po"]


def _serve(root: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = root / "serve.log"
    env = {**os.environ, "KAMP_DATA_DIR": str(root / "var"), "OMP_NUM_THREADS": "1", "KAMP_TORCH_THREADS": "1"}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "server.cli", "serve", "--port", str(port)], cwd=root, env=env, stdout=out
        )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        match = re.search(r"store it now\): (\S+)", log.read_text())
        try:
            if match and httpx.get(f"{url}/healthz").status_code == 200:
                return process, url, match.group(1)
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"kamp serve did not start: {log.read_text()[-1000:]}")


def _project(url: str, system_key: str, n: int) -> tuple[str, str, list[str], httpx.Client]:
    """A clinic's admin key, a tiny project whose step 0 has six annotated real studies, n more studies for the
    editor to open, and an API client with the admin key."""
    root = default_data_root()
    protocol = load_protocol(root, "cld38-5step")
    ds = protocol.load_dataset(root)
    admin = httpx.post(f"{url}/v1/clinics", json={"name": "bench"}, headers={"Authorization": f"Bearer {system_key}"})
    key = admin.json()["admin_key"]["key"]
    api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60)
    pid = api.post("/v1/projects", json=TINY).json()["id"]
    api.post(f"/v1/projects/{pid}/landmark-sets", json={"landmarks": [{"code": c} for c in CODES]})
    ids = protocol.steps[0].images[: 6 + n]
    studies = []
    for image_id in ids:
        r = api.post(
            "/v1/studies",
            files={"file": (f"{image_id}.jpg", ds.image_path(image_id).read_bytes())},
            data={"spacing_x_mm": "0.1", "spacing_y_mm": "0.1"},
        )
        studies.append(r.json()["id"])
    for image_id, sid in list(zip(ids, studies, strict=True))[:6]:
        kp = ds.keypoints([image_id], CODES, protocol.annotator)[0]
        points = [{"code": c, "x": float(x), "y": float(y)} for c, (x, y) in zip(CODES, kp, strict=True)]
        api.post(f"/v1/projects/{pid}/landmark-sets/0/annotations", json={"study_id": sid, "points": points})
    return key, pid, studies[6:], api


def _train(api: httpx.Client, pid: str) -> None:
    job = api.post(f"/v1/projects/{pid}/landmark-sets/0/submit", json={}).json()
    for _ in range(600):
        status = api.get(f"/v1/jobs/{job['id']}").json()["status"]
        if status in ("succeeded", "failed", "cancelled"):
            if status != "succeeded":
                raise SystemExit(f"training {status}")
            return
        time.sleep(1)


def open_editor(page: Any, url: str, pid: str, study: str, step: int = 0) -> float:
    """Open a study's editor from the project list, anew (no editor state kept); ms until it is ready to
    annotate (image shown, history read)."""
    page.goto(f"{url}/#/projects")
    page.wait_for_selector("#projects")
    t0 = time.perf_counter()
    page.goto(f"{url}/#/projects/{pid}/steps/{step}/studies/{study}")
    page.wait_for_selector("#image[data-transform]")
    page.wait_for_selector("#annotation-history >> text=/./")
    return 1000 * (time.perf_counter() - t0)


def _editor_ms(page: Any, url: str, pid: str, studies: list[str]) -> list[float]:
    return [open_editor(page, url, pid, sid) for sid in studies]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=5)
    parser.add_argument("--out", default="bench/results/console.json")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        process, url, system_key = _serve(Path(tmp))
        try:
            admin, pid, studies, api = _project(url, system_key, args.studies)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 1280, "height": 860})
                signin: list[float] = []
                for _ in range(5):
                    t0 = time.perf_counter()
                    page.goto(f"{url}/?{len(signin)}")
                    page.wait_for_selector("#api-key")
                    signin.append(1000 * (time.perf_counter() - t0))
                page.fill("#api-key", admin)
                page.click("#sign-in")
                page.wait_for_selector("#projects")
                unassisted = _editor_ms(page, url, pid, studies)
                _train(api, pid)
                assisted = _editor_ms(page, url, pid, studies)
                browser.close()
        finally:
            process.terminate()
            process.wait(timeout=60)
    result = {
        "signin_ms": [round(v, 1) for v in signin],
        "editor_ms": {"unassisted": [round(v, 1) for v in unassisted], "assisted": [round(v, 1) for v in assisted]},
        "median": {
            "signin_ms": round(statistics.median(signin), 1),
            "editor_unassisted_ms": round(statistics.median(unassisted), 1),
            "editor_assisted_ms": round(statistics.median(assisted), 1),
        },
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["median"]))


if __name__ == "__main__":
    main()
