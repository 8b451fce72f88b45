"""Versioning: content addressing, no-op re-versioning, splits, stores, crash safety, lineage."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest

from tuneops.errors import DatasetError, UsageError, VersionNotFoundError
from tuneops.settings import TuneopsSettings
from tuneops.spec import SplitConfig, SystemPromptConfig
from tuneops.tasks.data.catalog import list_versions, materialize_split, resolve_dataset_version
from tuneops.tasks.data.layout import assign_split, version_digest
from tuneops.tasks.data.store import LocalStore, open_store
from tuneops.tasks.data.version import DatasetSources, version_files

from .conftest import example, valid_rows, write_jsonl


def version(path: Path, store, home: Path, **kwargs):
    return version_files(DatasetSources(path), name="claims", store=store, home=home, **kwargs)


def test_same_bytes_same_digest_and_no_writes(tmp_path: Path):
    data = write_jsonl(tmp_path / "train.jsonl", valid_rows(100))
    store = LocalStore(tmp_path / "store")
    first = version(data, store, tmp_path / "home")
    assert first.created and store.writes == 4  # three splits + manifest
    again = version(data, store, tmp_path / "home")
    assert (again.digest, again.created, store.writes) == (first.digest, False, 4)
    # without the digest cache the content is re-read, and still nothing is written
    copy = write_jsonl(tmp_path / "copy.jsonl", valid_rows(100))
    third = version(copy, store, tmp_path / "other-home")
    assert (third.digest, third.created, store.writes) == (first.digest, False, 4)


def test_one_changed_byte_is_a_new_version(tmp_path: Path):
    path = write_jsonl(tmp_path / "train.jsonl", valid_rows(100))
    store = LocalStore(tmp_path / "store")
    first = version(path, store, tmp_path / "home")
    text = path.read_text()
    path.write_text(text.replace("case 42.", "case 4x."))
    second = version(path, store, tmp_path / "home")
    assert second.created and second.digest != first.digest
    assert {v.digest for v in list_versions(store, "claims")} == {first.digest, second.digest}


def test_splits_are_deterministic_disjoint_and_complete(tmp_path: Path):
    path = write_jsonl(tmp_path / "train.jsonl", valid_rows(400))
    store = LocalStore(tmp_path / "store")
    v = version(path, store, tmp_path / "home", split=SplitConfig(validation=0.1, test=0.2, seed=3))
    files = {
        name: Path(materialize_split(v, name, _settings(tmp_path))).read_text().splitlines()
        for name in v.splits
    }
    assert sum(len(rows) for rows in files.values()) == 400
    assert not set(files["train"]) & set(files["test"])
    assert 40 <= len(files["test"]) <= 120 and 10 <= len(files["validation"]) <= 70
    assert v.splits["train"].rows == len(files["train"])
    assert v.manifest["rows"] == 400 and v.manifest["split"]["seed"] == 3
    other_seed = version(path, store, tmp_path / "home", split=SplitConfig(seed=4))
    assert other_seed.digest != v.digest


def test_digest_is_defined_over_split_hashes(tmp_path: Path):
    path = write_jsonl(tmp_path / "train.jsonl", valid_rows(60))
    v = version(path, LocalStore(tmp_path / "store"), tmp_path / "home")
    assert v.digest == version_digest({name: s.sha256 for name, s in v.splits.items()})
    assert assign_split(b"x", 1, 0.0, 0.0) == 0


def test_explicit_validation_and_test_files(tmp_path: Path):
    train = write_jsonl(tmp_path / "train.jsonl", valid_rows(50))
    held = write_jsonl(tmp_path / "val.jsonl", [example(1000 + i) for i in range(5)])
    v = version_files(
        DatasetSources(train, validation=held),
        name="claims",
        store=LocalStore(tmp_path / "store"),
        home=tmp_path / "home",
        split=SplitConfig(validation=0.3, test=0.0),
    )
    assert v.splits["validation"].rows == 5 and v.splits["train"].rows == 50 and "test" not in v.splits


def test_invalid_data_is_refused_naming_the_line(tmp_path: Path):
    path = write_jsonl(tmp_path / "train.jsonl", valid_rows(20), raw=['{"messages": [{"role": "bot"}]}'])
    store = LocalStore(tmp_path / "store")
    with pytest.raises(DatasetError) as caught:
        version(path, store, tmp_path / "home")
    assert "train.jsonl:21" in caught.value.one_line()
    assert store.writes == 0
    with pytest.raises(UsageError):
        version_files(DatasetSources(path), name="bad name", store=store, home=tmp_path)


def test_inject_policy_adds_the_system_prompt(tmp_path: Path):
    path = write_jsonl(tmp_path / "train.jsonl", valid_rows(20, system=None))
    v = version(
        path,
        LocalStore(tmp_path / "store"),
        tmp_path / "home",
        split=SplitConfig(validation=0, test=0),
        system_prompt=SystemPromptConfig(policy="inject", text="Be brief."),
    )
    first = json.loads(Path(materialize_split(v, "train", _settings(tmp_path))).read_text().splitlines()[0])
    assert first["messages"][0] == {"role": "system", "content": "Be brief."}


def test_resolve_and_not_found(tmp_path: Path):
    store = LocalStore(tmp_path / "store")
    v = version(write_jsonl(tmp_path / "t.jsonl", valid_rows(30)), store, tmp_path / "home")
    assert resolve_dataset_version(store, "claims").digest == v.digest
    assert resolve_dataset_version(store, f"claims@{v.digest[:8]}").digest == v.digest
    with pytest.raises(VersionNotFoundError):
        resolve_dataset_version(store, "claims@abcdef12")
    with pytest.raises(VersionNotFoundError):
        resolve_dataset_version(store, "other")
    with pytest.raises(UsageError):
        resolve_dataset_version(store, "claims@ab")


def _settings(tmp_path: Path, **kwargs) -> TuneopsSettings:
    return TuneopsSettings(project_dir=tmp_path, **kwargs)


def test_s3_versioning_counts_puts_and_materializes(tmp_path: Path, s3_server, s3_bucket):
    client = boto3.client("s3", endpoint_url=s3_server.endpoint_url)
    puts: list[str] = []
    for operation in ("PutObject", "CreateMultipartUpload"):
        client.meta.events.register(
            f"provide-client-params.s3.{operation}", lambda params, **_: puts.append(params["Key"])
        )
    store = open_store(f"s3://{s3_bucket}/data", s3_client=client)
    path = write_jsonl(tmp_path / "train.jsonl", valid_rows(80))
    first = version(path, store, tmp_path / "home")
    assert first.uri.startswith(f"s3://{s3_bucket}/data/datasets/claims/")
    assert len(puts) == 4 and puts[-1].endswith("manifest.json")  # manifest last
    again = version(path, store, tmp_path / "other-home")  # no cache: re-hashed, still no upload
    assert again.digest == first.digest and len(puts) == 4
    settings = _settings(
        tmp_path, data_store_uri=f"s3://{s3_bucket}/data", s3_endpoint_url=s3_server.endpoint_url
    )
    local = materialize_split(first, "test", settings, store=store)
    assert local.is_relative_to(settings.state_home / "cache")
    assert local.read_text().count("\n") == first.splits["test"].rows
    assert materialize_split(first, "test", settings, store=store) == local


KILLED_WRITER = """
import sys, time
from pathlib import Path
from tuneops.tasks.data.store import LocalStore
from tuneops.tasks.data.version import DatasetSources, version_files

