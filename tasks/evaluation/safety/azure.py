"""Azure AI Foundry's safety evaluators on the red-team answers (``evaluation.safety.azure``).

The adapter half: azure-ai-evaluation's ``ViolenceEvaluator``, ``SexualEvaluator``,
``SelfHarmEvaluator``, ``HateUnfairnessEvaluator``, ``IndirectAttackEvaluator`` and
``ProtectedMaterialEvaluator`` run through one ``evaluate()`` call over every red-team answer of
every model (one row per model and prompt). Each evaluator call is one request to the project's
evaluation service (``POST {project_endpoint}/sync_evals:run``, bearer token). The per-row
verdicts become unsafe indicators (``azure_<evaluator>``: 1.0 unsafe, 0.0 safe, NaN no score)
that ``evaluate`` gates exactly like the offline ones; a row the service left unscored is named
by a failed completeness check (a missing score never passes silently).

``evaluate()`` is called without ``azure_ai_project``, so nothing is uploaded to the project: only
the evaluators' own calls leave the machine. The token is never logged.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tuneops.errors import UsageError
from tuneops.spec import AzureSafetyConfig
from tuneops.tasks.evaluation.rules import SafetyCheck
from tuneops.tasks.evaluation.safety.rules import RedTeamPrompt
from tuneops.tasks.evaluation.types import ModelAnswers

SEVERITY_EVALUATORS = ("violence", "sexual", "self_harm", "hate_unfairness")
_CLASSES = {
    "violence": "ViolenceEvaluator",
    "sexual": "SexualEvaluator",
    "self_harm": "SelfHarmEvaluator",
    "hate_unfairness": "HateUnfairnessEvaluator",
    "indirect_attack": "IndirectAttackEvaluator",
    "protected_material": "ProtectedMaterialEvaluator",
}
# the output column of each evaluator's verdict (a 0-7 severity score, or a detected label)
_COLUMNS = {name: f"{name}_score" for name in SEVERITY_EVALUATORS} | {
    "indirect_attack": "indirect_attack_label",
    "protected_material": "protected_material_label",
}


def metric_name(evaluator: str) -> str:
    """The unsafe-rate name an Azure evaluator's verdicts are gated and logged under."""
    return f"azure_{evaluator}"


class StaticTokenCredential:
    """An azure-core ``TokenCredential`` holding one bearer token (no login, nothing refreshed).

    For CI and tests: the token comes from ``az account get-access-token --resource
    https://ai.azure.com`` or a test server; ``repr`` never shows it.
    """

    def __init__(self, token: str, lifetime_s: int = 3600) -> None:
        self._token = token
        self._expires_on = int(time.time()) + lifetime_s

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        return AccessToken(self._token, self._expires_on)

    def __repr__(self) -> str:
        return "StaticTokenCredential(<hidden>)"


def credential_for(config: AzureSafetyConfig) -> Any:
    """The token of ``config.token_env`` when named, else azure-identity's ``DefaultAzureCredential``.

    Raises:
        UsageError: ``token_env`` names an unset or empty variable.
    """
    if config.token_env:
        token = os.environ.get(config.token_env, "").strip()
        if not token:
            raise UsageError(
                f"evaluation.safety.azure.token_env names {config.token_env}, which is not set",
                hint=f"export {config.token_env}=$(az account get-access-token --resource "
                "https://ai.azure.com --query accessToken -o tsv)",
            )
        return StaticTokenCredential(token)
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


def _evaluators(config: AzureSafetyConfig, credential: Any) -> dict[str, Any]:
    import azure.ai.evaluation as sdk

    return {
        name: getattr(sdk, _CLASSES[name])(credential=credential, azure_ai_project=config.project_endpoint)
        for name in dict.fromkeys(config.evaluators)
    }


def _verdict(evaluator: str, value: Any, threshold: int) -> float:
    """1.0 unsafe, 0.0 safe, NaN when the service gave no usable verdict."""
    if evaluator in SEVERITY_EVALUATORS:
        try:
            score = float(value)
        except (TypeError, ValueError):
            return math.nan
        return math.nan if not math.isfinite(score) else float(score >= threshold)
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return float(value.lower() == "true")
    return math.nan


def azure_indicators(
    config: AzureSafetyConfig,
    prompts: Sequence[RedTeamPrompt],
    answers: Mapping[str, ModelAnswers],
    credential: Any,
) -> dict[str, dict[str, list[float]]]:
    """``{label: {azure_<evaluator>: per-prompt indicator}}`` from one ``evaluate()`` over all answers."""
    from tuneops.tasks.evaluation.score import _run_evaluate

    evaluators = _evaluators(config, credential)
    out = {label: {metric_name(e): [math.nan] * len(prompts) for e in evaluators} for label in answers}
    with tempfile.TemporaryDirectory(prefix="tuneops-azure-safety-") as tmp:
        data = Path(tmp) / "rows.jsonl"
        with data.open("w", encoding="utf-8") as handle:
            for label, model_answers in answers.items():
                for i, (item, answer) in enumerate(zip(prompts, model_answers.answers, strict=True)):
                    row = {"label": label, "row": i, "query": item.prompt, "response": answer.response or " "}
                    handle.write(json.dumps(row) + "\n")
        result = _run_evaluate(data, evaluators)
    for row in result["rows"]:
        label, i = row["inputs.label"], int(row["inputs.row"])
        for name in evaluators:
            value = row.get(f"outputs.{name}.{_COLUMNS[name]}")
            out[label][metric_name(name)][i] = _verdict(name, value, config.severity_threshold)
    return out


def completeness_checks(
    indicators: Mapping[str, Mapping[str, Sequence[float]]], prompts: Sequence[RedTeamPrompt]
) -> list[SafetyCheck]:
    """One failed check per model and evaluator the service left rows unscored for (naming them)."""
    checks = []
    for label, metrics in indicators.items():
        for metric, values in metrics.items():
            missing = tuple(p.id for p, v in zip(prompts, values, strict=True) if math.isnan(v))
            if missing:
                checks.append(
                    SafetyCheck(
                        "safety_completeness",
                        False,
                        f"{metric}: the Azure safety service scored no verdict for {len(missing)} of "
                        f"{len(values)} {label} answers (a missing score fails the gate)",
                        metric,
                        label,
                        float(len(missing)),
                        0.0,
                        missing,
                    )
                )
    return checks
