"""Blobs in S3-compatible object storage (AWS S3, MinIO, Ceph RGW): one object per blob at <prefix><key>, key =
sha256 of the content, as in the local store. An object appears whole or not at all (a PUT is atomic), so there are
no temporary files; equal content is stored once (a HEAD before the PUT)."""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import urlparse

import boto3
from botocore.exceptions import ClientError

from .storage import StoredFile, check_key


class S3BlobStore:
    def __init__(self, bucket: str, prefix: str = "", *, client: Any = None, endpoint_url: str | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.client = client or boto3.client("s3", endpoint_url=endpoint_url)

    @classmethod
    def from_url(cls, url: str, *, endpoint_url: str | None = None) -> S3BlobStore:
        """s3://bucket/prefix -> the store (credentials and region from the environment, as boto3 reads them)."""
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"KAMP_BLOB_URL must read s3://bucket/prefix, got {url!r}")
        return cls(parsed.netloc, parsed.path, endpoint_url=endpoint_url)

    def _name(self, key: str) -> str:
        return self.prefix + check_key(key)

    def put(self, data: bytes) -> str:
        """Stores `data` under its key. An object stored already is copied onto itself instead (on the server, no
        upload), which makes its LastModified new: the sweep must not take the blob of an upload on its way to its
        commit for an old orphan (server.storage.LocalBlobStore.put)."""
        key = hashlib.sha256(data).hexdigest()
        if self.exists(key):
            try:
                self._refresh(key)
                return key
            except ClientError as exc:
                if not _missing(exc):
                    raise
        self.client.put_object(Bucket=self.bucket, Key=self._name(key), Body=data)
        return key

    def _refresh(self, key: str) -> None:
        """A new LastModified for an object, by copying it onto itself (S3 refuses a self-copy that changes
        nothing, so its metadata is replaced, with the same, empty, metadata)."""
        name = self._name(key)
        self.client.copy_object(
            Bucket=self.bucket, Key=name, CopySource={"Bucket": self.bucket, "Key": name}, MetadataDirective="REPLACE"
        )

    def get(self, key: str) -> bytes:
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self._name(key))
        except self.client.exceptions.NoSuchKey as exc:
            raise FileNotFoundError(f"blob {key} is missing from s3://{self.bucket}/{self.prefix}") from exc
        return bytes(answer["Body"].read())

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._name(key))
        except ClientError as exc:
            if _missing(exc):
                return False
            raise
        return True

    def delete(self, key: str) -> None:
        """Remove a blob; a missing one is no error (S3 answers a DELETE of nothing with success)."""
        self.client.delete_object(Bucket=self.bucket, Key=self._name(key))

    def listing(self) -> list[StoredFile]:
        out = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix):
            for item in page.get("Contents", []):
                name = item["Key"][len(self.prefix) :]
                out.append(StoredFile(name, item["LastModified"].timestamp(), temporary=False))
        return out

    def discard(self, stored: StoredFile) -> bool:
        """Remove a listed blob if it is still there and no younger than listed: one put again since the listing
        belongs to an upload on its way to its commit (LocalBlobStore.discard); whether it was removed. S3 has no
        delete conditional on time, so this reads the time first; only a put between that read and the delete,
        milliseconds, is lost."""
        name = self.prefix + stored.name
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=name)
        except ClientError as exc:
            if _missing(exc):
                return False
            raise
        if head["LastModified"].timestamp() > stored.modified:
            return False
        self.client.delete_object(Bucket=self.bucket, Key=name)
        return True


def _missing(exc: ClientError) -> bool:
    """Whether S3 (or a look-alike) answered that the object is not there."""
    return exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound")