class SlowStore(LocalStore):
    def put_file(self, key, path, **kwargs):
        super().put_file(key, path, **kwargs)
        Path(sys.argv[3]).write_text(key)  # tell the test a split is committed
        time.sleep(60)                      # ...and get killed before the manifest

version_files(DatasetSources(Path(sys.argv[1])), name="claims", store=SlowStore(Path(sys.argv[2])),
              home=Path(sys.argv[2]) / "home")
"""


def kill_when_signalled(program: str, args: list[str], signal_file: Path, what: str) -> None:
    """Run ``program`` and SIGKILL it as soon as it creates ``signal_file`` (it has ``what``)."""
    process = subprocess.Popen([sys.executable, "-c", program, *args])
    try:
        deadline = time.monotonic() + 180
        while not signal_file.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert signal_file.exists(), f"the writer never {what}"
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()


@pytest.mark.slow
def test_killed_writer_leaves_no_half_version(tmp_path: Path):
    path = write_jsonl(tmp_path / "train.jsonl", valid_rows(200))
    root, signal_file = tmp_path / "store", tmp_path / "progress"
    args = [str(path), str(root), str(signal_file)]
    kill_when_signalled(KILLED_WRITER, args, signal_file, "committed a split")
    store = LocalStore(root)
    assert store.list("datasets")  # a split landed...
    assert list_versions(store) == []  # ...but no version is visible without its manifest
    finished = version(path, store, tmp_path / "home")
    assert finished.created and [v.digest for v in list_versions(store)] == [finished.digest]
    assert not [p for p in root.rglob("*") if ".tmp-" in p.name]


KILLED_S3_UPLOADER = """
import sys, time
from pathlib import Path
import boto3
from tuneops.tasks.data.store import open_store
from tuneops.tasks.data.version import DatasetSources, version_files

path, endpoint, bucket, signal_file, home = sys.argv[1:]
client = boto3.client("s3", endpoint_url=endpoint)

def slow_network(**_):  # each part takes a while, as over a slow link: the test kills us mid-upload
    Path(signal_file).touch()
    time.sleep(1.0)

client.meta.events.register("before-send.s3.UploadPart", slow_network)
store = open_store(f"s3://{bucket}/data", s3_client=client)
version_files(DatasetSources(Path(path)), name="claims", store=store, home=Path(home))
"""


@pytest.mark.slow
def test_writer_killed_mid_upload_to_s3_leaves_no_half_version(tmp_path: Path, s3_server, s3_bucket):
    """SIGKILL while a split is half uploaded (a multipart upload under way) to moto's S3 server."""
    # a train split over boto3's 8 MB multipart threshold
    path = write_jsonl(tmp_path / "train.jsonl", valid_rows(70_000))
    signal_file = tmp_path / "uploading"
    args = [str(path), s3_server.endpoint_url, s3_bucket, str(signal_file), str(tmp_path / "home-killed")]
    kill_when_signalled(KILLED_S3_UPLOADER, args, signal_file, "started uploading a part")
    client = boto3.client("s3", endpoint_url=s3_server.endpoint_url)
    assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads")  # killed mid-upload indeed
    store = open_store(f"s3://{s3_bucket}/data", s3_client=client)
    assert not [key for key in store.list("datasets") if key.endswith("train.jsonl")]  # no partial object
    assert list_versions(store) == []
    finished = version(path, store, tmp_path / "home")
    assert finished.created and [v.digest for v in list_versions(store)] == [finished.digest]
    assert store.read_bytes(f"datasets/claims/{finished.digest}/train.jsonl").count(b"\n") == (
        finished.splits["train"].rows
    )
