"""Streams a JSONL file through the validator: constant memory, optionally on several cores.

The file is read in fixed-size blocks and cut at line boundaries into chunks; each chunk is
checked by :class:`~tuneops.tasks.data.validate.ChunkChecker`, in this process for small files
and in worker processes for large ones (tokenization dominates and is CPU-bound). At most
``2 * workers`` chunks are in flight, so memory does not grow with the file. The same pass
hashes the file's bytes (sha256) and, when versioning, routes each chunk's lines to the split
files (:mod:`~tuneops.tasks.data.routing`), so a file is read once.
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from functools import cache
from multiprocessing import get_context
from pathlib import Path
from typing import Any, BinaryIO

from tuneops.errors import DatasetError, UsageError
from tuneops.tasks.data.report import ReportBuilder, ValidationReport
from tuneops.tasks.data.routing import RoutedChunk, RoutingPlan, route_lines
from tuneops.tasks.data.tokens import ENCODING_NAME, token_counter
from tuneops.tasks.data.validate import ChunkChecker, ChunkResult, Problem, ValidationOptions

BLOCK_BYTES = 4 * 1024 * 1024
PARALLEL_THRESHOLD_BYTES = 16 * 1024 * 1024
SNIFF_BYTES = 8192

Progress = Callable[[int, int], None]
RoutedSink = Callable[[RoutedChunk], None]


@dataclass(frozen=True)
class ScanOutcome:
    """A report plus the per-example token counts in line order (used to size splits)."""

    report: ValidationReport
    example_tokens: Any


def default_workers() -> int:
    """Worker processes for large files: the cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def validate_file(
    path: Path,
    options: ValidationOptions | None = None,
    *,
    workers: int | None = None,
    progress: Progress | None = None,
) -> ValidationReport:
    """Validate a chat fine-tuning JSONL file without loading it whole.

    Raises:
        UsageError: ``path`` does not exist or is not a file.
        DatasetError: the file cannot be read.
    """
    return scan_file(path, options, workers=workers, progress=progress).report


def scan_file(
    path: Path,
    options: ValidationOptions | None = None,
    *,
    workers: int | None = None,
    progress: Progress | None = None,
    routing: tuple[RoutingPlan, RoutedSink] | None = None,
) -> ScanOutcome:
    """Like :func:`validate_file`, also returning the per-example token counts.

    With ``routing``, each chunk's lines are also routed by the plan and handed to the sink,
    in input order (whether or not the file turns out valid: the caller decides what to keep).
    """
    options = options or ValidationOptions()
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path}: no such file", hint="check the path")
    if not path.is_file():
        raise UsageError(f"{path}: not a file", hint="pass a .jsonl file")
    size = path.stat().st_size
    builder = ReportBuilder(options)
    digest = hashlib.sha256()
    n_workers = workers if workers is not None else default_workers()
    try:
        with path.open("rb") as handle:
            chunks = _chunks(handle, options, builder, digest, size, progress)
            plan, sink = routing if routing is not None else (None, None)
            if n_workers > 1 and size >= PARALLEL_THRESHOLD_BYTES:
                _run_parallel(chunks, options, builder, n_workers, plan, sink)
            else:
                for data, first_line in chunks:
                    _collect(_check_chunk(data, first_line, options, plan), builder, sink)
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    report = builder.finish(
        path=str(path), size_bytes=size, sha256=digest.hexdigest(), encoding=ENCODING_NAME
    )
    return ScanOutcome(report=report, example_tokens=builder.example_tokens_in_line_order())


def _chunks(
    handle: BinaryIO,
    options: ValidationOptions,
    builder: ReportBuilder,
    digest: Any,
    size: int,
    progress: Progress | None,
) -> Iterator[tuple[bytes, int]]:
    """Yield ``(whole lines, first line number)``; report binary files and over-long lines."""
    line = 1
    carry = b""
    skipping = False  # inside a line longer than max_line_bytes: drop bytes until its end
    done = 0
    first = True
    while True:
        block = handle.read(BLOCK_BYTES)
        if not block:
            break
        digest.update(block)
        done += len(block)
        if first:
            first = False
            if block.startswith(b"\xef\xbb\xbf"):
                block = block[3:]
            if _looks_binary(block[:SNIFF_BYTES]):
                builder.add_problem(
                    Problem(1, "binary_file", "binary data, not UTF-8 JSONL text; is this the right file?")
                )
                for rest in iter(lambda: handle.read(BLOCK_BYTES), b""):
                    digest.update(rest)
                return
        if skipping:
            end = block.find(b"\n")
            if end < 0:
                continue
            block = block[end + 1 :]
            line += 1
            skipping = False
        data = carry + block
        cut = data.rfind(b"\n")
        if cut < 0:
            carry = data
        else:
            whole, carry = data[: cut + 1], data[cut + 1 :]
            yield whole, line
            line += whole.count(b"\n")
        if len(carry) > options.max_line_bytes:
            builder.add_problem(
                Problem(
                    line,
                    "line_too_long",
                    f"line is longer than {options.max_line_bytes} bytes; is the file JSONL?",
                )
            )
            carry = b""
            skipping = True
        if progress is not None:
            progress(done, size)
    if carry and not skipping:
        yield carry, line


def _looks_binary(head: bytes) -> bool:
    """NUL bytes, or mostly undecodable bytes, in the first block: not text at all.

    A few bad bytes are reported per line as ``not_utf8`` instead.
    """
    if b"\x00" in head:
        return True
    undecodable = head.decode("utf-8", errors="replace").count("\ufffd")
    return undecodable > max(8, len(head) // 20)


@cache
def _checker(options: ValidationOptions) -> ChunkChecker:
    """One checker per process and options (it memoises token counts of repeated strings)."""
    return ChunkChecker(options, token_counter())


Checked = tuple[ChunkResult, RoutedChunk | None]


def _check_chunk(
    data: bytes, first_line: int, options: ValidationOptions, plan: RoutingPlan | None
) -> Checked:
    """Check one chunk and, when versioning, route its lines (runs in a worker for large files)."""
    lines = data.split(b"\n")
    result = _checker(options).check_chunk_lines(lines, first_line)
    routed = route_lines(lines, result.example_tokens, plan) if plan is not None else None
    return result, routed


def _collect(checked: Checked, builder: ReportBuilder, sink: RoutedSink | None) -> None:
    result, routed = checked
    builder.add(result)
    if sink is not None and routed is not None:
        sink(routed)


def _run_parallel(
    chunks: Iterator[tuple[bytes, int]],
    options: ValidationOptions,
    builder: ReportBuilder,
    workers: int,
    plan: RoutingPlan | None,
    sink: RoutedSink | None,
) -> None:
    """Check chunks in ``workers`` spawned processes, with a bounded number in flight, collecting
    results in input order."""
    pending: deque[Future[Checked]] = deque()
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        for data, first_line in chunks:
            pending.append(pool.submit(_check_chunk, data, first_line, options, plan))
            while len(pending) >= 2 * workers:
                _collect(pending.popleft().result(), builder, sink)
        while pending:
            _collect(pending.popleft().result(), builder, sink)
