"""The reaper's sweep of orphan blobs (worker.sweep): an old blob no row refers to and an old temporary file go;
a study's blobs, and an orphan young enough to belong to an upload still on its way, stay."""

from __future__ import annotations

import os
import time
from pathlib import Path

from server.storage import LocalBlobStore
from worker.sweep import sweep_orphan_blobs

from ..server.conftest import make_api


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_old_orphans_and_temporary_files_are_swept(tmp_path: Path, data_root: Path) -> None:
    api = make_api(f"sqlite:///{tmp_path / 'kamp.db'}", tmp_path)
    with api.client:
        _, admin = api.clinic()
        image = (data_root / "isbi2015" / "images" / "001.jpg").read_bytes()
        r = api.client.post("/v1/studies", files={"file": ("001.jpg", image)}, headers=api.headers(admin))
        assert r.status_code == 201, r.text
        store = LocalBlobStore(api.settings.resolved_blob_dir)
        study_blobs = store.files()
        orphan, young = store.path(store.put(b"left by a dead API process")), store.path(store.put(b"on its way"))
        incoming = orphan.parent / ".incoming-abc123"
        incoming.write_bytes(b"half a blob")
        for path in [*study_blobs, orphan, incoming]:
            _age(path, 2 * api.settings.orphan_blob_after_s)
        assert sorted(sweep_orphan_blobs(api.settings)) == sorted([orphan.name, incoming.name])
        assert all(p.is_file() for p in [*study_blobs, young])
        assert api.client.get(f"/v1/studies/{r.json()['id']}/image", headers=api.headers(admin)).status_code == 200


def test_an_upload_of_an_old_orphans_very_bytes_keeps_them(tmp_path: Path) -> None:
    api = make_api(f"sqlite:///{tmp_path / 'kamp.db'}", tmp_path)
    with api.client:
        store = LocalBlobStore(api.settings.resolved_blob_dir)
        content = b"an image uploaded twice, the first upload's row never committed"
        orphan = store.path(store.put(content))
        _age(orphan, 2 * api.settings.orphan_blob_after_s)
        store.put(content)  # the second upload: its row is not committed yet
        assert sweep_orphan_blobs(api.settings) == [] and orphan.is_file()

        _age(orphan, 2 * api.settings.orphan_blob_after_s)
        listed = store.listing()  # the sweep lists the blob old, then the upload comes before it deletes
        store.put(content)
        store.discard(listed[0])
        assert orphan.is_file()
