"""What the console's assisted mode saves an annotator, on real cephalograms, in Debian's chromium:

    python -m bench.assist --studies 5 --tolerance-mm 1.0

A `kamp serve` process with two projects of one clinic over the same real studies (cld38-5step test images,
0.2 mm/px, never trained on): one without a model (every landmark placed by hand), one whose active version is
the committed step-0 model of the benchmark (`--checkpoint`, cld38-5step's 19 landmarks, both stages). A
scripted annotator, working as a careful person would (zoom in on the landmark, act, zoom back to fit), places
each landmark at its label (CL-Detection 2023) without assistance, and with assistance moves only the
pre-placed landmarks farther than `--tolerance-mm` from their label, accepting the others. Both saves are
checked against what was meant (1 px).

Measured: the actions each study needs (placements, corrections), the pre-placed landmarks within 1, 1.5, 2 and
3 mm of their label, the MRE of what is saved, and the scripted annotator's wall time per study: a floor set
by the page and this machine, not a person's time (a person's is the console's recorded `seconds`).
Writes bench/results/assist.json.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from models.checkpoint import Checkpoint
from models.config import to_dict
from models.datasets import default_data_root, load_protocol
from server.settings import Settings

from .console import _serve, open_editor
from .ikl import machine
from .service_models import activate_checkpoint

CHECKPOINT = Path("bench/results/cld38-5step-cpu-local/checkpoints/seed0/shared/step0.safetensors")
TOLERANCES_MM = (1.0, 1.5, 2.0, 3.0)
Point = tuple[float, float]


class Study:
    """One real image: its study id in the service and its labels (image pixels)."""

    def __init__(self, image_id: str, study_id: str, truth: dict[str, Point]) -> None:
        self.image_id, self.study_id, self.truth = image_id, study_id, truth


def setup(url: str, system_key: str, checkpoint: Checkpoint, n: int) -> tuple[str, str, str, list, float]:
    """(admin key, assisted project, unassisted project, studies, mm per pixel): both projects are the
    checkpoint's model line and ask for its landmarks in one step; only the first has a version."""
    root = default_data_root()
    protocol = load_protocol(root, "cld38-5step")
    ds = protocol.load_dataset(root)
    if ds.pixel_spacing_mm is None:
        raise SystemExit(f"{protocol.name}'s images have no pixel spacing: errors in mm need one")
    spacing = ds.pixel_spacing_mm
    system = {"Authorization": f"Bearer {system_key}"}
    created = httpx.post(f"{url}/v1/clinics", json={"name": "assist"}, headers=system)
    created.raise_for_status()
    key = created.json()["admin_key"]["key"]
    api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60)
    codes = checkpoint.codes
    projects = []
    for name in ("assisted", "by hand"):
        body = {
            "name": name,
            "modality": "cephalometric",
            "backbone": checkpoint.backbone.name,
            "backbone_last_relu": checkpoint.backbone.last_relu,
            "input_width": checkpoint.codec.input_size[0],
            "input_height": checkpoint.codec.input_size[1],
            "local_stage": None if checkpoint.refine is None else to_dict(checkpoint.refine),
        }
        r = api.post("/v1/projects", json=body)
        r.raise_for_status()
        pid = r.json()["id"]
        r = api.post(f"/v1/projects/{pid}/landmark-sets", json={"landmarks": [{"code": c} for c in codes]})
        r.raise_for_status()
        projects.append(pid)
    studies = []
    for image_id in protocol.test_images[:n]:
        r = api.post(
            "/v1/studies",
            files={"file": (f"{image_id}.jpg", ds.image_path(image_id).read_bytes())},
            data={"spacing_x_mm": str(spacing), "spacing_y_mm": str(spacing)},
        )
        r.raise_for_status()
        kp = ds.keypoints([image_id], codes, protocol.annotator)[0]
        truth = {c: (float(x), float(y)) for c, (x, y) in zip(codes, kp, strict=True)}
        studies.append(Study(image_id, r.json()["id"], truth))
    return key, projects[0], projects[1], studies, spacing


