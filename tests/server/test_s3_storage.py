"""Blobs in S3-compatible object storage, against moto's S3 server speaking the real protocol over HTTP: the
store's contract (the same as the local folder's), and the service uploading, serving, predicting from and
sweeping blobs there with nothing in its data folder."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from server.s3_storage import S3BlobStore
from server.storage import BlobStore, LocalBlobStore
from worker.sweep import sweep_orphan_blobs

from .conftest import make_api

moto_server = pytest.importorskip("moto.server")
BUCKET = "kamp-test"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Credentials for the test server, and an empty bucket; answers the endpoint."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    if BUCKET not in [b["Name"] for b in client.list_buckets()["Buckets"]]:
        client.create_bucket(Bucket=BUCKET)
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for item in page.get("Contents", []):
            client.delete_object(Bucket=BUCKET, Key=item["Key"])
    return s3_endpoint


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "local":
        return LocalBlobStore(tmp_path / "blobs")
    endpoint = request.getfixturevalue("s3_env")
    return S3BlobStore.from_url(f"s3://{BUCKET}/blobs/v1", endpoint_url=endpoint)


def test_a_store_is_content_addressed_and_forgets_nothing_half(store: BlobStore) -> None:
    key = store.put(b"a checkpoint")
    assert key == store.put(b"a checkpoint")  # stored once
    assert store.get(key) == b"a checkpoint" and store.exists(key)
    assert [f.name for f in store.listing()] == [key] and not store.listing()[0].temporary
    other = store.put(b"a study")
    store.delete(key)
    store.delete(key)  # twice is harmless
    assert not store.exists(key) and [f.name for f in store.listing()] == [other]
    with pytest.raises(FileNotFoundError):
        store.get(key)
    with pytest.raises(ValueError, match="not a blob key"):
        store.get("../../etc/passwd")
    store.discard(store.listing()[0])
    assert store.listing() == []


def test_content_put_again_is_young_again(store: BlobStore) -> None:
    key = store.put(b"an orphan an upload of the same bytes still needs")
    first = store.listing()[0].modified
    time.sleep(1.1)  # S3 times have whole seconds
    assert store.put(b"an orphan an upload of the same bytes still needs") == key
    assert store.listing()[0].modified > first  # the sweep's cut-off counts from now
    assert store.get(key) == b"an orphan an upload of the same bytes still needs"


def test_a_blob_put_again_since_the_listing_is_not_discarded(store: BlobStore) -> None:
    key = store.put(b"an old orphan")
    [listed] = store.listing()
    time.sleep(1.1)  # S3 times have whole seconds
    store.put(b"an old orphan")  # an upload of the same bytes, on its way to its commit
    assert not store.discard(listed) and store.exists(key)
    assert store.discard(store.listing()[0])  # listed as it is now: gone
    assert not store.discard(listed) and not store.exists(key)  # discarding what is gone is harmless


def test_the_url_names_a_bucket_and_a_prefix() -> None:
    with pytest.raises(ValueError, match="s3://bucket/prefix"):
        S3BlobStore.from_url("https://kamp-test/blobs")


def test_the_service_keeps_its_blobs_in_object_storage(s3_env: str, tmp_path: Path, data_root: Path) -> None:
    api = make_api(
        f"sqlite:///{tmp_path / 'kamp.db'}",
        tmp_path,
        blob_url=f"s3://{BUCKET}/kamp",
        s3_endpoint_url=s3_env,
        orphan_blob_after_s=1,
    )
    with api.client:
        _, admin = api.clinic()
        image = (data_root / "isbi2015" / "images" / "001.jpg").read_bytes()
        r = api.client.post("/v1/studies", files={"file": ("001.jpg", image)}, headers=api.headers(admin))
        assert r.status_code == 201, r.text
        png = api.client.get(f"/v1/studies/{r.json()['id']}/image", headers=api.headers(admin))
        assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
        store = S3BlobStore.from_url(f"s3://{BUCKET}/kamp", endpoint_url=s3_env)
        study_blobs = {f.name for f in store.listing()}
        assert len(study_blobs) == 2  # the source file and the display image
        assert not api.settings.resolved_blob_dir.exists()  # nothing in the data folder
        orphan = store.put(b"left by a dead API process")
        time.sleep(2.1)  # older than orphan_blob_after_s (S3 times have whole seconds)
        assert sweep_orphan_blobs(api.settings) == [orphan]
        assert {f.name for f in store.listing()} == study_blobs


def test_a_malformed_blob_url_is_refused_at_start(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from server.settings import Settings

    with pytest.raises(ValidationError, match="blob_url"):
        Settings(data_dir=tmp_path, blob_url="s3://")
