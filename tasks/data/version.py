"""Versioning: validate, split, content-address and commit a dataset to a data store.

Steps (see :mod:`tuneops.tasks.data.layout` for the layout and the digest definition):

1. Fingerprint the inputs by ``(path, size, mtime_ns, ctime_ns, inode)`` plus everything that
   shapes the output (name, split ratios and seed, system-prompt policy, limits, store). If the
   local digest cache knows the fingerprint and the store holds that version's manifest, return
   it at once: an unchanged 500 MB file is not even re-read.
2. Otherwise validate every input (streaming) and, in the same read, write the canonical split
   files to a temporary folder, hashing as they are written; any error stops here with the first
   problem's file and line, and the temporary folder is dropped. Compute the version digest.
4. If the store already has the manifest for that digest, write nothing. Otherwise upload the
   splits, then the manifest last: a version without a manifest is invisible to readers and is
   simply overwritten by the next attempt.

Rows that came through review (their input file has a ``<file>.provenance`` sidecar) get their
provenance recorded in the version's ``provenance.jsonl``, summarised in the manifest (see
:mod:`tuneops.tasks.data.provenance`).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from tuneops.errors import DatasetError, StoreError, UsageError
from tuneops.spec import Spec, SplitConfig, SystemPromptConfig
from tuneops.tasks.data import provenance
from tuneops.tasks.data.layout import (
    TEST,
    VALIDATION,
    check_name,
    manifest_key,
    split_key,
    version_digest,
    version_prefix,
)
from tuneops.tasks.data.report import ValidationReport
from tuneops.tasks.data.routing import TOKENS_PER_SYSTEM_MESSAGE, RoutedChunk, RoutingPlan
from tuneops.tasks.data.scan import Progress, scan_file
from tuneops.tasks.data.sources import resolve_source
from tuneops.tasks.data.store import DataStore
from tuneops.tasks.data.tokens import ENCODING_NAME, count_tokens
from tuneops.tasks.data.types import SPLIT_NAMES, DatasetVersion, SplitFile
from tuneops.tasks.data.validate import ValidationOptions

MANIFEST_SCHEMA = "tuneops.dataset/v1"


@dataclass(frozen=True)
class DatasetSources:
    """The user's files: ``train`` always; ``validation``/``test`` when given (else carved)."""

    train: Path
    validation: Path | None = None
    test: Path | None = None

    def items(self) -> list[tuple[str, Path]]:
        pairs = (("train", self.train), ("validation", self.validation), ("test", self.test))
        return [(split, Path(path)) for split, path in pairs if path is not None]


def options_from_spec(spec: Spec) -> ValidationOptions:
    """Validation options implied by a spec's data and fine-tune sections."""
    epochs = spec.finetune.hyperparameters.n_epochs
    return ValidationOptions(
        max_tokens_per_example=spec.data.max_tokens_per_example,
        require_system_prompt=spec.data.system_prompt.policy == "require",
        n_epochs=None if epochs == "auto" else int(epochs),
    )


def version_files(
    sources: DatasetSources,
    *,
    name: str,
    store: DataStore,
    home: Path,
    split: SplitConfig | None = None,
    options: ValidationOptions | None = None,
    system_prompt: SystemPromptConfig | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
    sidecars: Sequence[Path] | None = None,
) -> DatasetVersion:
    """Version ``sources`` as dataset ``name`` in ``store``; ``home`` holds caches and temp files.

    ``sidecars`` are the review provenance files of the inputs (default: those beside the
    source files); rows found in them get per-row provenance in the version.

    Returns the version, with ``created`` False when it already existed (nothing was written).

    Raises:
        UsageError: a bad name or a missing file.
        DatasetError: a file is not valid fine-tuning data (first problem named with its line).
        StoreError: the store failed (``TransientStoreError`` when worth retrying).
    """
    try:
        check_name(name)
    except ValueError as exc:
        raise UsageError(str(exc), hint="pass --name or set data.name in tuneops.yaml") from exc
    split = split or SplitConfig()
    options = options or ValidationOptions()
    system_prompt = system_prompt or SystemPromptConfig()
    for _, path in sources.items():
        if not path.is_file():
            raise UsageError(f"{path}: no such file", hint="check data.train/validation/test in tuneops.yaml")
    if sidecars is None:
        sidecars = [side for _, path in sources.items() for side in provenance.sidecars_for(path)]
    fingerprint = _fingerprint(sources, name, store, split, options, system_prompt, sidecars)
    cache_file = home / "cache" / "digests" / f"{fingerprint}.json"
    cached = _cached_version(cache_file, name, store)
    if cached is not None:
        return cached

    work = home / "tmp"
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work, prefix="version-") as tmp:
        writers = _SplitWriters(Path(tmp))
        reports = {}
        for split_name, path in sources.items():
            plan = _plan(split_name, sources, split, system_prompt)
            reports[split_name] = _validate_and_route(
                split_name, path, options, plan, writers, workers, progress
            )
        written = writers.close()
        digest = version_digest({s: info["sha256"] for s, info in written.items()})
        key = manifest_key(name, digest)
        if store.exists(key):
            version = version_from_manifest(store, json.loads(store.read_bytes(key)))
        else:
            manifest = _manifest(name, digest, sources, written, reports, split, system_prompt, options)
            rows = provenance.match_rows(
                {s: Path(tmp) / f"{s}.jsonl" for s in written},
                provenance.load_sidecars(sidecars),
                system_prompt.text if system_prompt.policy == "inject" else None,
            )
            if rows:  # before the manifest: a manifest never names a file that is not there
                data = provenance.encode(rows)
                store.put_bytes(provenance.provenance_key(name, digest), data)
                manifest["provenance"] = provenance.summarize(rows, data)
            for split_name in written:
                split_file = Path(tmp) / f"{split_name}.jsonl"
                store.put_file(split_key(name, digest, split_name), split_file, handover=True)
            store.put_bytes(key, json.dumps(manifest, indent=2, sort_keys=True).encode())
            version = version_from_manifest(store, manifest, created=True)
    _write_cache(cache_file, name, version.digest)
    return version