def _transform(page: Any) -> tuple[float, float, float]:
    scale, tx, ty = (float(v) for v in page.get_attribute("#image", "data-transform").split())
    return scale, tx, ty


def _screen(page: Any, p: Point) -> Point:
    scale, tx, ty = _transform(page)
    box = page.locator("#image").bounding_box()
    return box["x"] + p[0] * scale + tx, box["y"] + p[1] * scale + ty


def _zoom_on(page: Any, p: Point, notches: int) -> None:
    """Zoom in on image point p with the wheel, as a person does before placing with care."""
    page.mouse.move(*_screen(page, p))
    for _ in range(notches):
        page.mouse.wheel(0, -100)


def _save(page: Any) -> None:
    page.click("#save")
    page.wait_for_selector("#editor-status >> text=saved as version 1")


def by_hand(page: Any, url: str, pid: str, study: Study, notches: int) -> float:
    """Every landmark placed at its label, in the list's order (each placement selects the next); seconds."""
    open_editor(page, url, pid, study.study_id)
    t0 = time.perf_counter()
    for p in study.truth.values():
        _zoom_on(page, p, notches)
        page.mouse.click(*_screen(page, p))
        page.click("#zoom-fit")
    _save(page)
    return time.perf_counter() - t0


def pre_placed(page: Any) -> dict[str, Point]:
    """The landmarks the editor pre-placed from the model's prediction, read from its landmark list."""
    out = {}
    for item in page.locator("#editor li[data-code]").all():
        text = item.locator(".src").inner_text()
        if text.startswith("predicted "):
            x, y = (float(v) for v in text.removeprefix("predicted ").split(","))
            out[str(item.get_attribute("data-code"))] = (x, y)
    return out


def assisted(page: Any, study: Study, notches: int, off: list[str], missing: list[str]) -> float:
    """Places the landmarks in `missing` (not pre-placed) at their label, then moves those in `off` from their
    pre-placed position to it; seconds."""
    t0 = time.perf_counter()
    for code in missing:
        page.click(f"#editor li[data-code='{code}']")  # make it the current landmark, then place it
        _zoom_on(page, study.truth[code], notches)
        page.mouse.click(*_screen(page, study.truth[code]))
        page.click("#zoom-fit")
    for code in off:
        pre = pre_placed(page)[code]
        _zoom_on(page, pre, notches)
        page.mouse.move(*_screen(page, pre))
        page.mouse.down()
        target = _screen(page, study.truth[code])
        page.mouse.move(*target, steps=5)
        page.mouse.up()
        page.click("#zoom-fit")
    _save(page)
    return time.perf_counter() - t0


def saved(api: httpx.Client, pid: str, study: Study) -> dict[str, Point]:
    r = api.get(f"/v1/projects/{pid}/landmark-sets/0/annotations/{study.study_id}")
    r.raise_for_status()
    return {p["code"]: (p["x"], p["y"]) for p in r.json()[-1]["points"]}


def _dist(a: Point, b: Point) -> float:
    return math.hypot(a[0] - b[0], a[1] - b[1])


def _check(got: dict[str, Point], meant: dict[str, Point], what: str) -> None:
    wrong = {c: (got.get(c), p) for c, p in meant.items() if c not in got or _dist(got[c], p) > 1.0}
    if wrong:
        raise SystemExit(f"{what}: saved points differ from what was meant by over 1 px: {wrong}")


