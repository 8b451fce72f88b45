"""The layer contracts in pyproject.toml ([tool.importlinter]) hold, and each one can fail.

import-linter finds sub-packages by walking the root package's folder, and ours are mapped from
other folders (``tuneops.tasks`` is ``tasks/``), so with the editable install it sees no
``tuneops.flows`` at all. The test therefore builds the installed layout as a link tree in a
temporary folder (real directories, every ``.py`` a symlink to the repository's file, per
``[tool.setuptools.package-dir]``) and runs ``lint-imports`` there, in a subprocess whose working
directory is that tree. Deliberate violations are planted in such a tree as real files, never in
the repository.

Run ``python tests/test_architecture.py`` for lint-imports' own report on the repository.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = REPO / "pyproject.toml"
_CONFIG = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
PACKAGE_DIRS: dict[str, str] = _CONFIG["tool"]["setuptools"]["package-dir"]
CONTRACTS = {c["id"]: c for c in _CONFIG["tool"]["importlinter"]["contracts"]}
SDKS = sorted(CONTRACTS["pure-rules"]["forbidden_modules"])


def build_tree(root: Path) -> Path:
    """The installed package layout under ``root``, made of symlinks to the repository's modules."""
    for package, folder in PACKAGE_DIRS.items():
        source = REPO / folder
        dest = root.joinpath(*package.split("."))
        for path in source.rglob("*.py"):
            relative = path.relative_to(source)
            if "__pycache__" in relative.parts:
                continue
            target = dest / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path)
    return root


def lint_imports(tree: Path, *contract_ids: str) -> subprocess.CompletedProcess[str]:
    """Run ``lint-imports`` with the repository's contracts on ``tree`` (all contracts by default)."""
    script = "from importlinter.cli import lint_imports_command; lint_imports_command()"
    args = [str(PYPROJECT), "--no-cache", *(f"--contract={c}" for c in contract_ids)]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [sys.executable, "-c", script, *args], cwd=tree, env=env, capture_output=True, text=True, timeout=120
    )


def plant(tree: Path, relative: str, code: str) -> None:
    """Write a module into the link tree; an existing module is copied first and ``code`` appended."""
    target = tree / relative
    original = target.read_text(encoding="utf-8") if target.exists() else ""
    if target.is_symlink():
        target.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    for parent in target.relative_to(tree).parents:
        init = tree / parent / "__init__.py"
        if parent != Path() and not init.exists():
            init.write_text("", encoding="utf-8")
    target.write_text(original + "\n" + code + "\n", encoding="utf-8")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return build_tree(tmp_path / "site")


def test_the_link_tree_shows_import_linter_every_subpackage(tree: Path) -> None:
    expected = set()
    for path in tree.rglob("*.py"):
        parts = path.relative_to(tree).with_suffix("").parts
        expected.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    script = (
        "import grimp, json; print(json.dumps(sorted(grimp.build_graph('tuneops', cache_dir=None).modules)))"
    )
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=tree, env=env, capture_output=True, text=True, check=True
    )
    seen = set(json.loads(out.stdout))
    assert seen == expected
    assert {
        "tuneops.flows.retrain",
        "tuneops.tasks.evaluation.rules",
        "tuneops.registry",
        "tuneops.serving.local",
    } <= seen


def test_contracts_hold_in_the_repository(tree: Path) -> None:
    result = lint_imports(tree)
    assert result.returncode == 0, result.stdout + result.stderr


