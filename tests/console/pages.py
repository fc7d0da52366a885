"""What the console's page tests share: screenshots that must not be blank, waits that fail on a shown problem,
the viewer's image-to-page transform, and the API calls a test makes beside the page."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from models.datasets import load_protocol

from .conftest import Served


def shot(page: Any, folder: Path, name: str) -> None:
    """Saves a screenshot and checks that the page is not blank (it has contrast, not one flat colour)."""
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    grey = np.asarray(Image.open(path).convert("L"), dtype=np.float32)
    assert grey.std() > 8, f"{name} looks blank"


def wait(page: Any, selector: str, timeout: float | None = None) -> None:
    """Waits for `selector`; a problem shown by the page instead fails at once with its detail."""
    page.wait_for_selector(f"{selector}, #problem:not([hidden])", timeout=timeout)
    if page.locator("#problem:not([hidden])").count():
        pytest.fail(f"the page shows a problem while waiting for {selector}: {page.inner_text('#problem')}")


def sign_in(page: Any, key: str) -> None:
    if page.locator("text=Sign out").count():
        page.click("text=Sign out")
    page.fill("#api-key", key)
    page.click("#sign-in")
    page.wait_for_selector("#who .role")


def canvas_transform(page: Any) -> tuple[float, float, float]:
    scale, tx, ty = (float(v) for v in page.get_attribute("#image", "data-transform").split())
    return scale, tx, ty


def screen_of(page: Any, x: float, y: float) -> tuple[float, float]:
    """Where image pixel (x, y) is on the page, from the viewer's transform and the canvas' box."""
    scale, tx, ty = canvas_transform(page)
    box = page.locator("#image").bounding_box()
    return box["x"] + x * scale + tx, box["y"] + y * scale + ty


def click_image(page: Any, x: float, y: float) -> None:
    page.mouse.click(*screen_of(page, x, y))


def open_editor(page: Any) -> None:
    page.wait_for_selector("#image[data-transform]")
    page.wait_for_selector("#annotation-history >> text=/./")


def saved_points(served: Served, key: str, pid: str, step: int, study: str) -> dict[str, tuple[float, float]]:
    r = httpx.get(
        f"{served.url}/v1/projects/{pid}/landmark-sets/{step}/annotations/{study}",
        headers={"Authorization": f"Bearer {key}"},
    )
    assert r.status_code == 200, r.text
    return {p["code"]: (p["x"], p["y"]) for p in r.json()[-1]["points"]}


def assert_within_1px(saved: dict[str, tuple[float, float]], truth: dict[str, tuple[float, float]]) -> None:
    assert set(saved) == set(truth)
    for code, (x, y) in truth.items():
        assert math.hypot(saved[code][0] - x, saved[code][1] - y) <= 1.0, (code, saved[code], (x, y))


class Cases:
    """Real cephalograms of cld38-5step's first two steps with their senior labels."""

    def __init__(self, data_root: Path) -> None:
        self.protocol = load_protocol(data_root, "cld38-5step")
        self.ds = self.protocol.load_dataset(data_root)

    def images(self, step: int, n: int) -> list[str]:
        return list(self.protocol.steps[step].images[:n])

    def path(self, image_id: str) -> Path:
        return Path(self.ds.image_path(image_id))

    def truth(self, image_id: str, codes: list[str]) -> dict[str, tuple[float, float]]:
        kp = self.ds.keypoints([image_id], codes, self.protocol.annotator)[0]
        return {c: (float(x), float(y)) for c, (x, y) in zip(codes, kp, strict=True)}


class Api:
    def __init__(self, served: Served, key: str) -> None:
        self.client = httpx.Client(base_url=served.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)

    def upload(self, path: Path) -> str:
        r = self.client.post(
            "/v1/studies",
            files={"file": (path.name, path.read_bytes())},
            data={"spacing_x_mm": "0.1", "spacing_y_mm": "0.1"},
        )
        assert r.status_code in (200, 201), r.text
        return str(r.json()["id"])

    def annotate(self, pid: str, step: int, study: str, points: dict[str, tuple[float, float]]) -> None:
        body = {"study_id": study, "points": [{"code": c, "x": x, "y": y} for c, (x, y) in points.items()]}
        r = self.client.post(f"/v1/projects/{pid}/landmark-sets/{step}/annotations", json=body)
        assert r.status_code == 201, r.text
