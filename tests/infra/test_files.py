"""Every file in infra/ is checked by a test, and the ones not covered elsewhere are checked here:
the Dockerfile, and the Markdown documents (whose names of variables, commands and files must
exist). Each check is shown to fail on a mutated copy."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from tests.infra.checks import INFRA, REPO, check_command, check_variable, failures

# Each infra file and the test module that checks it. A new file fails until it is listed here
# with a check.
CHECKED_BY = {
    "README.md": "tests/infra/test_files.py",
    "Dockerfile": "tests/infra/test_files.py",
    "compose.yaml": "tests/infra/test_compose.py",
    "postgres-init.sql": "tests/infra/test_compose.py",
    "kubernetes/settings.yaml": "tests/infra/test_kubernetes.py",
    "kubernetes/gateway.yaml": "tests/infra/test_kubernetes.py",
    "kubernetes/mlflow.yaml": "tests/infra/test_kubernetes.py",
    "kubernetes/prefect-work-pool.json": "tests/infra/test_kubernetes.py",
    "azure/README.md": "tests/infra/test_files.py",
}
MARKDOWN = ["README.md", "azure/README.md"]
DOCKERFILE_INSTRUCTIONS = {
    "FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME", "USER",
    "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
}  # fmt: skip
VARIABLE = re.compile(r"^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+$")
PATH_LIKE = re.compile(r"^[\w.-]+(?:/[\w.-]+)*\.(?:yaml|yml|json|sql|md|py)$|^(?:[\w.-]+/)*Dockerfile$")
PROGRAMS = ("tuneops ", "prefect ", "mlflow ")


def test_every_infra_file_is_checked_by_a_test() -> None:
    files = {p.relative_to(INFRA).as_posix() for p in INFRA.rglob("*") if p.is_file()}
    files = {f for f in files if "__pycache__" not in f}
    assert files == set(CHECKED_BY), "add a check for each new infra file (and list it in CHECKED_BY)"
    for test in set(CHECKED_BY.values()):
        assert (REPO / test).is_file()


# ---- Dockerfile


def dockerfile_problems(text: str, pyproject: dict[str, object]) -> list[str]:
    """Unknown instructions, a base Python outside ``requires-python``, unknown extras, and COPY
    sources missing from the build context (the repository root, as compose.yaml builds it)."""
    problems = []
    logical = re.sub(r"\\\n", " ", text)
    lines = [line.strip() for line in logical.splitlines() if line.strip() and not line.startswith("#")]
    project = pyproject["project"]
    assert isinstance(project, dict)
    extras = set(project["optional-dependencies"])
    for line in lines:
        instruction, _, rest = line.partition(" ")
        if instruction.upper() not in DOCKERFILE_INSTRUCTIONS:
            problems.append(f"unknown instruction {instruction}")
        if instruction == "FROM":
            match = re.match(r"python:(\d+)\.(\d+)", rest)
            low, high = re.findall(r"(\d+)\.(\d+)", project["requires-python"])
            if not match or not tuple(map(int, low)) <= tuple(map(int, match.groups())) < tuple(
                map(int, high)
            ):
                problems.append(f"base image {rest} is not a Python within {project['requires-python']}")
        if instruction == "COPY":
            for source in rest.split()[:-1]:
                if not source.startswith("--") and not (REPO / source).exists():
                    problems.append(f"COPY source {source} missing from the build context")
        for found in re.findall(r"\.\[([\w,-]+)\]", rest):
            problems += [f"unknown extra {e}" for e in found.split(",") if e not in extras]
    if not lines or not lines[0].startswith("FROM"):
        problems.append("the first instruction must be FROM")
    return problems


@pytest.fixture(scope="module")
def pyproject() -> dict[str, object]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_dockerfile_is_well_formed_and_matches_the_project(pyproject: dict[str, object]) -> None:
    assert dockerfile_problems((INFRA / "Dockerfile").read_text(), pyproject) == []


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("FROM ", "FORM ", "unknown instruction FORM"),
        ("python:3.11-slim", "python:3.13-slim", "not a Python within"),
        ('".[local]"', '".[locl]"', "unknown extra locl"),
        ("COPY . ", "COPY src ", "COPY source src missing"),
    ],
)
def test_a_broken_dockerfile_fails(pyproject: dict[str, object], old: str, new: str, expected: str) -> None:
    text = (INFRA / "Dockerfile").read_text()
    assert old in text
    problems = dockerfile_problems(text.replace(old, new, 1), pyproject)
    assert any(expected in p for p in problems), problems


# ---- Markdown: every variable, command and file it names exists


def markdown_problems(text: str, folder: Path) -> list[str]:
    spans = re.findall(r"`([^`\n]+)`", text)
    blocks = re.findall(r"```\w*\n(.*?)```", text, flags=re.S)
    fenced = [line.strip() for block in blocks for line in block.splitlines()]
    problems = failures(check_variable, [(s,) for s in spans if VARIABLE.match(s)])
    problems += failures(check_command, [(s,) for s in spans + fenced if s.startswith(PROGRAMS)])
    for span in spans:
        if PATH_LIKE.match(span) and not any((base / span).exists() for base in (REPO, INFRA, folder)):
            problems.append(f"{span}: no such file")
    return problems


@pytest.mark.parametrize("name", MARKDOWN)
def test_markdown_names_only_what_exists(name: str) -> None:
    path = INFRA / name
    problems = markdown_problems(path.read_text(), path.parent)
    assert problems == []


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("`TUNEOPS_STATE_DB_URL`", "`TUNEOPS_STATE_DB_URI`", "TUNEOPS_STATE_DB_URI"),
        ("`AZURE_STORAGE_CONNECTION_STRING`", "`AZURE_STORAGE_CONN_STRING`", "AZURE_STORAGE_CONN_STRING"),
        ("`tuneops deploy`", "`tuneops deploy --all`", "No such option"),
        ("`infra/Dockerfile`", "`infra/docker/Dockerfile`", "no such file"),
    ],
)
def test_a_broken_name_in_the_azure_template_fails(old: str, new: str, expected: str) -> None:
    path = INFRA / "azure" / "README.md"
    text = path.read_text()
    assert old in text
    problems = markdown_problems(text.replace(old, new), path.parent)
    assert any(expected in p for p in problems), problems
