"""A user mistake found inside a flow's task is one line in a real ``tuneops run`` process: Prefect's
task and flow failure logs (configured lazily, on its own handlers) carry no traceback for it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tuneops.cli.project import init_project
from tuneops.settings import QUIET_ENVIRONMENT

pytestmark = pytest.mark.slow


def test_an_unset_finetune_from_alias_is_one_line_without_a_traceback(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    init_project(project)
    spec = project / "tuneops.yaml"
    text = spec.read_text(encoding="utf-8")
    assert "  # from: champion" in text
    spec.write_text(text.replace("  # from: champion", "  from: challenger  #"), encoding="utf-8")
    run = subprocess.run(
        [sys.executable, "-m", "tuneops.cli.main", "run", "--no-progress"],
        cwd=project, env=QUIET_ENVIRONMENT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    output = run.stdout + run.stderr
    assert run.returncode == 1, output
    assert "claims-triage@challenger is not set" in output.splitlines()[-1]
    assert "Traceback" not in output
