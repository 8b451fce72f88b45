"""Every example config loads; every invalid one fails with one line naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuneops.errors import SpecError
from tuneops.spec import load_spec

REPO = Path(__file__).resolve().parents[2]
VALID = [REPO / "examples" / "tuneops.yaml", REPO / "tuneops" / "resources" / "example" / "tuneops.yaml"]
INVALID = sorted((Path(__file__).parent / "invalid").glob("*.yaml"))


@pytest.mark.parametrize("path", VALID, ids=lambda p: str(p.relative_to(REPO)))
def test_example_configs_load_and_point_at_real_files(path: Path):
    spec, base = load_spec(path)
    assert base == path.parent
    for split in (spec.data.train, spec.data.validation, spec.data.test):
        assert split is not None and split.is_file()


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_configs_fail_naming_the_field(path: Path):
    expected = path.read_text().splitlines()[0].removeprefix("# expect:").strip()
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    message = caught.value.one_line()
    assert expected in message and str(path) in message and "\n" not in message


def test_there_are_invalid_configs():
    assert len(INVALID) >= 5
