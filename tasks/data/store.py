"""Data stores: a narrow interface, chosen by URI scheme (``file://`` or ``s3://``).

Everything a dataset version needs from storage is six operations on keys relative to the
store's root (``datasets/<name>/<digest>/train.jsonl``): ``exists``, ``put_file`` /
``put_bytes`` (atomic: readers see the whole object or nothing), ``read_bytes``, ``download``
and ``list``. Both implementations pass the same contract tests
(``tests/contract/test_data_stores.py``). ``writes`` counts objects written, so callers and
tests can check that re-versioning identical bytes writes nothing.

Atomicity: the local store writes a temporary sibling and ``os.replace``s it; S3 objects appear
only once a (multipart) upload completes. A version is committed by its manifest, written last.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

from tuneops.errors import StoreError, UsageError

TMP_MARKER = ".tmp-"


def _hard_link(source: Path, link: Path) -> bool:
    """Link ``link`` to ``source``'s bytes (no copy); False where the filesystem cannot."""
    try:
        os.link(source, link)
    except OSError:  # another filesystem, or links unsupported: the caller copies
        return False
    return True


class TransientStoreError(StoreError):
    """A store failure worth retrying: timeouts, dropped connections, throttling, 5xx."""


class DataStore(Protocol):
    """What the data stage needs from a store; keys are ``/``-separated and relative."""

    uri: str
    writes: int

    def exists(self, key: str) -> bool: ...

    def put_file(self, key: str, path: Path, *, handover: bool = False) -> None:
        """Store ``path``'s bytes under ``key``. ``handover``: the caller never touches ``path``
        again, so a store on the same disk may take the file over instead of copying it."""
        ...

    def put_bytes(self, key: str, data: bytes) -> None: ...

    def read_bytes(self, key: str) -> bytes: ...

    def download(self, key: str, dest: Path) -> None: ...

    def list(self, prefix: str) -> list[str]: ...

    def uri_for(self, key: str) -> str: ...

    def local_path(self, key: str) -> Path | None: ...


