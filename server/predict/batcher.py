"""The inference thread: every synchronous prediction runs here, and requests that wait for it together go
through the network together (dynamic batching).

One thread means one torch (OpenMP) pool: predictions spread over a web server's many worker threads make many
pools that spin against each other on the same cores. But one thread serving one image at a time leaves the
throughput of a batched forward pass unused: measured on the 2-core CPU machine with HRNet-W18-small at 256x320,
74 ms for one image, 53 ms per image in a batch of 4, 76 ms per image in a batch of 8. So when the thread gets
free it takes every request already waiting for the same model, up to `max_images` images, in arrival order,
and predicts them in one pass; a lone request is never held back to wait for company.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from models.precision import set_torch_threads
from models.predictor import Prediction, Predictor, Reduced

log = logging.getLogger("kamp.inference")

#: (the request's predictions, in its images' order; the timings of the pass that served it, ms, with "batch":
#: the number of images in that pass).
Served = tuple[list[Prediction], dict[str, float]]


@dataclass
class _Request:
    predictor: Predictor
    images: Sequence[np.ndarray]
    spacing: Sequence[tuple[float, float] | None]
    reduced: Sequence[Reduced | None]
    future: Future[Served] = field(default_factory=Future)


class InferenceBatcher:
    """Serves `submit`ted requests on its own thread (started on first use), in batches of up to `max_images`
    images of one model. A request larger than `max_images` goes alone (the predictor splits it itself).
    The thread computes with `threads` torch threads (None: models.precision.default_threads())."""

    def __init__(self, max_images: int = 4, *, threads: int | None = None) -> None:
        if max_images < 1:
            raise ValueError(f"max_images must be >= 1, got {max_images}")
        self.max_images = max_images
        self.threads = threads
        self._queue: queue.SimpleQueue[_Request] = queue.SimpleQueue()
        self._held: _Request | None = None  # taken from the queue but not fitting the last batch: served next
        self._thread: threading.Thread | None = None
        self._start = threading.Lock()

    def submit(
        self,
        predictor: Predictor,
        images: Sequence[np.ndarray],
        spacing: Sequence[tuple[float, float] | None],
        reduced: Sequence[Reduced | None],
    ) -> Future[Served]:
        """Queue one request's images (H, W each) with their spacing (mm/px) and reductions; see `Served`."""
        request = _Request(predictor, images, spacing, reduced)
        with self._start:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="kamp-inference", daemon=True)
                self._thread.start()
        self._queue.put(request)
        return request.future

    def _run(self) -> None:
        threads = set_torch_threads(self.threads)  # OpenMP counts threads per calling thread: set it here
        log.info("inference thread: %d torch threads", threads)
        while True:
            # A request whose caller gave up (its future cancelled) is dropped here, before any work on it.
            batch = [r for r in self._next_batch() if r.future.set_running_or_notify_cancel()]
            try:
                if batch:
                    self._serve(batch)
            except BaseException:  # the thread must outlive any request
                log.exception("inference failed outside a request")

    def _next_batch(self) -> list[_Request]:
        """The first waiting request (blocking until there is one), then those that queued behind it for the same
        model while they fit; the first that does not fit is held for the next batch (arrival order kept)."""
        first = self._held or self._queue.get()
        self._held = None
        batch, size = [first], len(first.images)
        while size < self.max_images:
            try:
                request = self._queue.get_nowait()
            except queue.Empty:
                break
            if request.predictor is not first.predictor or size + len(request.images) > self.max_images:
                self._held = request
                break
            batch.append(request)
            size += len(request.images)
        return batch

    def _serve(self, batch: list[_Request]) -> None:
        predictor = batch[0].predictor
        timings: dict[str, float] = {}
        try:
            predictions = predictor.predict(
                [im for r in batch for im in r.images],
                [s for r in batch for s in r.spacing],
                timings,
                [f for r in batch for f in r.reduced],
            )
        except Exception as exc:
            if len(batch) == 1:
                batch[0].future.set_exception(exc)
                return
            log.warning("a batch of %d requests failed (%s); serving them one by one", len(batch), exc)
            for request in batch:
                self._serve([request])
            return
        timings["batch"] = float(len(predictions))
        start = 0
        for request in batch:
            n = len(request.images)
            request.future.set_result((predictions[start : start + n], dict(timings)))
            start += n