def measure_study(page: Any, url: str, api: httpx.Client, ids: tuple[str, str], study: Study, args: Any) -> dict:
    """Both ways on one study: actions, pre-placement errors, saved MRE and the scripted times."""
    mm = args.spacing
    hand_s = by_hand(page, url, ids[1], study, args.zoom_notches)
    _check(saved(api, ids[1], study), study.truth, f"{study.image_id} by hand")
    open_editor(page, url, ids[0], study.study_id)
    pre = pre_placed(page)
    errors = {c: _dist(p, study.truth[c]) * mm for c, p in pre.items()}
    off = [c for c, e in errors.items() if e > args.tolerance_mm]
    missing = [c for c in study.truth if c not in pre]
    assist_s = assisted(page, study, args.zoom_notches, off, missing)
    meant = {c: pre[c] if c in pre and c not in off else p for c, p in study.truth.items()}
    kept = saved(api, ids[0], study)
    _check(kept, meant, f"{study.image_id} assisted")
    return {
        "image": study.image_id,
        "landmarks": len(study.truth),
        "pre_placed": len(pre),
        "pre_placed_within_mm": {str(t): sum(e <= t for e in errors.values()) for t in TOLERANCES_MM},
        "pre_placed_mre_mm": statistics.fmean(errors.values()),
        "actions_by_hand": len(study.truth),
        "actions_assisted": len(off) + len(missing),
        "corrected": off,
        "placed": missing,
        "saved_mre_mm": statistics.fmean(_dist(kept[c], study.truth[c]) * mm for c in study.truth),
        "scripted_s": {"by_hand": round(hand_s, 2), "assisted": round(assist_s, 2)},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.assist", description=__doc__.split("\n\n")[0])
    p.add_argument("--studies", type=int, default=5)
    p.add_argument("--tolerance-mm", type=float, default=1.0, help="a pre-placed landmark this close is accepted")
    p.add_argument("--checkpoint", type=Path, default=CHECKPOINT)
    p.add_argument("--zoom-notches", type=int, default=6, help="wheel notches of 1.25x before each action")
    p.add_argument("--out", type=Path, default=Path("bench/results/assist.json"))
    args = p.parse_args(argv)
    from playwright.sync_api import sync_playwright

    checkpoint = Checkpoint.load(args.checkpoint)
    with tempfile.TemporaryDirectory() as tmp:
        process, url, system_key = _serve(Path(tmp))
        try:
            key, with_model, without, studies, args.spacing = setup(url, system_key, checkpoint, args.studies)
            activate_checkpoint(Settings(data_dir=Path(tmp) / "var"), uuid.UUID(with_model), checkpoint, "bench")
            api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60)
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 1280, "height": 860})
                page.goto(url)
                page.fill("#api-key", key)
                page.click("#sign-in")
                page.wait_for_selector("#projects")
                rows = [measure_study(page, url, api, (with_model, without), s, args) for s in studies]
                browser.close()
        finally:
            process.terminate()
            process.wait(timeout=60)
    result = {"checkpoint": str(args.checkpoint), "tolerance_mm": args.tolerance_mm, "studies": rows}
    result |= {"summary": _summary(rows), "machine": machine(), "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["summary"], indent=1))
    return 0


def _summary(rows: list[dict]) -> dict[str, Any]:
    n = sum(r["landmarks"] for r in rows)
    return {
        "studies": len(rows),
        "actions_per_study": {
            "by_hand": statistics.fmean(r["actions_by_hand"] for r in rows),
            "assisted": statistics.fmean(r["actions_assisted"] for r in rows),
        },
        "pre_placed_within_mm": {
            t: round(sum(r["pre_placed_within_mm"][t] for r in rows) / n, 3) for t in map(str, TOLERANCES_MM)
        },
        "pre_placed_mre_mm": round(statistics.fmean(r["pre_placed_mre_mm"] for r in rows), 3),
        "saved_mre_mm_assisted": round(statistics.fmean(r["saved_mre_mm"] for r in rows), 3),
        "scripted_s_median": {k: statistics.median(r["scripted_s"][k] for r in rows) for k in ("by_hand", "assisted")},
    }


if __name__ == "__main__":
    raise SystemExit(main())
