"""``tuneops init DIR``: a working project from the packaged example, never clobbering one."""

from __future__ import annotations

import filecmp
import sys
from pathlib import Path

import pytest

from tuneops.cli.main import main
from tuneops.cli.project import init_project
from tuneops.spec import load_spec

REPO = Path(__file__).resolve().parents[2]


def run(monkeypatch, capsys, cwd: Path, *args: str):
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["tuneops", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    out, err = capsys.readouterr()
    return exited.value.code or 0, out, err


def test_init_scaffolds_a_project_that_validates_and_versions(tmp_path: Path, monkeypatch, capsys):
    rc, out, _ = run(monkeypatch, capsys, tmp_path, "init", "proj")
    project = tmp_path / "proj"
    assert rc == 0 and (project / "tuneops.yaml").is_file()
    spec, _ = load_spec(project / "tuneops.yaml")
    assert spec.provider.kind == "local" and spec.model.base_model == "smollm2-135m-instruct"
    assert spec.data.train.is_file() and spec.data.validation.is_file() and spec.data.test.is_file()
    rc, out, _ = run(monkeypatch, capsys, project, "data", "validate", "claims/train.jsonl")
    assert rc == 0
    rc, out, _ = run(monkeypatch, capsys, project, "data", "version")
    assert rc == 0 and "claims@" in out and "created" in out
    assert list((project / ".tuneops" / "data" / "datasets" / "claims").iterdir())


def test_init_refuses_to_overwrite_without_force(tmp_path: Path, monkeypatch, capsys):
    init_project(tmp_path / "p")
    (tmp_path / "p" / "tuneops.yaml").write_text("# mine\n")
    rc, _, err = run(monkeypatch, capsys, tmp_path, "init", "p")
    assert rc == 2 and "already exists" in err and "--force" in err
    assert (tmp_path / "p" / "tuneops.yaml").read_text() == "# mine\n"
    rc, _, _ = run(monkeypatch, capsys, tmp_path, "init", "p", "--force")
    assert rc == 0 and "model:" in (tmp_path / "p" / "tuneops.yaml").read_text()


def test_packaged_example_matches_the_repository_example():
    packaged = REPO / "tuneops" / "resources" / "example"
    assert filecmp.cmp(REPO / "examples" / "tuneops.yaml", packaged / "tuneops.yaml", shallow=False)
    for split in ("train", "validation", "test", "next-week"):
        name = f"{split}.jsonl"
        assert filecmp.cmp(REPO / "examples" / "claims" / name, packaged / "claims" / name, shallow=False)


def test_generator_is_deterministic(tmp_path: Path):
    sys.path.insert(0, str(REPO / "examples"))
    try:
        import generate_claims_dataset as generator
    finally:
        sys.path.pop(0)
    generator.generate(tmp_path, seed=7, train=96, validation=16, test=32, next_week=64)
    for split in ("train", "validation", "test", "next-week"):
        assert (tmp_path / f"{split}.jsonl").read_bytes() == (
            REPO / "examples" / "claims" / f"{split}.jsonl"
        ).read_bytes()
