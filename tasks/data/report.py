"""Merging chunk results into one frozen validation report: pure logic, no I/O.

Memory stays small and independent of line length: per example the builder keeps a line number,
a token count and a 64-bit hash (24 bytes in compact arrays), which is what duplicate detection
and the token distribution need; problems are kept up to a cap while their counts stay exact.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tuneops.tasks.data.validate import (
    CODES,
    MAX_DISTINCT_SYSTEM_PROMPTS,
    NO_SYSTEM_PROMPT,
    OTHER_SYSTEM_PROMPTS,
    ChunkResult,
    Problem,
    ValidationOptions,
    estimate_epochs,
)

REPORT_SCHEMA = "tuneops.validation/v1"


@dataclass(frozen=True)
class TokenStats:
    """Distribution of tokens per example (cookbook counting, in ``encoding``)."""

    examples: int = 0
    total: int = 0
    min: int = 0
    max: int = 0
    mean: float = 0.0
    p5: int = 0
    p50: int = 0
    p95: int = 0

    @classmethod
    def of(cls, counts: np.ndarray[Any, Any]) -> TokenStats:
        if counts.size == 0:
            return cls()
        p5, p50, p95 = (int(v) for v in np.percentile(counts, [5, 50, 95], method="nearest"))
        return cls(
            examples=int(counts.size),
            total=int(counts.sum()),
            min=int(counts.min()),
            max=int(counts.max()),
            mean=round(float(counts.mean()), 2),
            p5=p5,
            p50=p50,
            p95=p95,
        )


@dataclass(frozen=True)
class ValidationReport:
    """The outcome of validating one file. ``valid`` means no error-level problem.

    ``problems`` holds at most ``ValidationOptions.max_problems`` entries in line order;
    ``counts`` has the exact number of each problem code.
    """

    path: str
    size_bytes: int
    sha256: str | None
    encoding: str
    lines: int
    examples: int
    invalid_examples: int
    blank_lines: int
    duplicates: int
    system_prompts: int
    tokens: TokenStats
    assistant_tokens: int
    max_tokens_per_example: int
    n_epochs: int
    epochs_auto: bool
    billing_tokens_per_epoch: int
    estimated_training_tokens: int
    counts: dict[str, int]
    problems: tuple[Problem, ...]
    problems_truncated: int = 0

    @property
    def errors(self) -> int:
        return sum(n for code, n in self.counts.items() if CODES[code][0] == "error")

    @property
    def warnings(self) -> int:
        return sum(n for code, n in self.counts.items() if CODES[code][0] == "warning")

    @property
    def valid(self) -> bool:
        return self.errors == 0

    def to_dict(self) -> dict[str, Any]:
        """The stable ``--json`` form (schema ``tuneops.validation/v1``)."""
        return {
            "schema": REPORT_SCHEMA,
            "path": self.path,
            "valid": self.valid,
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
            "encoding": self.encoding,
            "lines": self.lines,
            "examples": self.examples,
            "invalid_examples": self.invalid_examples,
            "blank_lines": self.blank_lines,
            "duplicates": self.duplicates,
            "distinct_system_prompts": self.system_prompts,
            "tokens_per_example": self.tokens.__dict__.copy(),
            "assistant_tokens": self.assistant_tokens,
            "max_tokens_per_example": self.max_tokens_per_example,
            "n_epochs": self.n_epochs,
            "epochs_auto": self.epochs_auto,
            "billing_tokens_per_epoch": self.billing_tokens_per_epoch,
            "estimated_training_tokens": self.estimated_training_tokens,
            "errors": self.errors,
            "warnings": self.warnings,
            "counts": dict(sorted(self.counts.items())),
            "problems": [p.to_dict() for p in self.problems],
            "problems_truncated": self.problems_truncated,
        }

    def summary(self) -> dict[str, Any]:
        """The short form stored in a dataset manifest."""
        data = self.to_dict()
        data.pop("problems")
        data.pop("path")
        return data

    def first_errors(self, limit: int = 3) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"][:limit]


@dataclass
class ReportBuilder:
    """Accumulates :class:`ChunkResult` objects (in any order) into a :class:`ValidationReport`."""

    options: ValidationOptions
    lines: int = 0
    blank_lines: int = 0
    invalid_examples: int = 0
    assistant_tokens: int = 0
    extra_problems: list[Problem] = field(default_factory=list)
    _chunks: list[tuple[int, list[Problem]]] = field(default_factory=list)
    _counts: dict[str, int] = field(default_factory=dict)
    _example_lines: array[int] = field(default_factory=lambda: array("Q"))
    _example_tokens: array[int] = field(default_factory=lambda: array("Q"))
    _example_hashes: array[int] = field(default_factory=lambda: array("Q"))
    _example_valid: array[int] = field(default_factory=lambda: array("B"))
    _system_prompts: dict[bytes, list[int]] = field(default_factory=dict)

    def add(self, chunk: ChunkResult) -> None:
        self.lines += chunk.lines
        self.blank_lines += chunk.blank_lines
        self.invalid_examples += chunk.invalid_examples
        self.assistant_tokens += chunk.assistant_tokens
        self._chunks.append((chunk.first_line, chunk.problems))
        for code, n in chunk.counts.items():
            self._counts[code] = self._counts.get(code, 0) + n
        self._example_lines.extend(chunk.example_lines)
        self._example_tokens.extend(chunk.example_tokens)
        self._example_hashes.extend(chunk.example_hashes)
        self._example_valid.extend(chunk.example_valid)
        for key, (first, count) in chunk.system_prompts.items():
            seen = self._system_prompts.get(key)
            if seen is None and len(self._system_prompts) >= MAX_DISTINCT_SYSTEM_PROMPTS:
                key = OTHER_SYSTEM_PROMPTS
                seen = self._system_prompts.get(key)
            if seen is None:
                self._system_prompts[key] = [first, count]
            else:
                seen[0] = min(seen[0], first)
                seen[1] += count

    def add_problem(self, problem: Problem) -> None:
        """A problem found outside the line checks (binary file, over-long line)."""
        self._counts[problem.code] = self._counts.get(problem.code, 0) + 1
        self.extra_problems.append(problem)

    def example_tokens_in_line_order(self) -> np.ndarray[Any, Any]:
        """Token counts of every parsed example, ordered by line (used to size splits)."""
        lines = np.frombuffer(self._example_lines, dtype=np.uint64)
        tokens = np.frombuffer(self._example_tokens, dtype=np.uint64)
        return tokens[np.argsort(lines, kind="stable")] if lines.size else tokens

    def finish(self, *, path: str, size_bytes: int, sha256: str | None, encoding: str) -> ValidationReport:
        """Run the whole-file checks and freeze the report."""
        derived: list[Problem] = []
        lines = np.frombuffer(self._example_lines, dtype=np.uint64)
        tokens = np.frombuffer(self._example_tokens, dtype=np.uint64)
        examples = int(lines.size)
        valid_examples = int(np.frombuffer(self._example_valid, dtype=np.uint8).sum()) if examples else 0
        duplicates = self._duplicates(lines, derived)
        self._system_prompt_warnings(derived)
        binary = "binary_file" in self._counts
        if not binary and examples == 0 and self.invalid_examples == 0:
            derived.append(Problem(0, "empty_file", "the file holds no examples"))
        elif not binary and examples < self.options.min_examples:
            derived.append(
                Problem(
                    0,
                    "too_few_examples",
                    f"{examples} examples; fine-tuning needs at least {self.options.min_examples}",
                )
            )
        elif not binary and examples < self.options.recommended_examples:
            derived.append(
                Problem(
                    0,
                    "few_examples",
                    f"{examples} examples; at least {self.options.recommended_examples} are recommended "
                    "for a noticeable improvement",
                )
            )
        for problem in derived:
            if problem.code != "duplicate":
                self._counts[problem.code] = self._counts.get(problem.code, 0) + 1
        file_problems = self.extra_problems + derived
        everything = sorted(
            [p for _, chunk in sorted(self._chunks, key=lambda c: c[0]) for p in chunk] + file_problems,
            key=lambda p: p.line,
        )
        kept = tuple(everything[: self.options.max_problems])
        capped = np.minimum(tokens, self.options.max_tokens_per_example) if tokens.size else tokens
        per_epoch = int(capped.sum()) if tokens.size else 0
        epochs = estimate_epochs(valid_examples, self.options.n_epochs)
        return ValidationReport(
            path=path,
            size_bytes=size_bytes,
            sha256=sha256,
            encoding=encoding,
            lines=self.lines,
            examples=examples,
            invalid_examples=self.invalid_examples,
            blank_lines=self.blank_lines,
            duplicates=duplicates,
            system_prompts=sum(1 for key in self._system_prompts if key != NO_SYSTEM_PROMPT),
            tokens=TokenStats.of(tokens),
            assistant_tokens=self.assistant_tokens,
            max_tokens_per_example=self.options.max_tokens_per_example,
            n_epochs=epochs,
            epochs_auto=self.options.n_epochs is None,
            billing_tokens_per_epoch=per_epoch,
            estimated_training_tokens=per_epoch * epochs,
            counts=dict(self._counts),
            problems=kept,
            problems_truncated=sum(self._counts.values()) - len(kept),
        )

    def _duplicates(self, lines: np.ndarray[Any, Any], out: list[Problem]) -> int:
        if lines.size < 2:
            return 0
        hashes = np.frombuffer(self._example_hashes, dtype=np.uint64)
        order = np.lexsort((lines, hashes))
        sorted_hashes = hashes[order]
        repeat = np.flatnonzero(sorted_hashes[1:] == sorted_hashes[:-1]) + 1
        if repeat.size == 0:
            return 0
        # the first line of each group: walk back to the group's start
        starts = np.flatnonzero(np.r_[True, sorted_hashes[1:] != sorted_hashes[:-1]])
        group_start = starts[np.searchsorted(starts, repeat, side="right") - 1]
        for pos, start in zip(repeat[: self.options.max_problems], group_start, strict=False):
            out.append(
                Problem(
                    int(lines[order[pos]]),
                    "duplicate",
                    f"same example as line {int(lines[order[start]])}",
                )
            )
        self._counts["duplicate"] = self._counts.get("duplicate", 0) + int(repeat.size)
        return int(repeat.size)

    def _system_prompt_warnings(self, out: list[Problem]) -> None:
        if len(self._system_prompts) < 2:
            return
        ranked = sorted(self._system_prompts.items(), key=lambda item: (-item[1][1], item[1][0]))
        (_, (main_line, main_count)), others = ranked[0], ranked[1:]
        for key, (first, count) in others:
            if key == NO_SYSTEM_PROMPT:
                what = "have no system prompt"
            elif key == OTHER_SYSTEM_PROMPTS:
                what = f"use yet more system prompts (over {MAX_DISTINCT_SYSTEM_PROMPTS} distinct)"
            else:
                what = "use a different system prompt"
            out.append(
                Problem(
                    first,
                    "inconsistent_system_prompt",
                    f"{count} example(s), the first on this line, {what}; the most common "
                    f"({main_count} examples) is first used on line {main_line}",
                )
            )