def version_from_spec(
    spec: Spec,
    *,
    store: DataStore,
    home: Path,
    workers: int | None = None,
    progress: Progress | None = None,
    s3_endpoint_url: str | None = None,
) -> DatasetVersion:
    """Version the data a spec (loaded with :func:`tuneops.spec.load_spec`) points at.

    Each of ``data.train``/``validation``/``test`` may be a file, a folder, a glob or an ``s3://``
    prefix of JSONL files (see :mod:`tuneops.tasks.data.sources`): their union is versioned.
    """
    data = spec.data

    def local(path: Path | None) -> Path | None:
        return None if path is None else resolve_source(path, home, s3_endpoint_url=s3_endpoint_url)

    sidecars = [
        side for path in (data.train, data.validation, data.test) for side in provenance.sidecars_for(path)
    ]
    return version_files(
        DatasetSources(
            train=local(data.train) or data.train, validation=local(data.validation), test=local(data.test)
        ),
        name=spec.dataset_name,
        store=store,
        home=home,
        split=data.split,
        options=options_from_spec(spec),
        system_prompt=data.system_prompt,
        workers=workers,
        progress=progress,
        sidecars=sidecars,
    )


def _fingerprint(
    sources: DatasetSources,
    name: str,
    store: DataStore,
    split: SplitConfig,
    options: ValidationOptions,
    system_prompt: SystemPromptConfig,
    sidecars: Sequence[Path] = (),
) -> str:
    files = []
    for split_name, path in sources.items():
        st = path.stat()
        files.append([split_name, str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino])
    key = {
        "v": 1,
        "name": name,
        "store": store.uri,
        "files": files,
        "split": split.model_dump(),
        "system_prompt": system_prompt.model_dump(),
        "options": {k: v for k, v in options.__dict__.items() if k != "max_problems"},
        "encoding": ENCODING_NAME,
    }
    if sidecars:  # kept out of the key otherwise, so versions made before provenance stay cached
        key["provenance"] = provenance.sidecar_identity(sidecars)
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _cached_version(cache_file: Path, name: str, store: DataStore) -> DatasetVersion | None:
    try:
        digest = json.loads(cache_file.read_text())["digest"]
    except (OSError, ValueError, KeyError):
        return None
    key = manifest_key(name, digest)
    try:
        if not store.exists(key):
            return None
        return version_from_manifest(store, json.loads(store.read_bytes(key)))
    except (StoreError, ValueError):
        return None


def _write_cache(cache_file: Path, name: str, digest: str) -> None:
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"name": name, "digest": digest}))
        tmp.replace(cache_file)
    except OSError:  # the cache is an optimisation; failing to write it changes nothing
        return


def _validate_and_route(
    split_name: str,
    path: Path,
    options: ValidationOptions,
    plan: RoutingPlan,
    writers: _SplitWriters,
    workers: int | None,
    progress: Progress | None,
) -> ValidationReport:
    """Validate one input file while routing its lines to the split files (one read of the file).

    Raises:
        DatasetError: the file has errors (the first one named with its line).
    """
    if split_name != "train":  # held-out files may be small
        options = ValidationOptions(**{**options.__dict__, "min_examples": 1, "recommended_examples": 0})
    report = scan_file(path, options, workers=workers, progress=progress, routing=(plan, writers.add)).report
    if not report.valid:
        first = report.first_errors(1)[0]
        where = f"{path}:{first.line}" if first.line else str(path)
        raise DatasetError(
            f"{where}: {first.message} [{first.code}]",
            hint=f"{report.errors} error(s) in {split_name}; run 'tuneops data validate {path}'",
        )
    return report


