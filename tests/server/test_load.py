"""The API under concurrent load, on a real uvicorn: blocking work never holds the event loop, so /healthz
answers within a second throughout, no request answers 500, and decodes beyond their slots wait, then answer
503."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from server.db.entities import VersionStatus

from .api_helpers import CEPH
from .conftest import Api, make_api, serve
from .test_predict import _add_version, _image, tiny_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SUBMITTERS = 20
IMAGES_PER_JOB = 4


@contextmanager
def gc_pauses() -> Iterator[list[float]]:
    """The seconds of each garbage collection while the block runs, with the objects made before it frozen.

    A collection stops every thread of the process. Late in the suite this process holds earlier tests' objects,
    which a server process does not, and a full collection over millions of them lasts seconds: they are kept
    out of collections here, and the pauses that remain go into the failure message."""
    pauses: list[float] = []
    started = [0.0]

    def timed(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses.append(time.perf_counter() - started[0])

    gc.freeze()
    gc.callbacks.append(timed)
    try:
        yield pauses
    finally:
        gc.callbacks.remove(timed)
        gc.unfreeze()


def test_twenty_concurrent_job_submissions_leave_healthz_responsive(api: Api, data_root: Path) -> None:
    clinic, admin = api.clinic()
    pid = api.client.post("/v1/projects", json=CEPH, headers=api.headers(admin)).json()["id"]
    _add_version(api, pid, tiny_checkpoint(data_root, 15), VersionStatus.active)
    predict = api.key(clinic, admin, "predict")
    api.client.app.state.enqueue_prediction = lambda job_id: f"task-{job_id}"  # no broker: only the API is tested
    image = _image(data_root)
    statuses: list[int] = []
    latencies: list[float] = []

    with gc_pauses() as pauses, serve(api.client.app) as port:
        base = f"http://127.0.0.1:{port}"

        def submit() -> None:
            files = [("files", (f"{i}.jpg", image)) for i in range(IMAGES_PER_JOB)]
            with httpx.Client(base_url=base, timeout=120) as client:
                r = client.post(f"/v1/projects/{pid}/predict/jobs", files=files, headers=api.headers(predict))
            statuses.append(r.status_code)

        threads = [threading.Thread(target=submit) for _ in range(SUBMITTERS)]
        for t in threads:
            t.start()
        with httpx.Client(base_url=base, timeout=30) as client:
            while any(t.is_alive() for t in threads):
                t0 = time.perf_counter()
                assert client.get("/healthz").status_code == 200
                latencies.append(time.perf_counter() - t0)
                time.sleep(0.05)
        for t in threads:
            t.join()
    assert sorted(statuses) == [202] * SUBMITTERS
    slowest, longest_gc = max(latencies), max(pauses, default=0.0)
    assert len(latencies) >= 5 and slowest < 1.0, f"slowest /healthz {slowest:.2f} s, longest GC {longest_gc:.2f} s"


def test_uploads_beyond_the_decoding_slots_wait_then_answer_503(
    database_url: str, tmp_path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One decoding slot, a 0.2 s wait: of two uploads at once one is stored and the other answers 503 busy
    with Retry-After, instead of both decoding (and holding their memory) together."""
    import server.studies.service as service

    real = service.decode_image

    def slow(*args, **kwargs):  # type: ignore[no-untyped-def]
        time.sleep(1.0)
        return real(*args, **kwargs)

    monkeypatch.setattr(service, "decode_image", slow)
    api = make_api(database_url, tmp_path, max_concurrent_decodes=1, decode_wait_s=0.2)
    image = _image(data_root)
    answers: list[httpx.Response] = []
    with api.client:
        _, admin = api.clinic()
        with serve(api.client.app) as port:

            def upload() -> None:
                with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                    files = {"file": ("a.jpg", image)}
                    answers.append(client.post("/v1/studies", files=files, headers=api.headers(admin)))

            threads = [threading.Thread(target=upload) for _ in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    assert sorted(a.status_code for a in answers) == [201, 503]
    busy = next(a for a in answers if a.status_code == 503)
    assert busy.headers["retry-after"] == "5" and busy.json()["type"] == "/problems/busy"
