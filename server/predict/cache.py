"""Loaded models, by version: the active version is loaded once and reused; a promotion or rollback makes the
next request resolve another version, while requests in flight keep the predictor they hold."""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict

from models.checkpoint import Checkpoint
from models.config import Precision
from models.predictor import Predictor

from ..storage import BlobStore


class ModelCache:
    """Up to `capacity` predictors, least recently used dropped first; thread-safe, one load per version. Each
    predicts on `device` in `precision` (models.precision)."""

    def __init__(self, capacity: int = 4, device: str = "auto", precision: Precision = "auto") -> None:
        self.capacity, self.device, self.precision = capacity, device, precision
        self._models: OrderedDict[uuid.UUID, Predictor] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[uuid.UUID, threading.Lock] = {}

    def loaded(self, version_id: uuid.UUID) -> Predictor | None:
        """The version's predictor if it is loaded already (never blocks on a load: for the event loop)."""
        with self._lock:
            return self._models.get(version_id)

    def get(self, version_id: uuid.UUID, blob: str, blobs: BlobStore) -> Predictor:
        with self._lock:
            if version_id in self._models:
                self._models.move_to_end(version_id)
                return self._models[version_id]
            loading = self._loading.setdefault(version_id, threading.Lock())
        with loading:  # one load per version, however many requests arrive at once
            with self._lock:
                if version_id in self._models:
                    return self._models[version_id]
            checkpoint = Checkpoint.from_bytes(blobs.get(blob))
            predictor = Predictor(checkpoint, device=self.device, precision=self.precision)
            with self._lock:
                self._models[version_id] = predictor
                while len(self._models) > self.capacity:
                    self._models.popitem(last=False)
                self._loading.pop(version_id, None)
            return predictor

    def __len__(self) -> int:
        return len(self._models)
