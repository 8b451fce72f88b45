"""A failing browser test leaves a screenshot of its page behind, and says where.

The ``page`` fixture's promise, checked on a test that fails on purpose: a separate pytest run
(its own basetemp, the browser fixtures of ``tests/browser/conftest.py``) of one test that opens
a page and fails. The screenshot is kept in that test's tmp_path, which pytest keeps after the
run (the last three runs), so CI and a developer find it at the printed path.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
FAILING = """
def test_fails_with_a_page_open(page):
    page.set_content("<h1>tuneops screenshot probe</h1>")
    assert False, "fails on purpose"


def test_passes_with_a_page_open(page):
    page.set_content("<h1>no screenshot for me</h1>")
"""


def test_a_failing_browser_test_keeps_a_screenshot(tmp_path: Path) -> None:
    inner = tmp_path / "inner"
    inner.mkdir()
    (inner / "pytest.ini").write_text("[pytest]\n")
    (inner / "conftest.py").write_text(
        "from tests.browser.conftest import browser, page, pytest_runtest_makereport  # noqa: F401\n"
    )
    (inner / "test_probe.py").write_text(FAILING)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
         "--basetemp", str(tmp_path / "base"), str(inner)],
        cwd=inner, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
    assert "1 failed, 1 passed" in run.stdout, run.stdout[-3000:]
    shots = re.findall(r"screenshot of the failing page: (\S+)", run.stdout)
    assert len(shots) == 1, run.stdout[-3000:]  # the passing test left none
    shot = Path(shots[0])
    assert shot.is_relative_to(tmp_path / "base") and "test_fails_with_a_page_open" in str(shot)
    assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 1000