class LocalStore:
    """A folder on local disk (``file://``): the embedded default under ``.tuneops/data``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.uri = self.root.resolve().as_uri()
        self.writes = 0

    def _path(self, key: str) -> Path:
        parts = [p for p in key.split("/") if p]
        if not parts or any(p in (".", "..") for p in parts):
            raise UsageError(f"invalid store key {key!r}")
        return self.root.joinpath(*parts)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def put_file(self, key: str, path: Path, *, handover: bool = False) -> None:
        target = self._path(key)
        tmp = self._tmp_sibling(target)
        try:
            if not (handover and _hard_link(path, tmp)):
                shutil.copyfile(path, tmp)
            self._commit(tmp, target)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StoreError(f"{self.uri_for(key)}: cannot write ({exc.strerror or exc})") from exc

    def put_bytes(self, key: str, data: bytes) -> None:
        target = self._path(key)
        tmp = self._tmp_sibling(target)
        try:
            tmp.write_bytes(data)
            self._commit(tmp, target)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StoreError(f"{self.uri_for(key)}: cannot write ({exc.strerror or exc})") from exc

    def _tmp_sibling(self, target: Path) -> Path:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"{target.parent}: cannot create ({exc.strerror or exc})") from exc
        for stale in target.parent.glob(f"{target.name}{TMP_MARKER}*"):  # left by a killed writer
            with contextlib.suppress(OSError):
                stale.unlink()
        return target.with_name(f"{target.name}{TMP_MARKER}{uuid.uuid4().hex}")

    def _commit(self, tmp: Path, target: Path) -> None:
        with tmp.open("rb+") as handle:
            os.fsync(handle.fileno())
        tmp.replace(target)
        self.writes += 1

    def read_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError as exc:
            raise StoreError(f"{self.uri_for(key)}: no such object") from exc
        except OSError as exc:
            raise StoreError(f"{self.uri_for(key)}: cannot read ({exc.strerror or exc})") from exc

    def download(self, key: str, dest: Path) -> None:
        source = self._path(key)
        if not source.is_file():
            raise StoreError(f"{self.uri_for(key)}: no such object")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)

    def list(self, prefix: str) -> list[str]:
        base = self.root.joinpath(*[p for p in prefix.split("/") if p]) if prefix.strip("/") else self.root
        if not base.is_dir():
            return []
        keys = [
            path.relative_to(self.root).as_posix()
            for path in base.rglob("*")
            if path.is_file() and TMP_MARKER not in path.name
        ]
        return sorted(keys)

    def uri_for(self, key: str) -> str:
        return self._path(key).resolve().as_uri()

    def local_path(self, key: str) -> Path | None:
        return self._path(key)


class S3Store:
    """An S3 bucket and prefix (``s3://bucket/prefix``), through boto3.

    ``client`` is a boto3 S3 client (the caller sets its endpoint, e.g. moto's server in tests).
    """

    def __init__(self, bucket: str, prefix: str, client: Any) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client
        self.uri = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self.writes = 0

    def _key(self, key: str) -> str:
        key = key.strip("/")
        return f"{self.prefix}/{key}" if self.prefix else key

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise _translate(exc, self.uri_for(key)) from exc
        except Exception as exc:
            raise _translate(exc, self.uri_for(key)) from exc
        return True

    def put_file(self, key: str, path: Path, *, handover: bool = False) -> None:
        try:
            self.client.upload_file(str(path), self.bucket, self._key(key))
        except Exception as exc:
            raise _translate(exc, self.uri_for(key)) from exc
        self.writes += 1

    def put_bytes(self, key: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        except Exception as exc:
            raise _translate(exc, self.uri_for(key)) from exc
        self.writes += 1

    def read_bytes(self, key: str) -> bytes:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
            return bytes(body.read())
        except Exception as exc:
            raise _translate(exc, self.uri_for(key)) from exc

    def download(self, key: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.client.download_file(self.bucket, self._key(key), str(dest))
        except Exception as exc:
            raise _translate(exc, self.uri_for(key)) from exc

    def list(self, prefix: str) -> list[str]:
        full = self._key(prefix) if prefix.strip("/") else self.prefix
        if full:
            full = full.rstrip("/") + "/"
        keys: list[str] = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full)
            for page in pages:
                keys.extend(item["Key"] for item in page.get("Contents", []))
        except Exception as exc:
            raise _translate(exc, self.uri_for(prefix)) from exc
        strip = len(self.prefix) + 1 if self.prefix else 0
        return sorted(key[strip:] for key in keys)

    def uri_for(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def local_path(self, key: str) -> Path | None:
        return None


def _translate(exc: Exception, where: str) -> StoreError:
    """Map botocore errors onto our tree; transient ones become :class:`TransientStoreError`."""
    from botocore.exceptions import (
        ClientError,
        ConnectionClosedError,
        EndpointConnectionError,
        NoCredentialsError,
        ReadTimeoutError,
    )

    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, EndpointConnectionError | ConnectionClosedError | ReadTimeoutError):
        return TransientStoreError(
            f"{where}: store unreachable ({exc})", hint="check TUNEOPS_S3_ENDPOINT_URL"
        )
    if isinstance(exc, NoCredentialsError):
        return StoreError(f"{where}: no S3 credentials", hint="set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY")
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        message = f"{where}: {error.get('Code', 'error')} ({error.get('Message', '')})"
        if status >= 500 or error.get("Code") in ("SlowDown", "Throttling", "RequestTimeout"):
            return TransientStoreError(message)
        if error.get("Code") in ("404", "NoSuchKey", "NotFound"):
            return StoreError(f"{where}: no such object")
        return StoreError(message)
    return StoreError(f"{where}: {type(exc).__name__}: {exc}")


def open_store(uri: str, *, s3_endpoint_url: str | None = None, s3_client: Any = None) -> DataStore:
    """The store for ``uri``: ``file:///path`` (or a plain path) or ``s3://bucket/prefix``.

    Raises:
        UsageError: the scheme is not supported.
    """
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        path = unquote(parsed.path) if parsed.scheme else uri
        return LocalStore(Path(path))
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise UsageError(f"data store URI {uri!r} names no bucket", hint="use s3://bucket/prefix")
        if s3_client is None:
            import boto3
            from botocore.config import Config

            s3_client = boto3.client(
                "s3",
                endpoint_url=s3_endpoint_url,
                config=Config(retries={"max_attempts": 3, "mode": "standard"}),
            )
        return S3Store(parsed.netloc, parsed.path, s3_client)
    raise UsageError(
        f"data store URI {uri!r}: unsupported scheme {parsed.scheme!r}",
        hint="use file:///path or s3://bucket/prefix in TUNEOPS_DATA_STORE_URI",
    )
