"""The local store and the S3 store (moto's server over real HTTP) pass the same contract."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from tuneops.errors import StoreError, UsageError
from tuneops.tasks.data.store import DataStore, LocalStore, S3Store, TransientStoreError, open_store


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DataStore]:
    if request.param == "file":
        yield open_store((tmp_path / "store").as_uri())
    else:
        server = request.getfixturevalue("s3_server")
        bucket = request.getfixturevalue("s3_bucket")
        yield open_store(f"s3://{bucket}/team/data", s3_endpoint_url=server.endpoint_url)


def test_put_read_exists_and_count_writes(store: DataStore, tmp_path: Path):
    assert not store.exists("datasets/a/1/manifest.json")
    store.put_bytes("datasets/a/1/manifest.json", b'{"x": 1}')
    source = tmp_path / "train.jsonl"
    source.write_bytes(b"line\n" * 1000)
    store.put_file("datasets/a/1/train.jsonl", source)
    assert store.writes == 2
    assert store.exists("datasets/a/1/manifest.json") and store.exists("datasets/a/1/train.jsonl")
    assert store.read_bytes("datasets/a/1/manifest.json") == b'{"x": 1}'
    dest = tmp_path / "out" / "copy.jsonl"
    store.download("datasets/a/1/train.jsonl", dest)
    assert dest.read_bytes() == source.read_bytes()


def test_list_is_recursive_and_relative(store: DataStore):
    for key in ("datasets/a/1/manifest.json", "datasets/a/2/train.jsonl", "datasets/b/1/manifest.json"):
        store.put_bytes(key, b"{}")
    assert store.list("datasets/a") == ["datasets/a/1/manifest.json", "datasets/a/2/train.jsonl"]
    assert len(store.list("datasets")) == 3
    assert store.list("datasets/zzz") == []


def test_overwrite_replaces_whole_object(store: DataStore):
    store.put_bytes("k/v.json", b"first version, long")
    store.put_bytes("k/v.json", b"second")
    assert store.read_bytes("k/v.json") == b"second"


def test_missing_object_is_a_store_error(store: DataStore, tmp_path: Path):
    with pytest.raises(StoreError):
        store.read_bytes("nope/missing.json")
    with pytest.raises(StoreError):
        store.download("nope/missing.json", tmp_path / "x")


def test_uris_name_the_scheme(store: DataStore):
    uri = store.uri_for("datasets/a/1/train.jsonl")
    assert uri.startswith(("file://", "s3://")) and uri.endswith("datasets/a/1/train.jsonl")


def test_local_store_leaves_no_temp_files_and_rejects_escapes(tmp_path: Path):
    store = LocalStore(tmp_path)
    store.put_bytes("a/b.json", b"{}")
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["b.json"]
    with pytest.raises(UsageError):
        store.put_bytes("../escape", b"x")


def test_unreachable_s3_is_transient(tmp_path: Path):
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url="http://127.0.0.1:9",
        config=Config(retries={"max_attempts": 1}, connect_timeout=1),
        aws_access_key_id="x",
        aws_secret_access_key="x",
        region_name="us-east-1",
    )
    with pytest.raises(TransientStoreError):
        S3Store("bucket", "p", client).exists("k")


def test_unknown_scheme_is_a_usage_error():
    with pytest.raises(UsageError):
        open_store("gs://bucket/x")


def test_a_handed_over_file_is_stored_whole_and_an_ordinary_one_is_copied(store: DataStore, tmp_path: Path):
    handed = tmp_path / "handed.jsonl"
    handed.write_bytes(b"a\n" * 100)
    store.put_file("datasets/h/1/train.jsonl", handed, handover=True)
    kept = tmp_path / "kept.jsonl"
    kept.write_bytes(b"b\n" * 100)
    store.put_file("datasets/h/2/train.jsonl", kept)
    kept.write_bytes(b"changed after the put\n")  # the store must not share the caller's file
    assert store.read_bytes("datasets/h/1/train.jsonl") == b"a\n" * 100
    assert store.read_bytes("datasets/h/2/train.jsonl") == b"b\n" * 100
    assert store.writes == 2
