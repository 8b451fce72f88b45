"""Acceptance on the project's example: fine-tune on the local service, then evaluate vs the base.

The example spec (``examples/tuneops.yaml``) with its own gates; the tiny CPU model is fine-tuned
briefly on part of the claims data through the local service's OpenAI fine-tuning API, then the
fine-tune and the base answer the held-out claims side by side. Whatever the tiny model learns in
seconds, the table has intervals, everything lands in MLflow, and the decision is exactly what the
spec's thresholds say about the numbers in the table.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from openai import OpenAI

from tuneops.serving.local.launcher import ServiceProcess
from tuneops.serving.local.testing import local_service, tiny_test_model  # noqa: F401 - fixtures
from tuneops.settings import TuneopsSettings
from tuneops.spec import load_spec
from tuneops.tasks.evaluation.pipeline import (
    BASE_LABEL,
    CANDIDATE_LABEL,
    FEW_SHOT_LABEL,
    evaluate_candidate,
    model_under_test,
)

pytestmark = pytest.mark.slow
EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def fine_tune(service: ServiceProcess, train: Path) -> str:
    client = OpenAI(base_url=service.base_url, api_key="unused", max_retries=0)
    lines = train.read_bytes().splitlines()[:64]  # a subset keeps the test short
    uploaded = client.files.create(file=("train.jsonl", b"\n".join(lines) + b"\n"), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model="tuneops-tiny",
        training_file=uploaded.id,
        suffix="claims",
        hyperparameters={"n_epochs": 2, "batch_size": 4},
    )
    deadline = time.monotonic() + 300
    while (job := client.fine_tuning.jobs.retrieve(job.id)).status not in (
        "succeeded",
        "failed",
        "cancelled",
    ):
        assert time.monotonic() < deadline, "fine-tune did not finish in 5 minutes"
        time.sleep(0.25)
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model
    return job.fine_tuned_model


@pytest.mark.skipif(not (EXAMPLES / "tuneops.yaml").is_file(), reason="examples/ not present")
def test_example_fine_tune_vs_base_follows_the_spec_gates(
    local_service: ServiceProcess,  # noqa: F811 - the fixture imported above
    eval_settings: TuneopsSettings,
) -> None:
    spec, _ = load_spec(EXAMPLES / "tuneops.yaml")
    # The example's gates, on the test suite's model: tuneops-tiny instead of SmolLM2 (minutes, not
    # seconds), and one few-shot example instead of the example's two (tiny's 1,024-token context).
    few_shot = spec.evaluation.few_shot
    assert few_shot is not None, "the example has a few-shot baseline"
    evaluation = spec.evaluation.model_copy(
        update={
            "max_rows": 12, "max_tokens": 32, "bootstrap_resamples": 300, "safety": None,
            "few_shot": few_shot.model_copy(update={"examples": 1}),
        }
    )  # fmt: skip
    spec = spec.model_copy(
        update={
            "model": spec.model.model_copy(update={"base_model": "tuneops-tiny"}),
            # no job checkpoint report is read here, so no overfitting gate (tests/flows covers it)
            "finetune": spec.finetune.model_copy(update={"max_validation_loss_rise": None}),
            "provider": spec.provider.model_copy(update={"base_url": local_service.base_url}),
            "evaluation": evaluation,
        }
    )
    settings = eval_settings.model_copy(update={"local_api_key": None})
    tuned = fine_tune(local_service, spec.data.train)

    result = evaluate_candidate(
        spec,
        settings,
        spec.data.test,
        model_under_test(spec, settings, CANDIDATE_LABEL, tuned),
        model_under_test(spec, settings, BASE_LABEL, spec.model.base_model),
        few_shot_source=spec.data.train,
        show_progress=False,
    )

    cand, base = result.summaries[CANDIDATE_LABEL], result.summaries[BASE_LABEL]
    assert (cand.model, base.model, cand.rows, base.rows) == (tuned, "tuneops-tiny", 12, 12)
    for metric in ("f1", "rouge", "format"):
        for summary in (cand, base):
            interval = summary.metrics[metric]
            assert interval is not None and interval.low <= interval.estimate <= interval.high
        assert result.comparisons[BASE_LABEL][metric] is not None
    assert "| f1 |" in result.markdown and f"candidate ({tuned})" in result.markdown

    # The decision is what the example's gates say about these numbers, check by check (worked
    # out here from the spec's gates, so the test follows the example spec as it evolves).
    expected = []
    labels = {"base": BASE_LABEL, "few_shot": FEW_SHOT_LABEL}
    assert result.summaries[FEW_SHOT_LABEL].rows == 12
    for gate in spec.evaluation.gates:
        assert gate.greater_is_better and gate.min_relative_change is None, "extend this test"
        baseline = labels[gate.baseline]
        if gate.threshold is not None:
            expected.append(("threshold", cand.mean(gate.metric) >= gate.threshold))
        if gate.min_absolute_change is not None:
            gain = cand.mean(gate.metric) - result.summaries[baseline].mean(gate.metric)
            expected.append(("min_absolute_change", gain >= gate.min_absolute_change - 1e-9))
        if gate.require_significant:
            expected.append(("significance", result.comparisons[baseline][gate.metric].low > 0))
    assert expected, "the example spec has gates"
    assert [(c.kind, c.passed) for c in result.decision.checks] == expected
    assert result.passed is all(passed for _, passed in expected)

    run = MlflowClient(tracking_uri=settings.tracking_uri).get_run(result.mlflow_run_id)
    assert run.data.tags["tuneops.gate"] == ("passed" if result.passed else "failed")
    assert run.data.metrics["candidate.f1"] == pytest.approx(cand.mean("f1"))
    assert run.data.params["candidate.model"] == tuned
