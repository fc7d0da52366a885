"""The inference thread's dynamic batching, with a stand-in predictor that records each forward pass."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any

import numpy as np
import pytest

from server.predict.batcher import InferenceBatcher


class Recorder:
    """A predictor whose passes are recorded (the images' first pixel as their id); the first pass waits for
    `release` so that requests queue behind it. An image whose id is negative makes the pass fail."""

    def __init__(self) -> None:
        self.passes: list[list[int]] = []
        self.release = threading.Event()
        self.started = threading.Event()

    def predict(self, images: list[np.ndarray], spacing: list[Any], timings: dict[str, float], reduced: list[Any]):  # type: ignore[no-untyped-def]
        self.started.set()
        self.release.wait(10)
        ids = [int(im[0, 0]) for im in images]
        self.passes.append(ids)
        if any(i < 0 for i in ids):
            raise RuntimeError(f"bad image in {ids}")
        timings.update(forward=1.0)
        return [f"prediction {i} spacing {s} reduced {r}" for i, s, r in zip(ids, spacing, reduced, strict=True)]


def _images(*ids: int) -> list[np.ndarray]:
    return [np.full((2, 2), i) for i in ids]


def _submit(batcher: InferenceBatcher, model: Recorder, *ids: int) -> Future:
    return batcher.submit(model, _images(*ids), [None] * len(ids), [None] * len(ids))  # type: ignore[arg-type]


def test_requests_waiting_together_share_a_pass_in_arrival_order() -> None:
    batcher, a, b = InferenceBatcher(max_images=4), Recorder(), Recorder()
    b.release.set()
    first = _submit(batcher, a, 1)
    assert a.started.wait(5)  # the thread is busy with request 1: the next ones queue
    waiting = [_submit(batcher, a, 2), _submit(batcher, a, 3, 4), _submit(batcher, a, 5), _submit(batcher, b, 6)]
    waiting.append(_submit(batcher, a, 7))
    a.release.set()
    results = [f.result(5) for f in [first, *waiting]]
    # 2, 3-4 and 5 make a batch of 4 images; 6 is another model's (held, then alone), and 7 comes after it.
    assert a.passes == [[1], [2, 3, 4, 5], [7]] and b.passes == [[6]]
    assert [r[0] for r in results[1:3]] == [
        ["prediction 2 spacing None reduced None"],
        [
            "prediction 3 spacing None reduced None",
            "prediction 4 spacing None reduced None",
        ],
    ]
    assert results[0][1] == {"forward": 1.0, "batch": 1.0} and results[2][1] == {"forward": 1.0, "batch": 4.0}


def test_a_large_request_goes_alone_and_a_failing_batch_is_served_one_by_one() -> None:
    batcher, model = InferenceBatcher(max_images=2), Recorder()
    first = _submit(batcher, model, 1)
    assert model.started.wait(5)
    large, bad, good = _submit(batcher, model, 2, 3, 4), _submit(batcher, model, -1), _submit(batcher, model, 5)
    model.release.set()
    assert len(large.result(5)[0]) == 3 and first.result(5)[0] == ["prediction 1 spacing None reduced None"]
    with pytest.raises(RuntimeError, match=r"bad image in \[-1\]"):
        bad.result(5)
    assert good.result(5)[0] == ["prediction 5 spacing None reduced None"]
    assert model.passes == [[1], [2, 3, 4], [-1, 5], [-1], [5]]


def test_a_request_given_up_before_its_turn_is_not_predicted() -> None:
    batcher, model = InferenceBatcher(), Recorder()
    first = _submit(batcher, model, 1)
    assert model.started.wait(5)
    gone, kept = _submit(batcher, model, 2), _submit(batcher, model, 3)
    assert gone.cancel()
    model.release.set()
    assert kept.result(5)[0] == ["prediction 3 spacing None reduced None"] and first.result(5)
    assert model.passes == [[1], [3]]
    with pytest.raises(ValueError, match="max_images"):
        InferenceBatcher(max_images=0)


def test_the_inference_thread_computes_with_the_threads_it_is_given() -> None:
    """KAMP_TORCH_THREADS reaches the inference thread (OpenMP counts threads per calling thread)."""
    import torch

    class ThreadCount(Recorder):
        def predict(self, images, spacing, timings, reduced):  # type: ignore[no-untyped-def]
            self.threads = torch.get_num_threads()
            return super().predict(images, spacing, timings, reduced)

    before = torch.get_num_threads()
    model = ThreadCount()
    model.release.set()
    _submit(InferenceBatcher(max_images=4, threads=1), model, 1).result(5)
    assert model.threads == 1 and torch.get_num_threads() == before
