"""The rollout's report: the chart of per-arm metrics and intervals, and the MLflow run holding it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from tests.tasks.rollout.test_rules import arm, progress
from tuneops.append_only import utcnow
from tuneops.settings import TuneopsSettings
from tuneops.spec import Spec
from tuneops.tasks.rollout.plot import rollout_figure
from tuneops.tasks.rollout.report import log_rollout_run
from tuneops.tasks.rollout.rules import RolloutPolicy, judge
from tuneops.tasks.rollout.state import RolloutStore, StepRow


def judged_steps(looks: int = 4) -> list[StepRow]:
    start = utcnow()
    rows = [StepRow(start, 0, "5%", 500, "enter", 0, 0, "entered step 5%", None)]
    for i in range(1, looks + 1):
        n = 100 * i
        verdict = judge(arm("challenger", n, seed=i), arm("champion", n, seed=i + 10), RolloutPolicy(),
                        progress(n, n, need=50))  # fmt: skip
        rows.append(StepRow(start + timedelta(seconds=i), 0, "5%", 500, verdict.action, n, n,
                            verdict.summary(), verdict.to_dict()))  # fmt: skip
    return rows


def test_the_chart_has_per_arm_values_and_an_interval_band_per_check() -> None:
    steps = judged_steps()
    figure = rollout_figure(steps, "rollout 1")
    checks = {(c["metric"], c["kind"]) for c in steps[-1].verdict["checks"]}  # type: ignore[index]
    axes = figure.get_axes()
    assert len(axes) == 2 * len(checks)
    for arms_axis, gain_axis in zip(axes[::2], axes[1::2], strict=True):
        labels = {line.get_label() for line in arms_axis.get_lines()}
        assert {"challenger", "champion"} <= labels
        arms = [line for line in arms_axis.get_lines() if line.get_label() in ("challenger", "champion")]
        assert [len(line.get_xdata()) for line in arms] == [4, 4]
        assert gain_axis.collections, "the interval band is drawn"
        assert "required" in {line.get_label() for line in gain_axis.get_lines()}


def test_the_chart_of_a_rollout_without_looks_says_so() -> None:
    figure = rollout_figure([])
    assert "no judged look yet" in [t.get_text() for t in figure.get_axes()[0].texts]


def test_the_mlflow_run_of_a_rollout_holds_the_chart(tmp_path: Path, mlflow_store: Any) -> None:
    settings = TuneopsSettings(project_dir=tmp_path, tracking_uri=mlflow_store.tracking_uri,
                               artifact_root=mlflow_store.artifact_root,
                               state_db_url=f"sqlite:///{tmp_path / 'state.db'}")  # fmt: skip
    spec = Spec.model_validate(
        {"model": {"name": "bot", "base_model": "tuneops-tiny"}, "data": {"train": "t"}}
    )
    store = RolloutStore.open(settings.state_db_url or "")
    record, _ = store.begin("bot", "2", "1", "canary", flow_run_id=None)
    for s in judged_steps():
        store.append_step(record.id, step_index=s.step_index, step_name=s.step_name, weight=s.weight,
                          action=s.action, summary=s.summary, verdict=s.verdict, at=s.at)  # fmt: skip
    record = store.set_status(record.id, "promoted", "held")
    run_id = log_rollout_run(spec, settings, record, store.steps(record.id))
    store.close()
    png = list(Path(mlflow_store.artifact_root.removeprefix("file://")).rglob("rollout/metrics.png"))
    assert len(png) == 1 and run_id in str(png[0])
    assert png[0].read_bytes().startswith(b"\x89PNG")
