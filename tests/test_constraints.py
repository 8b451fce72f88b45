"""constraints.txt (what scripts/setup installs) must satisfy pyproject.toml's ranges.

A lock that pins a version pyproject forbids, or forgets a dependency pyproject gained, would
make a fresh machine install something no test has seen; refresh it with scripts/try-newest --lock
(or scripts/lock-constraints after a passing suite).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def _locked() -> dict[str, str]:
    pins: dict[str, str] = {}
    for number, line in enumerate((ROOT / "constraints.txt").read_text().splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        assert match, f"constraints.txt:{number}: not a NAME==VERSION pin: {line!r}"
        pins[canonicalize_name(match.group(1))] = match.group(2)
    return pins


def _requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in ("local", "dev"):  # what scripts/setup installs
        wanted += project["optional-dependencies"][extra]
    return [Requirement(text) for text in wanted]


@pytest.mark.parametrize("requirement", _requirements(), ids=str)
def test_every_dependency_is_pinned_inside_its_range(requirement: Requirement) -> None:
    if requirement.marker is not None and not requirement.marker.evaluate():
        pytest.skip(f"{requirement.name} is not installed on this platform")
    locked = _locked()
    name = canonicalize_name(requirement.name)
    assert name in locked, f"{requirement.name} is not in constraints.txt: run scripts/lock-constraints"
    assert requirement.specifier.contains(locked[name], prereleases=True), (
        f"constraints.txt pins {requirement.name}=={locked[name]}, outside {requirement.specifier}"
    )


def test_a_pin_outside_its_range_is_caught() -> None:
    """The check above can fail: a specifier that excludes the pinned version says so."""
    assert not Requirement("fastapi==0.151.0").specifier.contains(_locked()["fastapi"])
