"""Data locations that name several files: a folder, a glob, an S3 prefix; their union is versioned."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tasks.data.conftest import valid_rows, write_jsonl
from tuneops.errors import UsageError
from tuneops.spec import load_spec
from tuneops.tasks.data.sources import is_collection, member_files, resolve_source, s3_uri_of
from tuneops.tasks.data.store import LocalStore
from tuneops.tasks.data.version import version_from_spec


def _spec(project: Path, train: str) -> Path:
    path = project / "tuneops.yaml"
    path.write_text(
        f"model: {{name: m, base_model: b}}\ndata: {{name: d, train: '{train}'}}\n", encoding="utf-8"
    )
    return path


def _version(project: Path, train: str, store: LocalStore, **kwargs: object):
    spec, _ = load_spec(_spec(project, train))
    return version_from_spec(spec, store=store, home=project / ".home", **kwargs)  # type: ignore[arg-type]


def test_a_single_file_is_used_as_it_is(tmp_path: Path) -> None:
    file = write_jsonl(tmp_path / "train.jsonl", valid_rows(3))
    assert resolve_source(file, tmp_path / "home") == file
    assert not is_collection(file)


def test_single_file_digest_is_unchanged_by_folder_support(tmp_path: Path) -> None:
    # The digest of a single-file spec is a function of its bytes only; the same rows as the
    # only member of a folder give the very same version.
    store = LocalStore(tmp_path / "store")
    write_jsonl(tmp_path / "one.jsonl", valid_rows(40))
    (tmp_path / "folder").mkdir()
    write_jsonl(tmp_path / "folder" / "one.jsonl", valid_rows(40))
    assert _version(tmp_path, "one.jsonl", store).digest == _version(tmp_path, "folder", store).digest


def test_folder_members_are_jsonl_files_in_relative_path_order(tmp_path: Path) -> None:
    folder = tmp_path / "train"
    (folder / "b").mkdir(parents=True)
    for name in ("b/2.jsonl", "a.jsonl", "c.jsonl", "notes.txt"):
        (folder / name).write_text("{}\n", encoding="utf-8")
    assert [p.relative_to(folder).as_posix() for p in member_files(folder)] == [
        "a.jsonl",
        "b/2.jsonl",
        "c.jsonl",
    ]


def test_union_handles_files_without_a_final_newline(tmp_path: Path) -> None:
    folder = tmp_path / "train"
    folder.mkdir()
    (folder / "1.jsonl").write_text('{"a": 1}', encoding="utf-8")
    (folder / "2.jsonl").write_text('{"a": 2}\n', encoding="utf-8")
    union = resolve_source(folder, tmp_path / "home")
    assert union.read_text(encoding="utf-8") == '{"a": 1}\n{"a": 2}\n'
    assert resolve_source(folder, tmp_path / "home") == union  # unchanged set: same file, not rewritten


def test_a_new_file_dropped_in_the_folder_makes_a_new_version_and_nothing_else_does(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    folder = tmp_path / "data"
    folder.mkdir()
    write_jsonl(folder / "2026-01.jsonl", valid_rows(30))
    first = _version(tmp_path, "data", store)
    assert _version(tmp_path, "data", store).digest == first.digest
    rows = [dict(r) for r in valid_rows(60)][30:]
    write_jsonl(folder / "2026-02.jsonl", rows)
    second = _version(tmp_path, "data", store)
    assert second.digest != first.digest
    assert sum(s.rows for s in second.splits.values()) == 60


def test_a_glob_names_its_matches(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    folder = tmp_path / "data"
    folder.mkdir()
    write_jsonl(folder / "claims-1.jsonl", valid_rows(20))
    write_jsonl(folder / "other.jsonl", valid_rows(5))
    version = _version(tmp_path, "data/claims-*.jsonl", store)
    assert sum(s.rows for s in version.splits.values()) == 20


def test_an_empty_folder_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match=r"no \.jsonl file"):
        resolve_source(tmp_path / "empty", tmp_path / "home")


def test_s3_uri_survives_the_spec_paths() -> None:
    assert s3_uri_of(Path("/project/s3:/bucket/claims/train")) == "s3://bucket/claims/train"
    assert s3_uri_of("s3://bucket/x/") == "s3://bucket/x/"
    assert s3_uri_of(Path("/project/train.jsonl")) is None


def test_an_s3_prefix_is_the_union_of_its_objects(tmp_path: Path, s3_server, s3_bucket: str) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=s3_server.endpoint_url)
    rows = valid_rows(50)
    for i, part in enumerate((rows[:25], rows[25:])):
        body = write_jsonl(tmp_path / f"p{i}.jsonl", part).read_bytes()
        client.put_object(Bucket=s3_bucket, Key=f"claims/train/part-{i}.jsonl", Body=body)
    client.put_object(Bucket=s3_bucket, Key="claims/train/README.md", Body=b"not data")
    store = LocalStore(tmp_path / "store")
    from_s3 = _version(
        tmp_path, f"s3://{s3_bucket}/claims/train", store, s3_endpoint_url=s3_server.endpoint_url
    )
    write_jsonl(tmp_path / "all.jsonl", rows)
    assert from_s3.digest == _version(tmp_path, "all.jsonl", store).digest