def _plan(
    split_name: str, sources: DatasetSources, split: SplitConfig, system_prompt: SystemPromptConfig
) -> RoutingPlan:
    """Given validation/test files go whole to their split; train is carved unless both are given."""
    inject = system_prompt.text if system_prompt.policy == "inject" and system_prompt.text else None
    inject_tokens = TOKENS_PER_SYSTEM_MESSAGE + count_tokens("system") + count_tokens(inject) if inject else 0
    if split_name != "train":
        only = VALIDATION if split_name == "validation" else TEST
        return RoutingPlan(only=only, inject=inject, inject_tokens=inject_tokens)
    return RoutingPlan(
        seed=split.seed,
        validation=0.0 if sources.validation is not None else split.validation,
        test=0.0 if sources.test is not None else split.test,
        inject=inject,
        inject_tokens=inject_tokens,
    )


class _SplitWriters:
    """Writes the canonical split files from routed chunks, hashing and counting as it goes."""

    def __init__(self, folder: Path) -> None:
        self.paths = [folder / f"{name}.jsonl" for name in SPLIT_NAMES]
        self.handles: list[BinaryIO] = [path.open("wb") for path in self.paths]
        self.hashes = [hashlib.sha256() for _ in SPLIT_NAMES]
        self.rows = [0] * len(SPLIT_NAMES)
        self.tokens = [0] * len(SPLIT_NAMES)
        self.bytes = [0] * len(SPLIT_NAMES)

    def add(self, chunk: RoutedChunk) -> None:
        for index, data in enumerate(chunk.data):
            if data:
                self.hashes[index].update(data)
                self.handles[index].write(data)
                self.bytes[index] += len(data)
            self.rows[index] += chunk.rows[index]
            self.tokens[index] += chunk.tokens[index]

    def close(self) -> dict[str, dict[str, Any]]:
        """``{split: info}`` for the non-empty splits."""
        for handle in self.handles:
            handle.close()
        return {
            name: {
                "file": self.paths[i].name,
                "path": self.paths[i],
                "sha256": self.hashes[i].hexdigest(),
                "rows": self.rows[i],
                "tokens": self.tokens[i],
                "bytes": self.bytes[i],
            }
            for i, name in enumerate(SPLIT_NAMES)
            if self.rows[i] > 0
        }


def _manifest(
    name: str,
    digest: str,
    sources: DatasetSources,
    written: dict[str, dict[str, Any]],
    reports: dict[str, ValidationReport],
    split: SplitConfig,
    system_prompt: SystemPromptConfig,
    options: ValidationOptions,
) -> dict[str, Any]:
    return {
        "schema": MANIFEST_SCHEMA,
        "name": name,
        "digest": digest,
        "digest_definition": "sha256('tuneops-dataset-v1\\n' + '<split>\\t<split sha256>\\n' per non-empty "
        "split in order train, validation, test)",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "encoding": ENCODING_NAME,
        "source": {split_name: str(path.resolve()) for split_name, path in sources.items()},
        "split": {
            "seed": split.seed,
            "validation": split.validation,
            "test": split.test,
            "carved_from_train": [s for s in ("validation", "test") if getattr(sources, s) is None],
            "method": "blake2b(seed || line) per row, see tuneops.tasks.data.layout",
        },
        "system_prompt_policy": system_prompt.policy,
        "max_tokens_per_example": options.max_tokens_per_example,
        "splits": {
            split_name: {k: v for k, v in info.items() if k != "path"} for split_name, info in written.items()
        },
        "rows": sum(info["rows"] for info in written.values()),
        "tokens": sum(info["tokens"] for info in written.values()),
        "validation_report": {split_name: report.summary() for split_name, report in reports.items()},
    }


def version_from_manifest(
    store: DataStore, manifest: dict[str, Any], created: bool = False
) -> DatasetVersion:
    name, digest = manifest["name"], manifest["digest"]
    splits = {
        split_name: SplitFile(
            name=split_name,  # type: ignore[arg-type]
            uri=store.uri_for(split_key(name, digest, split_name)),
            sha256=info["sha256"],
            rows=int(info["rows"]),
            tokens=int(info["tokens"]),
        )
        for split_name, info in sorted(
            manifest["splits"].items(), key=lambda item: SPLIT_NAMES.index(item[0])
        )
    }
    return DatasetVersion(
        name=name,
        digest=digest,
        uri=store.uri_for(version_prefix(name, digest)),
        splits=splits,
        manifest=manifest,
        created=created,
    )
