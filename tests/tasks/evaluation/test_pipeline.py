"""evaluate_candidate end to end: chat stub over HTTP, offline scoring, a real MLflow store.

Models of known quality (see conftest) make each gate outcome certain: pass, fail on the
absolute threshold, fail on too small an improvement, fail on losing to the champion, fail on
the latency ceiling; plus fault injection.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlparse

import pytest
from mlflow import MlflowClient

from tuneops.errors import ProviderError
from tuneops.settings import TuneopsSettings
from tuneops.spec import FineTuneConfig
from tuneops.tasks.evaluation.pipeline import (
    BASE_LABEL,
    CANDIDATE_LABEL,
    CHAMPION_LABEL,
    FEW_SHOT_LABEL,
    EvaluationResult,
    evaluate_candidate,
    few_shot_variant,
    model_under_test,
)
from tuneops.tasks.evaluation.types import ModelUnderTest
from tuneops.tasks.finetune.checkpoints import TrainingReport, analyse_training
from tuneops.tasks.finetune.types import Checkpoint
from tuneops.testing.chat_stub import ChatStub, StubConfig, running_chat_stub

from .conftest import QUESTIONS, STUB_KEY, make_spec, stub_answer

pytestmark = pytest.mark.slow

F1_GATE = {"metric": "f1", "threshold": 0.6, "min_absolute_change": 0.2}


def run(
    stub: ChatStub,
    settings: TuneopsSettings,
    test_file: Path,
    candidate: str,
    *,
    base: str = "base",
    champion: str | None = None,
    log_to_mlflow: bool = True,
    **evaluation: object,
) -> EvaluationResult:
    spec = make_spec(stub.base_url, gates=[F1_GATE], **evaluation)
    return evaluate_candidate(
        spec,
        settings,
        test_file,
        model_under_test(spec, settings, CANDIDATE_LABEL, candidate),
        model_under_test(spec, settings, BASE_LABEL, base),
        model_under_test(spec, settings, CHAMPION_LABEL, champion) if champion else None,
        dataset_digest="a" * 64,
        log_to_mlflow=log_to_mlflow,
        show_progress=False,
    )


def failed_kinds(result: EvaluationResult) -> list[str]:
    return [c.kind for c in result.decision.failures]


def test_pass_is_logged_to_one_mlflow_run(
    stub: ChatStub, eval_settings: TuneopsSettings, test_file: Path
) -> None:
    result = run(stub, eval_settings, test_file, "ft-good")
    assert result.passed, result.decision.reasons
    cand, base = result.summaries[CANDIDATE_LABEL], result.summaries[BASE_LABEL]
    assert cand.mean("f1") == 1.0 and base.mean("f1") == 0.0
    diff = result.comparisons[BASE_LABEL]["f1"]
    assert diff is not None and diff.low > 0 and diff.n == 30
    assert (
        "| f1 | 1.000 [1.000, 1.000] | 0.000 [0.000, 0.000] | +1.000 [+1.000, +1.000] * |" in result.markdown
    )

    client = MlflowClient(tracking_uri=eval_settings.tracking_uri)
    run_ = client.get_run(result.mlflow_run_id)
    assert run_.data.tags["tuneops.stage"] == "evaluation" and run_.data.tags["tuneops.gate"] == "passed"
    assert run_.data.metrics["candidate.f1"] == 1.0 and run_.data.metrics["base.f1"] == 0.0
    assert run_.data.metrics["candidate_minus_base.f1.ci_low"] > 0
    assert run_.data.metrics["gate.passed"] == 1.0
    assert run_.data.params["candidate.model"] == "ft-good" and run_.data.params["base.model"] == "base"
    [logged_input] = run_.inputs.dataset_inputs
    sha256 = hashlib.sha256(test_file.read_bytes()).hexdigest()
    assert logged_input.dataset.digest == sha256[:36] and logged_input.dataset.name == "capitals"
    assert {t.key: t.value for t in logged_input.tags}["tuneops.version_digest"] == "a" * 64
    artifacts = {a.path for a in client.list_artifacts(run_.info.run_id, "evaluation")}
    assert artifacts == {"evaluation/rows.json", "evaluation/comparison.png", "evaluation/decision.json",
                         "evaluation/summary.md"}  # fmt: skip
    root = Path(urlparse(run_.info.artifact_uri).path)
    table = json.loads((root / "evaluation/rows.json").read_text())
    assert len(table["data"]) == 60
    assert json.loads((root / "evaluation/decision.json").read_text())["passed"] is True
    assert (root / "evaluation/comparison.png").read_bytes()[:4] == b"\x89PNG"
    # The API key appears nowhere in what was logged: artifacts, params, tags, the whole database.
    for path in root.rglob("*"):
        assert not path.is_file() or STUB_KEY.encode() not in path.read_bytes(), path
    assert STUB_KEY not in json.dumps(run_.data.params) + json.dumps(run_.data.tags)
    db = Path(urlparse(eval_settings.tracking_uri).path)
    assert db.is_file() and STUB_KEY.encode() not in db.read_bytes()


def test_fail_on_absolute_threshold(stub: ChatStub, eval_settings: TuneopsSettings, test_file: Path) -> None:
    result = run(stub, eval_settings, test_file, "ft-mediocre")
    assert not result.passed
    assert failed_kinds(result) == ["threshold"]
    assert result.decision.reasons == ("f1 0.5 fails threshold >= 0.6",)
    run_ = MlflowClient(tracking_uri=eval_settings.tracking_uri).get_run(result.mlflow_run_id)
    assert run_.data.tags["tuneops.gate"] == "failed" and run_.data.metrics["gate.passed"] == 0.0


def test_fail_on_insufficient_improvement(
    stub: ChatStub, eval_settings: TuneopsSettings, test_file: Path
) -> None:
    result = run(stub, eval_settings, test_file, "ft-good", base="base-strong")
    assert failed_kinds(result) == ["min_absolute_change"]
    assert "f1 vs base: absolute improvement 0.1 < required 0.2" in result.decision.reasons


def test_fail_on_regression_vs_champion(
    stub: ChatStub, eval_settings: TuneopsSettings, test_file: Path
) -> None:
    result = run(stub, eval_settings, test_file, "ft-ok", champion="champ-good")
    assert failed_kinds(result) == ["champion"]
    assert result.decision.reasons == ("f1 0.8 loses to champion 1",)
    assert result.summaries[CHAMPION_LABEL].mean("f1") == 1.0
    assert "candidate - champion" in result.markdown


def test_fail_on_latency_ceiling(stub: ChatStub, eval_settings: TuneopsSettings, test_file: Path) -> None:
    result = run(stub, eval_settings, test_file, "ft-slow", max_latency_p95_ms=40)
    assert failed_kinds(result) == ["latency"]
    assert result.summaries[CANDIDATE_LABEL].latency_p95_ms > 40


def test_few_shot_baseline_from_the_train_split(
    stub: ChatStub, eval_settings: TuneopsSettings, test_file: Path
) -> None:
    few_shot_gate = {"metric": "f1", "baseline": "few_shot", "min_absolute_change": 0.2}
    spec = make_spec(stub.base_url, gates=[F1_GATE, few_shot_gate], few_shot={"examples": 2, "seed": 5})
    result = evaluate_candidate(
        spec, eval_settings, test_file,
        model_under_test(spec, eval_settings, CANDIDATE_LABEL, "ft-good"),
        model_under_test(spec, eval_settings, BASE_LABEL, "base"),
        few_shot_source=test_file, log_to_mlflow=False, show_progress=False,
    )  # fmt: skip
    assert list(result.summaries) == [CANDIDATE_LABEL, BASE_LABEL, FEW_SHOT_LABEL]
    assert [c.against for c in result.decision.checks if c.kind == "min_absolute_change"] == [
        BASE_LABEL,
        FEW_SHOT_LABEL,
    ]
    assert result.passed
    assert f"{FEW_SHOT_LABEL} (base)" in result.markdown  # base, few-shot and candidate side by side
    assert result.mlflow_run_id is None


def test_few_shot_examples_are_drawn_with_the_seed_from_the_train_split(test_file: Path) -> None:
    base = ModelUnderTest(BASE_LABEL, "http://x/v1", "base", system_prompt="s", system_prompt_mode="inject")
    first = few_shot_variant(base, test_file, 3, seed=1)
    assert few_shot_variant(base, test_file, 3, seed=1) == first
    assert few_shot_variant(base, test_file, 3, seed=2).few_shot != first.few_shot
    assert len(first.few_shot) == 3
    for example in first.few_shot:
        assert [role for role, _ in example] == ["user", "assistant"]  # the system prompt is not repeated
        question, answer = example[0][1], example[1][1]
        assert QUESTIONS[question] == answer
    assert (first.label, first.model, first.system_prompt) == (FEW_SHOT_LABEL, "base", "s")
    assert len(few_shot_variant(base, test_file, 99).few_shot) == len(QUESTIONS)


def _training(final: str, *losses_and_models: tuple[float, str]) -> TrainingReport:
    points = [
        Checkpoint(step=i + 1, model=m, valid_loss=loss) for i, (loss, m) in enumerate(losses_and_models)
    ]
    return analyse_training(points, final_model=final, epochs_requested=len(points), total_steps=len(points))


def test_every_checkpoint_is_scored_and_the_winner_is_gated(
    stub: ChatStub, eval_settings: TuneopsSettings, test_file: Path
) -> None:
    spec = make_spec(stub.base_url, gates=[F1_GATE])
    spec = spec.model_copy(update={"finetune": FineTuneConfig(max_validation_loss_rise=0.1)})
    # the stub answers by model id: checkpoint 2 answers everything right, the others less
    training = _training("ft-ok", (2.0, "ft-mediocre"), (1.0, "ft-good"), (1.5, "ft-ok:ckpt-step-3"))
    candidates = [
        replace(model_under_test(spec, eval_settings, CANDIDATE_LABEL, model), label=f"ckpt-step-{step}")
        for step, model in ((1, "ft-mediocre"), (2, "ft-good"), (3, "ft-ok"))
    ]
    result = evaluate_candidate(
        spec, eval_settings, test_file, candidates,
        model_under_test(spec, eval_settings, BASE_LABEL, "base"),
        training=training, show_progress=False,
    )  # fmt: skip
    assert result.decision.candidate == "ckpt-step-2" and result.candidate_model == "ft-good"
    assert set(result.summaries) == {"ckpt-step-1", "ckpt-step-2", "ckpt-step-3", BASE_LABEL}
    assert list(result.comparisons) == [BASE_LABEL]
    assert result.passed, result.decision.summary()
    [overfit] = [c for c in result.decision.checks if c.kind == "overfitting"]
    assert overfit.passed and overfit.observed == 0.0
    assert "3 checkpoints evaluated; `ckpt-step-2`" in result.markdown
    client = MlflowClient(eval_settings.tracking_uri)
    metrics = client.get_run(result.mlflow_run_id).data.metrics
    assert {"ckpt-step-1.f1", "ckpt-step-2.f1", "ckpt-step-3.f1"} <= set(metrics)


def test_a_final_model_past_its_best_fails_the_overfitting_gate(
    stub: ChatStub, eval_settings: TuneopsSettings, test_file: Path
) -> None:
    spec = make_spec(stub.base_url, gates=[F1_GATE])
    spec = spec.model_copy(update={"finetune": FineTuneConfig(max_validation_loss_rise=0.1)})
    training = _training("ft-good", (2.0, "ft-good:ckpt-step-1"), (1.0, "ft-good:ckpt-step-2"), (1.5, "x"))
    result = evaluate_candidate(
        spec, eval_settings, test_file,
        model_under_test(spec, eval_settings, CANDIDATE_LABEL, "ft-good"),
        model_under_test(spec, eval_settings, BASE_LABEL, "base"),
        training=training, log_to_mlflow=False, show_progress=False,
    )  # fmt: skip
    assert not result.passed
    assert failed_kinds(result) == ["overfitting"]
    [reason] = result.decision.reasons
    assert "+50.0% above the run's best" in reason and "epoch 2 (step 2)" in reason
    assert "evaluation.checkpoints: best" in reason and "n_epochs" in reason
    assert "final, epoch 3 (step 3)" in reason
    assert "**Training**: best epoch 2 (step 2)" in result.markdown


def test_fault_injection_completes_the_evaluation(eval_settings: TuneopsSettings, test_file: Path) -> None:
    config = StubConfig(
        answer=stub_answer,
        api_key=STUB_KEY,
        share_429=0.2,
        share_500=0.2,
        retry_after_s=0.01,
        retry_after_on_500=True,
        max_faults_per_request=4,
    )
    with running_chat_stub(config) as stub:
        result = run(stub, eval_settings, test_file, "ft-good")
        assert stub.stats.statuses[429] and stub.stats.statuses[500]
    assert result.passed and result.summaries[CANDIDATE_LABEL].rows == 30


def test_rows_that_cannot_be_answered_fail_the_evaluation_naming_how_many(
    eval_settings: TuneopsSettings, test_file: Path
) -> None:
    def base_fails_on_malta(model: str, messages: list[dict[str, object]]) -> bool:
        return model == "base" and "Malta" in str(messages[-1]["content"])

    config = StubConfig(
        answer=stub_answer, api_key=STUB_KEY, always_fail=base_fails_on_malta, retry_after_on_500=True
    )
    with (
        running_chat_stub(config) as stub,
        pytest.raises(ProviderError, match=r"base \(base at http://127.0.0.1:\d+/v1\): 1 of 30 rows"),
    ):
        run(stub, eval_settings, test_file, "ft-good")
    assert MlflowClient(tracking_uri=eval_settings.tracking_uri).search_runs(["0"]) == []


def test_cost_ceiling_needs_the_candidates_price(
    stub: ChatStub, eval_settings: TuneopsSettings, test_file: Path
) -> None:
    ceiling = {"max_cost_per_1k_requests_usd": 1.0}
    unpriced = run(stub, eval_settings, test_file, "ft-good", log_to_mlflow=False, **ceiling)
    assert failed_kinds(unpriced) == ["cost"]
    assert unpriced.decision.reasons == ("candidate cost per 1k requests is missing",)
    sent = stub.stats.requests
    prices = {"candidate": {"input_per_million_tokens": 100.0, "output_per_million_tokens": 200.0}}
    priced = run(stub, eval_settings, test_file, "ft-good", prices=prices, **ceiling)
    assert stub.stats.requests == sent  # the answers came from the cache: only the pricing changed
    cost = priced.summaries[CANDIDATE_LABEL].cost_per_1k_usd
    assert cost is not None and cost > 1.0 and failed_kinds(priced) == ["cost"]
    assert priced.summaries[BASE_LABEL].cost_per_1k_usd is None
    cheap = run(stub, eval_settings, test_file, "ft-good", max_cost_per_1k_requests_usd=cost, prices=prices)
    assert cheap.passed


def test_a_dead_judge_fails_the_evaluation_before_any_answer_is_generated(
    stub: ChatStub, eval_settings: TuneopsSettings, test_file: Path
) -> None:
    from tuneops.testing.dead_endpoint import closed_endpoint

    url = closed_endpoint()
    judge = {"base_url": url, "model": "judge-1", "evaluators": ["relevance"]}
    with pytest.raises(ProviderError, match=rf"^judge endpoint unreachable \({url}\): "):
        run(stub, eval_settings, test_file, "ft-good", judge=judge)
    assert stub.stats.requests == 0  # no model was asked anything
    assert MlflowClient(tracking_uri=eval_settings.tracking_uri).search_runs(["0"]) == []
