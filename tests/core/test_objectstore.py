"""Both object-store backends behave the same: file:// and s3:// (moto's server over HTTP)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import boto3
import pytest

from dicomlab_core.errors import BadRequest, NotFound
from dicomlab_core.objectstore import (
    MULTIPART_THRESHOLD_BYTES,
    OUTSIDE_STORE,
    ObjectStore,
    ObjectStoreError,
    StoreScope,
    open_store,
    split_uri,
)


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


# ------------------------------------------------------------------ confinement of request URIs (StoreScope)


def _escapes(tmp_path: Path) -> dict[str, str]:
    """URIs that lead out of ``tmp_path/store``: things that exist, things that do not, tricks."""
    root = tmp_path / "store"
    (root / "inside").mkdir(parents=True)
    outside = tmp_path / "secret.json"
    outside.write_text('{"patient": "x"}')
    (tmp_path / "folder").mkdir()
    (root / "link.json").symlink_to(outside)
    (root / "linkdir").symlink_to(tmp_path)
    return {
        "existing file outside": f"file://{outside}",
        "missing file outside": f"file://{tmp_path}/missing.json",
        "directory outside": f"file://{tmp_path}/folder",
        "system file": "file:///etc/passwd",
        "dot-dot traversal": f"file://{root}/inside/../../secret.json",
        "symlink to a file outside": f"file://{root}/link.json",
        "symlink to a folder outside": f"file://{root}/linkdir/secret.json",
        "the root itself": f"file://{root}",
        "prefix-sharing sibling": f"file://{root}-other/x.json",
        "host in a file URI": f"file://evil.example{outside}",
        "plain path": str(outside),
        "other scheme": "http://169.254.169.254/latest/meta-data",
        "other bucket": "s3://other-bucket/x.json",
        "bucket outside the prefix": "s3://lab-bucket/elsewhere/x.json",
        "s3 dot-dot": "s3://lab-bucket/team/../elsewhere/x.json",
        "s3 prefix without slash": "s3://lab-bucket/teamx/x.json",
    }


def test_store_scope_refuses_every_escape_with_one_message(tmp_path: Path) -> None:
    scope = StoreScope([f"file://{tmp_path / 'store'}", "s3://lab-bucket/team"])
    messages = {}
    for case, uri in _escapes(tmp_path).items():
        with pytest.raises(BadRequest) as caught:
            scope.locate(uri, field="payload.s3Uri")
        messages[case] = caught.value.description
    # One message whatever was (or was not) at the path: nothing to learn about the file system.
    assert set(messages.values()) == {f"payload.s3Uri: {OUTSIDE_STORE}"}, messages


def test_store_scope_accepts_objects_inside_its_roots(tmp_path: Path) -> None:
    root = (tmp_path / "store").resolve()
    (root / "a").mkdir(parents=True)
    (root / "a" / "m.jsonl").write_text("{}\n")
    (root / "alias.jsonl").symlink_to(root / "a" / "m.jsonl")  # a link that stays inside is fine
    scope = StoreScope([f"file://{tmp_path / 'store'}", "s3://lab-bucket/team", "s3://open-bucket"])
    assert scope.locate(f"file://{root}/a/m.jsonl", field="f") == (f"file://{root}", "a/m.jsonl")
    assert scope.locate(f"file://{root}/a/./../a/m.jsonl", field="f") == (f"file://{root}", "a/m.jsonl")
    assert scope.locate(f"file://{root}/alias.jsonl", field="f") == (f"file://{root}", "a/m.jsonl")
    assert scope.locate("s3://lab-bucket/team/x/y.json", field="f") == ("s3://lab-bucket", "team/x/y.json")
    assert scope.locate("s3://open-bucket/any/key", field="f") == ("s3://open-bucket", "any/key")
    store, key = scope.open(f"file://{root}/a/m.jsonl", field="f")
    assert store.get_bytes(key) == b"{}\n"


def test_store_scope_rejects_bad_roots() -> None:
    with pytest.raises(ValueError, match="expected file:///dir or s3://bucket"):
        StoreScope(["http://example.org/store"])


def test_a_folder_in_the_file_store_reads_as_missing(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path}/store")
    store.put_bytes("folder/a.json", b"{}")
    with pytest.raises(NotFound):
        store.get_bytes("folder")
