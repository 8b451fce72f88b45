"""End to end against tuneops' own local OpenAI-compatible service (a real tiny model on CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuneops.serving.local.launcher import ServiceProcess
from tuneops.serving.local.testing import (  # noqa: F401 - pytest fixtures
    as_jsonl,
    claims_chat_examples,
    local_service,
    tiny_test_model,
)
from tuneops.serving.local.tinymodel import TINY_MODEL_ID
from tuneops.settings import TuneopsSettings
from tuneops.tasks.evaluation.pipeline import (
    BASE_LABEL,
    CANDIDATE_LABEL,
    evaluate_candidate,
    model_under_test,
)

from .conftest import make_spec

pytestmark = pytest.mark.slow


def test_base_vs_candidate_table_with_intervals_logged_to_mlflow(
    local_service: ServiceProcess,  # noqa: F811 - the fixture imported above
    eval_settings: TuneopsSettings,
    tmp_path: Path,
) -> None:
    test_file = tmp_path / "claims-test.jsonl"
    test_file.write_bytes(as_jsonl(claims_chat_examples(8, seed=3)))
    spec = make_spec(
        local_service.base_url,
        metrics=["f1", "rouge", "meteor", "format", "refusal"],
        format={"regex": r"CLAIM_TYPE=\w+; PRIORITY=\w+; NEXT=\w+"},
        gates=[{"metric": "f1", "min_absolute_change": 0.0}, {"metric": "format", "threshold": 0.5}],
        max_tokens=16,
    )
    settings = eval_settings.model_copy(update={"local_api_key": None})
    result = evaluate_candidate(
        spec,
        settings,
        test_file,
        model_under_test(spec, settings, CANDIDATE_LABEL, TINY_MODEL_ID),
        model_under_test(spec, settings, BASE_LABEL, TINY_MODEL_ID),
        show_progress=False,
    )
    cand, base = result.summaries[CANDIDATE_LABEL], result.summaries[BASE_LABEL]
    assert cand.rows == base.rows == 8 and cand.latency_p95_ms is not None and cand.tokens > 0
    for metric in ("f1", "rouge", "meteor", "format", "refusal"):
        interval = cand.metrics[metric]
        assert interval is not None and interval.low <= interval.estimate <= interval.high, metric
    # Same model, greedy decoding: the same answers, so no difference and no improvement.
    assert result.comparisons[BASE_LABEL]["f1"].estimate == 0.0
    assert [c.kind for c in result.decision.checks] == ["min_absolute_change", "threshold"]
    # The tiny untrained model does not produce the claims format: the format gate fails.
    assert not result.passed and [c.kind for c in result.decision.failures] == ["threshold"]
    assert result.mlflow_run_id is not None
    assert f"| f1 | {cand.metrics['f1'].estimate:.3f}" in result.markdown
