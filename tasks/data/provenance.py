"""Per-row provenance of a dataset version: which rows were synthetic, which came from production.

Reviewed rows are exported with a sidecar (``<file>.provenance``, see
:mod:`tuneops.tasks.data.review`) keyed by each row's sha256. When a version is made, the
sidecars next to its input files (the file itself, or every member of a folder or glob) are read,
every stored row is looked up by its own sha256 (and, when the version injected a system prompt,
by the sha256 of the row without it), and the matches are written to the version's
``provenance.jsonl`` (one line per row: split, row sha256, origin, teacher model, prompt template,
request id, feedback, reviewer, decision time). The manifest keeps only a summary (counts by
origin, teachers, templates, reviewers, and up to ``MAX_REQUEST_IDS`` request ids) plus the
file's name and sha256, so a manifest stays small however big the dataset is, while lineage can
still say which production requests and how many synthetic rows a model learnt from.

Rows with no sidecar entry (ordinary training data) have no provenance line. Sidecars of ``s3://``
sources are not read (their rows are versioned without provenance).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tuneops.tasks.data.layout import version_prefix
from tuneops.tasks.data.review import provenance_path, row_sha256
from tuneops.tasks.data.sources import is_collection, member_files, s3_uri_of

PROVENANCE_FILE = "provenance.jsonl"
MAX_REQUEST_IDS = 1000
# what a version's provenance line keeps of a sidecar line (the rest, e.g. seed rows, stays in the queue)
KEPT_FIELDS = (
    "origin", "item_id", "teacher_model", "prompt_template", "prompt_template_sha256", "generated_at",
    "request_id", "model", "model_version", "feedback_score", "served_at", "pii_redacted",
    "decision", "reviewer", "decided_at",
)  # fmt: skip


def provenance_key(name: str, digest: str) -> str:
    """Store key of a version's per-row provenance file (beside its manifest)."""
    return f"{version_prefix(name, digest)}/{PROVENANCE_FILE}"


def sidecars_for(path: Path | None) -> list[Path]:
    """The provenance sidecars of what ``path`` names (a file, folder or glob); none for ``s3://``."""
    if path is None or s3_uri_of(path) is not None:
        return []
    files = member_files(path) if is_collection(path) else [path]
    return [side for side in map(provenance_path, files) if side.is_file()]


def load_sidecars(sidecars: Iterable[Path]) -> dict[str, dict[str, Any]]:
    """``row sha256 -> provenance`` from sidecar files (a later file's line wins on a repeat)."""
    index: dict[str, dict[str, Any]] = {}
    for side in sidecars:
        for line in side.read_bytes().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a torn line: the rest of the sidecar still counts
            if isinstance(row, dict) and isinstance(row.get("row_sha256"), str):
                index[row["row_sha256"]] = {k: row[k] for k in KEPT_FIELDS if k in row}
    return index


def sidecar_identity(sidecars: Iterable[Path]) -> list[list[Any]]:
    """What identifies the sidecars' contents for the versioning cache (path, size, mtime)."""
    out: list[list[Any]] = []
    for side in sidecars:
        st = side.stat()
        out.append([str(side.resolve()), st.st_size, st.st_mtime_ns])
    return out


def _without_injected(example: dict[str, Any], inject: str | None) -> dict[str, Any] | None:
    messages = example.get("messages")
    if not inject or not isinstance(messages, list) or not messages:
        return None
    first = messages[0]
    if isinstance(first, dict) and first.get("role") == "system" and first.get("content") == inject:
        return {**example, "messages": messages[1:]}
    return None


def match_rows(
    split_files: Mapping[str, Path], index: Mapping[str, dict[str, Any]], inject: str | None = None
) -> list[dict[str, Any]]:
    """Provenance lines for the stored rows found in ``index``, in split and row order."""
    if not index:
        return []
    out = []
    for split, path in split_files.items():
        with path.open("rb") as handle:
            for line in handle:
                if not line.strip():
                    continue
                example = json.loads(line)
                sha = row_sha256(example)
                found = index.get(sha)
                if found is None and (bare := _without_injected(example, inject)) is not None:
                    found = index.get(row_sha256(bare))
                if found is not None:
                    out.append({"split": split, "row_sha256": sha, **found})
    return out


def encode(lines: list[dict[str, Any]]) -> bytes:
    """The provenance file's bytes (JSON lines, stable key order)."""
    return b"".join(json.dumps(r, sort_keys=True, ensure_ascii=False).encode() + b"\n" for r in lines)


def summarize(lines: list[dict[str, Any]], data: bytes) -> dict[str, Any]:
    """The manifest's ``provenance`` entry: counts, names, request ids (capped) and the file."""
    origins = Counter(str(r.get("origin", "unknown")) for r in lines)
    request_ids = [str(r["request_id"]) for r in lines if r.get("request_id")]

    def names(field: str) -> list[str]:
        return sorted({str(r[field]) for r in lines if r.get(field)})

    return {
        "file": PROVENANCE_FILE,
        "sha256": hashlib.sha256(data).hexdigest(),
        "rows": len(lines),
        "by_origin": dict(sorted(origins.items())),
        "by_split": dict(sorted(Counter(str(r["split"]) for r in lines).items())),
        "edited": sum(1 for r in lines if r.get("decision") == "edit"),
        "teacher_models": names("teacher_model"),
        "prompt_templates": names("prompt_template"),
        "reviewers": names("reviewer"),
        "request_ids": request_ids[:MAX_REQUEST_IDS],
        "request_ids_total": len(request_ids),
    }
