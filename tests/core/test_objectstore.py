"""Both object-store backends behave the same: file:// and s3:// (moto's server over HTTP)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import boto3
import pytest

from dicomlab_core.errors import BadRequest, NotFound
from dicomlab_core.objectstore import MULTIPART_THRESHOLD_BYTES, ObjectStore, ObjectStoreError, open_store, split_uri


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "file":
        return open_store(f"file://{tmp_path}/store")
    bucket = request.getfixturevalue("s3_bucket")
    return open_store(f"{bucket}/some/prefix")


def test_put_get_list_delete(store: ObjectStore) -> None:
    store.put_bytes("manifests/a.jsonl", b'{"source": "1"}\n')
    store.put_bytes("manifests/b.jsonl", b"two")
    store.put_bytes("other/c.json", b"{}")
    assert store.get_bytes("manifests/a.jsonl") == b'{"source": "1"}\n'
    assert store.exists("manifests/b.jsonl")
    assert not store.exists("manifests/zzz.jsonl")
    assert sorted(store.list("manifests/")) == ["manifests/a.jsonl", "manifests/b.jsonl"]
    assert sorted(store.list()) == ["manifests/a.jsonl", "manifests/b.jsonl", "other/c.json"]
    store.delete("manifests/b.jsonl")
    assert not store.exists("manifests/b.jsonl")
    with pytest.raises(NotFound):
        store.get_bytes("manifests/b.jsonl")


def test_failed_write_leaves_nothing_visible(store: ObjectStore) -> None:
    store.put_bytes("out/result.json", b"old")
    with pytest.raises(RuntimeError), store.open_write("out/result.json") as handle:
        handle.write(b"half of the new")
        raise RuntimeError("crash mid-write")
    assert store.get_bytes("out/result.json") == b"old"
    with pytest.raises(RuntimeError), store.open_write("out/new.json") as handle:
        handle.write(b"partial")
        raise RuntimeError("crash mid-write")
    assert not store.exists("out/new.json")
    assert list(store.list("out/")) == ["out/result.json"]


def test_large_object_roundtrip(store: ObjectStore, tmp_path: Path) -> None:
    """Above the threshold S3 uses a multipart upload; both backends stream from a file."""
    source = tmp_path / "big.bin"
    block = os.urandom(1024 * 1024)
    with source.open("wb") as handle:
        for _ in range(MULTIPART_THRESHOLD_BYTES // len(block) + 2):
            handle.write(block)
    store.put_file("big/blob.bin", source)
    target = tmp_path / "copy.bin"
    store.download("big/blob.bin", target)
    assert target.read_bytes() == source.read_bytes()


@pytest.mark.parametrize("key", ["../escape", "/abs", "a//b", "a/./b", ""])
def test_keys_cannot_escape_the_root(store: ObjectStore, key: str) -> None:
    with pytest.raises(BadRequest):
        store.put_bytes(key, b"x")


def test_file_store_objects_are_not_world_readable(tmp_path: Path) -> None:
    store = open_store(str(tmp_path))
    store.put_bytes("a/b.json", b"{}")
    mode = (tmp_path / "a" / "b.json").stat().st_mode
    assert not mode & stat.S_IROTH


def test_s3_errors_name_bucket_and_key(s3_endpoint: str) -> None:
    store = open_store("s3://no-such-bucket-dicomlab/pre")
    with pytest.raises(ObjectStoreError, match=r"s3://no-such-bucket-dicomlab/pre/x.json .*NoSuchBucket"):
        store.put_bytes("x.json", b"{}")
    with pytest.raises(ObjectStoreError, match="no-such-bucket-dicomlab"):
        store.get_bytes("x.json")


def test_s3_denied_write_names_the_key(s3_bucket: str, s3_endpoint: str) -> None:
    """A bucket policy denying PutObject: the error names bucket/key and nothing appears."""
    import json

    bucket = s3_bucket.removeprefix("s3://")
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
                                                        "Resource": f"arn:aws:s3:::{bucket}/*"}]}
    client.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
    store = open_store(s3_bucket)
    with pytest.raises(ObjectStoreError) as info:
        store.put_bytes("denied.json", b"{}")
    assert f"s3://{bucket}/denied.json" in info.value.description
    assert "403" in info.value.description or "AccessDenied" in info.value.description
    assert not store.exists("denied.json")


def test_unknown_scheme_and_split_uri() -> None:
    with pytest.raises(BadRequest, match="scheme must be"):
        open_store("ftp://host/x")
    assert split_uri("s3://bucket/a/b/c.json") == ("s3://bucket", "a/b/c.json")
    assert split_uri("file:///data/x/out.manifest") == ("file:///data/x", "out.manifest")
