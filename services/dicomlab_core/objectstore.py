"""One object-store interface over ``file://`` folders and ``s3://`` buckets.

``open_store("file:///data/dicomlab")`` or ``open_store("s3://bucket/prefix")`` return an
:class:`ObjectStore`; keys are ``/``-separated paths below the root. Writes are atomic in both
backends: a reader never sees a partial object (``file://``: temp file, fsync, rename; ``s3://``:
S3 only makes an object visible when its (multipart) upload completes, and a failed multipart
upload is aborted). Errors name the bucket/key or path and the reason, never credentials.

URIs that arrive in requests are confined to the configured roots by :class:`StoreScope` before
anything is read: one rule for every service, one refusal message.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, Protocol
from urllib.parse import urlparse

from dicomlab_core.errors import BadRequest, NotFound, UpstreamError

logger = logging.getLogger(__name__)

MULTIPART_THRESHOLD_BYTES = 16 * 1024 * 1024
"""Objects larger than this are uploaded to S3 in parts."""


class ObjectStoreError(UpstreamError):
    """The object store refused or failed an operation; the message names the bucket/key."""


class ObjectStore(Protocol):
    """What every backend offers. Keys are relative, ``/``-separated."""

    url: str

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None: ...
    def put_file(self, key: str, path: Path, content_type: str = "application/octet-stream") -> None: ...
    def get_bytes(self, key: str) -> bytes: ...
    def download(self, key: str, path: Path) -> None: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str = "") -> Iterator[str]: ...
    def delete(self, key: str) -> None: ...
    def uri(self, key: str) -> str: ...

    @contextlib.contextmanager
    def open_write(self, key: str, content_type: str = "application/octet-stream") -> Iterator[IO[bytes]]: ...


def open_store(url: str, **s3_options: Any) -> ObjectStore:
    """The store for ``url`` (``file:///abs/path``, a plain path, or ``s3://bucket[/prefix]``)."""
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise BadRequest(f"object store URL {url!r} has no bucket")
        return S3Store(parsed.netloc, parsed.path.strip("/"), **s3_options)
    if parsed.scheme in ("file", ""):
        path = Path(parsed.path if parsed.scheme == "file" else url)
        return FileStore(path)
    raise BadRequest(f"object store URL {url!r}: scheme must be file:// or s3://")


def split_uri(uri: str) -> tuple[str, str]:
    """Split a full object URI into (store URL, key): ``s3://b/a/b.json`` → (``s3://b``, ``a/b.json``)."""
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        return f"s3://{parsed.netloc}", parsed.path.lstrip("/")
    path = Path(parsed.path if parsed.scheme == "file" else uri)
    return f"file://{path.parent}", path.name


OUTSIDE_STORE = "not an object in the configured object store"
"""The one refusal for a URI outside the allowed roots: the same whether or not something is there."""


class StoreScope:
    """The object-store roots that URIs in requests may name, and the one rule that confines them.

    A request that names an object by URI (a Ground Truth annotation file, a job's manifest, a
    manifest to exclude) may only reach objects inside these roots: ``s3://bucket[/prefix]`` (same
    bucket, key under the prefix) or ``file:///dir`` (the path, symlinks and ``..`` resolved, strictly
    below the directory). Anything else (another bucket, a path elsewhere on disk, a symlink or
    ``..`` leading out, another scheme) is refused with one message that never depends on what
    exists there, so the check cannot be used to probe the file system.
    """

    def __init__(self, roots: Iterable[str]) -> None:
        self._s3: list[tuple[str, str]] = []
        self._files: list[Path] = []
        for root in roots:
            parsed = urlparse(root)
            if parsed.scheme == "s3" and parsed.netloc:
                self._s3.append((parsed.netloc, parsed.path.strip("/")))
            elif parsed.scheme in ("file", "") and (parsed.path if parsed.scheme == "file" else root):
                self._files.append(Path(os.path.realpath(parsed.path if parsed.scheme == "file" else root)))
            else:
                raise ValueError(f"object store root {root!r}: expected file:///dir or s3://bucket[/prefix]")
        self.roots = tuple(roots)

    def locate(self, uri: str, *, field: str) -> tuple[str, str]:
        """(store URL, key) of ``uri`` inside an allowed root; else :class:`BadRequest` naming ``field``."""
        refused = BadRequest(f"{field}: {OUTSIDE_STORE}")
        if not isinstance(uri, str) or len(uri) > 4096 or "\x00" in uri:
            raise refused
        parsed = urlparse(uri)
        if parsed.scheme == "s3":
            key = parsed.path.lstrip("/")
            if not _valid_key(key):
                raise refused
            for bucket, prefix in self._s3:
                if parsed.netloc == bucket and (not prefix or key.startswith(prefix + "/")):
                    return f"s3://{bucket}", key
            raise refused
        if parsed.scheme == "file" and parsed.netloc in ("", "localhost") and parsed.path.startswith("/"):
            resolved = Path(os.path.realpath(parsed.path))
            for root in self._files:
                if root in resolved.parents:
                    return f"file://{root}", resolved.relative_to(root).as_posix()
        raise refused

    def open(self, uri: str, *, field: str, **s3_options: Any) -> tuple[ObjectStore, str]:
        """The store holding ``uri`` and its key there, after :meth:`locate` has confined it."""
        store_url, key = self.locate(uri, field=field)
        return open_store(store_url, **s3_options), key


def _valid_key(key: str) -> bool:
    parts = key.split("/")
    return bool(key) and not key.startswith("/") and not any(p in ("", ".", "..") for p in parts)


def _check_key(key: str) -> str:
    if not _valid_key(key):
        raise BadRequest(f"invalid object key {key!r}")
    return key


class FileStore:
    """A folder on a local or mounted volume."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.url = f"file://{self.root}"

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def uri(self, key: str) -> str:
        return f"file://{self._path(key)}"

    @contextlib.contextmanager
    def open_write(self, key: str, content_type: str = "application/octet-stream") -> Iterator[IO[bytes]]:
        target = self._path(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        except OSError as exc:
            raise ObjectStoreError(f"cannot write {target}: {exc.strerror}") from exc
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o640)
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        with self.open_write(key, content_type) as handle:
            handle.write(data)

    def put_file(self, key: str, path: Path, content_type: str = "application/octet-stream") -> None:
        with self.open_write(key, content_type) as handle, path.open("rb") as source:
            shutil.copyfileobj(source, handle, 1024 * 1024)

    def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound(f"no object {key!r} in {self.url}") from None
        except OSError as exc:
            raise ObjectStoreError(f"cannot read {path}: {exc.strerror}") from exc

    def download(self, key: str, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = self.get_bytes(key)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> Iterator[str]:
        base = self.root
        if not base.exists():
            return
        for path in sorted(base.rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                key = path.relative_to(base).as_posix()
                if key.startswith(prefix):
                    yield key

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


class S3Store:
    """A bucket (and optional prefix) in S3 or an S3-compatible server, through boto3.

    Credentials come from boto3's default chain (IRSA / Pod Identity on EKS, env, profile);
    ``endpoint_url`` points at an S3-compatible server (tests use moto's server mode).
    """

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None,
                 region_name: str | None = None, client: Any = None) -> None:
        import boto3
        from botocore.config import Config as BotoConfig

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}" + (f"/{self.prefix}" if self.prefix else "")
        endpoint_url = endpoint_url or os.environ.get("DICOMLAB_S3_ENDPOINT_URL") or None
        self.client = client or boto3.client(
            "s3", endpoint_url=endpoint_url, region_name=region_name or os.environ.get("AWS_REGION"),
            config=BotoConfig(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=5, read_timeout=60),
        )

    def _key(self, key: str) -> str:
        _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def _error(self, action: str, key: str, exc: Exception) -> ObjectStoreError:
        from botocore.exceptions import ClientError

        reason = type(exc).__name__
        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            reason = f"{err.get('Code', 'error')}: {err.get('Message', '')}".strip(": ")
        return ObjectStoreError(f"S3 {action} s3://{self.bucket}/{key} failed ({reason})")

    @contextlib.contextmanager
    def open_write(self, key: str, content_type: str = "application/octet-stream") -> Iterator[IO[bytes]]:
        # Spool to a temp file: small objects stay in memory, large ones go to disk, then upload once.
        # upload_fileobj switches to a multipart upload above the threshold and aborts it on failure,
        # so nothing partial is ever visible under the key.
        with tempfile.SpooledTemporaryFile(max_size=MULTIPART_THRESHOLD_BYTES) as spool:
            yield spool  # type: ignore[misc]
            spool.seek(0)
            self._upload(key, spool, content_type)

    def _upload(self, key: str, handle: IO[bytes], content_type: str) -> None:
        from boto3.s3.transfer import TransferConfig
        from botocore.exceptions import BotoCoreError, ClientError

        config = TransferConfig(multipart_threshold=MULTIPART_THRESHOLD_BYTES,
                                multipart_chunksize=MULTIPART_THRESHOLD_BYTES)
        try:
            self.client.upload_fileobj(handle, self.bucket, self._key(key),
                                       ExtraArgs={"ContentType": content_type}, Config=config)
        except (BotoCoreError, ClientError) as exc:
            raise self._error("upload to", self._key(key), exc) from exc
        except Exception as exc:  # s3transfer wraps client errors in its own types
            cause = exc.__cause__ if isinstance(exc.__cause__, ClientError) else exc
            raise self._error("upload to", self._key(key), cause) from exc

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self._upload(key, io.BytesIO(data), content_type)

    def put_file(self, key: str, path: Path, content_type: str = "application/octet-stream") -> None:
        with path.open("rb") as handle:
            self._upload(key, handle, content_type)

    def get_bytes(self, key: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            data: bytes = response["Body"].read()
            return data
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise NotFound(f"no object s3://{self.bucket}/{self._key(key)}") from None
            raise self._error("read of", self._key(key), exc) from exc
        except BotoCoreError as exc:
            raise self._error("read of", self._key(key), exc) from exc

    def download(self, key: str, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(self.get_bytes(key))
        os.replace(tmp, path)

    def exists(self, key: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise self._error("head of", self._key(key), exc) from exc
        except BotoCoreError as exc:
            raise self._error("head of", self._key(key), exc) from exc

    def list(self, prefix: str = "") -> Iterator[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        full = (self.prefix + "/" if self.prefix else "") + prefix
        strip = len(self.prefix) + 1 if self.prefix else 0
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
                for item in page.get("Contents", []):
                    yield item["Key"][strip:]
        except (BotoCoreError, ClientError) as exc:
            raise self._error("list of", full, exc) from exc

    def delete(self, key: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except (BotoCoreError, ClientError) as exc:
            raise self._error("delete of", self._key(key), exc) from exc
