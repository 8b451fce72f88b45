"""``scripts/demo`` without running it: it parses, the specs it derives are valid, and every option it
passes to ``tuneops`` exists. (The demo itself, end to end, is run by hand: see the README.)"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from tuneops.spec import load_spec

DEMO = Path(__file__).resolve().parents[2] / "scripts" / "demo"


def demo_text() -> str:
    return DEMO.read_text(encoding="utf-8")


def test_the_demo_is_valid_bash() -> None:
    subprocess.run(["bash", "-n", str(DEMO)], check=True)


def derive_specs(tmp_path: Path) -> None:
    """Run the demo's own spec-deriving Python on the example spec, in ``tmp_path``."""
    blocks = re.findall(r"python - <<'EOF'\n(.*?)\nEOF\n", demo_text(), flags=re.S)
    (code,) = [b for b in blocks if "tuneops.demo-rollout.yaml" in b]
    example = resources.files("tuneops") / "resources" / "example" / "tuneops.yaml"
    shutil.copyfile(str(example), tmp_path / "tuneops.yaml")
    shutil.copytree(
        str(resources.files("tuneops") / "resources" / "example" / "claims"),
        tmp_path / "claims",
        dirs_exist_ok=True,
    )
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True)


def test_the_derived_specs_are_valid_and_change_only_what_the_readme_says(tmp_path: Path) -> None:
    derive_specs(tmp_path)
    original, _ = load_spec(tmp_path / "tuneops.yaml")
    retrain, folder = load_spec(tmp_path / "tuneops.retrain.yaml")
    assert folder.resolve() == tmp_path.resolve()  # same project, same state
    # the retrain: next week's data, continuing the champion's fine-tune for one epoch
    assert retrain.data.train.name == "next-week.jsonl" and retrain.data.train.is_file()
    assert retrain.data.model_dump(exclude={"train"}) == original.data.model_dump(exclude={"train"})
    assert retrain.finetune.from_ == "champion" and original.finetune.from_ is None
    assert retrain.finetune.hyperparameters.n_epochs == 1
    rest = {"finetune", "data"}
    assert retrain.model_dump(exclude=rest) == original.model_dump(exclude=rest)
    demo, _ = load_spec(tmp_path / "tuneops.demo-rollout.yaml")
    assert demo.rollout.strategy == "canary" and demo.rollout.steps == [50, 100]
    assert demo.rollout.min_requests_per_step < original.rollout.min_requests_per_step
    assert demo.rollout.guardrails == original.rollout.guardrails
    assert demo.model_dump(exclude={"rollout"}) == original.model_dump(exclude={"rollout"})
    derive_specs(tmp_path)  # a second call rewrites the same files
    assert load_spec(tmp_path / "tuneops.demo-rollout.yaml")[0] == demo


@pytest.mark.parametrize(
    ("command", "options"),
    [
        (["run"], ["--spec", "--reason"]),
        (["promote"], ["--alias", "--reason"]),
        (["ledger"], ["--json"]),
        (["lineage"], ["--json"]),
        (["serve", "gateway"], ["--port"]),
        (["rollout", "start"], ["--spec"]),
        (["rollout", "status"], []),
        (
            ["traffic", "replay"],
            [
                "--split",
                "--gateway-url",
                "--rate",
                "--concurrency",
                "--users",
                "--duration",
                "--max-tokens",
                "--seed",
            ],
        ),
    ],
)
def test_every_option_the_demo_passes_exists(
    command: list[str],
    options: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tuneops.cli.main import main

    text = demo_text()
    assert f"tuneops {' '.join(command)} " in text
    monkeypatch.setattr(sys, "argv", ["tuneops", *command, "--help"])
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit):
        main()
    help_text = capsys.readouterr().out
    for option in options:
        assert option in text
        assert re.search(rf"{re.escape(option)}\b", help_text), f"tuneops {' '.join(command)} has no {option}"
