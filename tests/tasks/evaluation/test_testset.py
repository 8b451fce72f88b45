"""Reading the held-out split: references, limits, and errors that name the line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuneops.errors import DatasetError, UsageError
from tuneops.settings import TuneopsSettings
from tuneops.spec import Spec
from tuneops.tasks.evaluation.sources import resolve_test_split
from tuneops.tasks.evaluation.testset import read_test_split


def row(*turns: tuple[str, str]) -> str:
    return json.dumps({"messages": [{"role": r, "content": c} for r, c in turns]})


def write(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_last_assistant_turn_is_the_reference(tmp_path: Path) -> None:
    path = write(
        tmp_path / "t.jsonl",
        row(("system", "S"), ("user", "q1"), ("assistant", "a1"), ("user", "q2"), ("assistant", "a2")),
        "",
        row(("user", "q3"), ("assistant", "a3")),
    )
    first, second = read_test_split(path)
    assert first.messages == (("system", "S"), ("user", "q1"), ("assistant", "a1"), ("user", "q2"))
    assert (first.reference, first.query, first.context) == ("a2", "q2", "S")
    assert (second.index, second.reference, second.context) == (1, "a3", "")
    assert len(read_test_split(path, max_rows=1)) == 1


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", r"t.jsonl:2: not a chat row"),
        (json.dumps({"prompt": "x"}), r"t.jsonl:2: not a chat row"),
        (row(("user", "q")), r"t.jsonl:2: no assistant answer"),
        (row(("assistant", "a")), r"t.jsonl:2: no assistant answer"),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = write(tmp_path / "t.jsonl", row(("user", "q"), ("assistant", "a")), line)
    with pytest.raises(DatasetError, match=message):
        read_test_split(path)


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no test split here"):
        read_test_split(tmp_path / "nope.jsonl")
    with pytest.raises(DatasetError, match="the test split is empty"):
        read_test_split(write(tmp_path / "empty.jsonl", ""))


def test_resolving_the_split(tmp_path: Path) -> None:
    train = write(tmp_path / "train.jsonl", row(("user", "q"), ("assistant", "a")))
    test = write(tmp_path / "test.jsonl", row(("user", "q"), ("assistant", "a")))
    spec = Spec.model_validate({"model": {"name": "m", "base_model": "b"}, "data": {"train": str(train)}})
    settings = TuneopsSettings(project_dir=tmp_path)
    with pytest.raises(UsageError, match=r"the spec has no data\.test file"):
        resolve_test_split(spec, settings)
    with pytest.raises(UsageError, match="not both"):
        resolve_test_split(spec, settings, "m@abcdef", test)
    with pytest.raises(UsageError, match="no such test file"):
        resolve_test_split(spec, settings, test_file=tmp_path / "nope.jsonl")
    chosen = resolve_test_split(spec, settings, test_file=test)
    assert chosen.path == test and chosen.train_path == train and len(chosen.digest) == 64
    with_test = spec.model_copy(update={"data": spec.data.model_copy(update={"test": test})})
    assert resolve_test_split(with_test, settings).digest == chosen.digest