# (contract id, where the planted module goes, its code, what lint-imports must report)
VIOLATIONS = [
    (
        "layers",
        "tuneops/registry/_planted.py",
        "import tuneops.tasks.data",
        "tuneops.registry._planted -> tuneops.tasks.data",
    ),
    (
        "layers",
        "tuneops/tasks/_planted.py",
        "import tuneops.flows.retrain",
        "tuneops.tasks._planted -> tuneops.flows.retrain",
    ),
    (
        "layers",
        "tuneops/serving/local/_planted.py",
        "import tuneops.tasks.finetune.rules",
        "tuneops.serving.local._planted -> tuneops.tasks.finetune.rules",
    ),
    (
        "layers",
        "tuneops/serving/_planted.py",
        "import tuneops.flows.retrain",
        "tuneops.serving._planted -> tuneops.flows.retrain",
    ),
    (
        "layers",
        "tuneops/registry/_planted.py",
        "import tuneops.serving.local.rules",
        "tuneops.registry._planted -> tuneops.serving.local.rules",
    ),
    (
        "layers",
        "tuneops/errors.py",
        "import tuneops.registry.types",
        "tuneops.errors -> tuneops.registry.types",
    ),
    ("layers", "tuneops/events.py", "import tuneops.tasks.data", "tuneops.events -> tuneops.tasks.data"),
    (
        "layers",
        "tuneops/settings.py",
        "import tuneops.serving.local.rules",
        "tuneops.settings -> tuneops.serving.local.rules",
    ),
    (
        "layers",
        "tuneops/flows/_planted.py",
        "import tuneops.cli.main",
        "tuneops.flows._planted -> tuneops.cli.main",
    ),
    (
        "layers",
        "tuneops/registry/_planted.py",
        "import tuneops.testing.processes",
        "tuneops.registry._planted -> tuneops.testing.processes",
    ),
    ("layers", "tuneops/_unplaced.py", "", "tuneops._unplaced"),  # exhaustive: every module has a layer
    (
        "mlflow-in-registry",
        "tuneops/tasks/evaluation/_planted.py",
        "from mlflow.tracking import MlflowClient",
        "tuneops.tasks.evaluation._planted -> mlflow",
    ),
    ("mlflow-in-registry", "tuneops/flows/_planted.py", "import mlflow", "tuneops.flows._planted -> mlflow"),
    ("mlflow-in-registry", "tuneops/state_templates.py", "import mlflow", "tuneops.state_templates -> mlflow"),
    (
        "pure-rules",
        "tuneops/tasks/evaluation/stats.py",
        "import mlflow",
        "tuneops.tasks.evaluation.stats -> mlflow",
    ),
    (
        "pure-rules",
        "tuneops/serving/local/rules.py",
        "from httpx import Client",
        "tuneops.serving.local.rules -> httpx",
    ),
    (
        "pure-rules",
        "tuneops/tasks/finetune/rules.py",
        "import tuneops.tasks.finetune.tasks",
        "tuneops.tasks.finetune.rules -> tuneops.tasks.finetune.tasks",
    ),  # indirect: the tasks module imports prefect
    *(
        (
            "pure-rules",
            f"tuneops/tasks/_planted_{sdk}/rules.py",
            f"import {sdk}.sub",
            f"tuneops.tasks._planted_{sdk}.rules -> {sdk}",
        )
        for sdk in SDKS
    ),
]


@pytest.mark.parametrize(
    ("contract", "where", "code", "reported"), VIOLATIONS, ids=[f"{v[0]}:{v[3]}" for v in VIOLATIONS]
)
def test_a_planted_violation_breaks_its_contract(
    tree: Path, contract: str, where: str, code: str, reported: str
) -> None:
    plant(tree, where, code)
    result = lint_imports(tree, contract)
    assert result.returncode == 1, result.stdout + result.stderr
    broken = result.stdout.split("Broken contracts", 1)[-1]
    assert reported in broken, result.stdout


@pytest.mark.parametrize("where", ["tuneops/cli/_planted.py", "tuneops/testing/_planted.py"])
def test_cli_and_testing_may_import_every_layer(tree: Path, where: str) -> None:
    everything = [
        "tuneops.flows.retrain",
        "tuneops.tasks.data",
        "tuneops.serving.local.rules",
        "tuneops.registry.types",
        "tuneops.events",
        "tuneops.cli.main",
        "tuneops.testing.processes",
    ]
    plant(tree, where, "\n".join(f"import {m}" for m in everything))
    result = lint_imports(tree, "layers")
    planted = where.removesuffix(".py").replace("/", ".")
    assert planted not in result.stdout, result.stdout


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        report = lint_imports(build_tree(Path(folder)))
        print(report.stdout, report.stderr, sep="", end="")
        sys.exit(report.returncode)
