"""Versioning: validate, split, content-address and commit a dataset to a data store.

Steps (see :mod:`tuneops.tasks.data.layout` for the layout and the digest definition):

1. Fingerprint the inputs by ``(path, size, mtime_ns, ctime_ns, inode)`` plus everything that
   shapes the output (name, split ratios and seed, system-prompt policy, limits, store). If the
   local digest cache knows the fingerprint and the store holds that version's manifest, return
   it at once: an unchanged 500 MB file is not even re-read.
2. Otherwise validate every input (streaming); any error stops here with the first problem's
   file and line.
3. Write the canonical split files to a temporary folder, hashing as they are written, and
   compute the version digest.
4. If the store already has the manifest for that digest, write nothing. Otherwise upload the
   splits, then the manifest last: a version without a manifest is invisible to readers and is
   simply overwritten by the next attempt.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from tuneops.errors import DatasetError, StoreError, UsageError
from tuneops.spec import Spec, SplitConfig, SystemPromptConfig
from tuneops.tasks.data.layout import (
    TEST,
    TRAIN,
    VALIDATION,
    assign_split,
    check_name,
    manifest_key,
    split_key,
    version_digest,
    version_prefix,
)
from tuneops.tasks.data.report import ValidationReport
from tuneops.tasks.data.scan import Progress, scan_file
from tuneops.tasks.data.store import DataStore
from tuneops.tasks.data.tokens import ENCODING_NAME, count_tokens
from tuneops.tasks.data.types import SPLIT_NAMES, DatasetVersion, SplitFile
from tuneops.tasks.data.validate import ValidationOptions

MANIFEST_SCHEMA = "tuneops.dataset/v1"
FLUSH_BYTES = 1 << 20


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
) -> DatasetVersion:
    """Version ``sources`` as dataset ``name`` in ``store``; ``home`` holds caches and temp files.

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
    fingerprint = _fingerprint(sources, name, store, split, options, system_prompt)
    cache_file = home / "cache" / "digests" / f"{fingerprint}.json"
    cached = _cached_version(cache_file, name, store)
    if cached is not None:
        return cached

    reports: dict[str, ValidationReport] = {}
    tokens: dict[str, Any] = {}
    for split_name, path in sources.items():
        file_options = options
        if split_name != "train":  # held-out files may be small
            file_options = ValidationOptions(
                **{**options.__dict__, "min_examples": 1, "recommended_examples": 0}
            )
        outcome = scan_file(path, file_options, workers=workers, progress=progress)
        if not outcome.report.valid:
            first = outcome.report.first_errors(1)[0]
            where = f"{path}:{first.line}" if first.line else str(path)
            raise DatasetError(
                f"{where}: {first.message} [{first.code}]",
                hint=f"{outcome.report.errors} error(s) in {split_name}; run 'tuneops data validate {path}'",
            )
        reports[split_name] = outcome.report
        tokens[split_name] = outcome.example_tokens

    work = home / "tmp"
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work, prefix="version-") as tmp:
        written = _write_splits(sources, Path(tmp), tokens, split, system_prompt)
        digest = version_digest({s: info["sha256"] for s, info in written.items()})
        key = manifest_key(name, digest)
        if store.exists(key):
            version = version_from_manifest(store, json.loads(store.read_bytes(key)))
        else:
            manifest = _manifest(name, digest, sources, written, reports, split, system_prompt, options)
            for split_name in written:
                store.put_file(split_key(name, digest, split_name), Path(tmp) / f"{split_name}.jsonl")
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
) -> DatasetVersion:
    """Version the data a spec (loaded with :func:`tuneops.spec.load_spec`) points at."""
    data = spec.data
    return version_files(
        DatasetSources(train=data.train, validation=data.validation, test=data.test),
        name=spec.dataset_name,
        store=store,
        home=home,
        split=data.split,
        options=options_from_spec(spec),
        system_prompt=data.system_prompt,
        workers=workers,
        progress=progress,
    )


def _fingerprint(
    sources: DatasetSources,
    name: str,
    store: DataStore,
    split: SplitConfig,
    options: ValidationOptions,
    system_prompt: SystemPromptConfig,
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


class _SplitWriter:
    """Writes one canonical split file, hashing and counting as it goes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.handle: BinaryIO = path.open("wb")
        self.sha = hashlib.sha256()
        self.rows = 0
        self.tokens = 0
        self.bytes = 0
        self._buffer: list[bytes] = []
        self._pending = 0

    def add(self, line: bytes, tokens: int) -> None:
        self._buffer.append(line)
        self._buffer.append(b"\n")
        self._pending += len(line) + 1
        self.rows += 1
        self.tokens += tokens
        if self._pending >= FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        data = b"".join(self._buffer)
        self._buffer.clear()
        self._pending = 0
        self.sha.update(data)
        self.handle.write(data)
        self.bytes += len(data)

    def close(self) -> dict[str, Any]:
        self.flush()
        self.handle.close()
        return {
            "file": self.path.name,
            "path": self.path,
            "sha256": self.sha.hexdigest(),
            "rows": self.rows,
            "tokens": self.tokens,
            "bytes": self.bytes,
        }


def _write_splits(
    sources: DatasetSources,
    folder: Path,
    tokens: dict[str, Any],
    split: SplitConfig,
    system_prompt: SystemPromptConfig,
) -> dict[str, dict[str, Any]]:
    """Write the canonical split files; return ``{split: info}`` for the non-empty ones."""
    writers = {name: _SplitWriter(folder / f"{name}.jsonl") for name in SPLIT_NAMES}
    carve_validation = 0.0 if sources.validation is not None else split.validation
    carve_test = 0.0 if sources.test is not None else split.test
    by_index = {TRAIN: writers["train"], VALIDATION: writers["validation"], TEST: writers["test"]}
    inject = system_prompt.text if system_prompt.policy == "inject" and system_prompt.text else None
    inject_tokens = 3 + count_tokens("system") + count_tokens(inject) if inject else 0
    for split_name, path in sources.items():
        counts = tokens[split_name]
        for n, line in enumerate(_canonical_lines(path)):
            example_tokens = int(counts[n]) if n < len(counts) else 0
            if inject is not None:
                line, added = _inject_system_prompt(line, inject)
                example_tokens += inject_tokens if added else 0
            if split_name == "train":
                writer = by_index[assign_split(line, split.seed, carve_validation, carve_test)]
            else:
                writer = writers[split_name]
            writer.add(line, example_tokens)
    written = {name: writer.close() for name, writer in writers.items()}
    return {name: info for name, info in written.items() if info["rows"] > 0}


def _canonical_lines(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        first = True
        for raw in handle:
            if first:
                first = False
                raw = raw.removeprefix(b"\xef\xbb\xbf")
            line = raw.strip()
            if line:
                yield line


def _inject_system_prompt(line: bytes, text: str) -> tuple[bytes, bool]:
    example = orjson.loads(line)
    messages = example.get("messages", [])
    if any(isinstance(m, dict) and m.get("role") == "system" for m in messages):
        return line, False
    example["messages"] = [{"role": "system", "content": text}, *messages]
    return orjson.dumps(example), True


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
