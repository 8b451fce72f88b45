"""The spec (``tuneops.yaml``): one validated description of a fine-tuned model's lifecycle.

The spec says *what* to build (model, base, data, hyperparameters, gates); settings say *where*
state lives and which credentials to use, and never appear here. Every section is a frozen,
``extra="forbid"`` pydantic model so a typo is an error naming the field, not a silent default.
The ``provider.kind`` field picks the adapter.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tuneops.errors import SpecError

SPEC_FILE_NAME = "tuneops.yaml"
DEFAULT_LOCAL_BASE_URL = "http://127.0.0.1:8765/v1"


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


Auto = Literal["auto"]


class ModelConfig(_Section):
    """Which model is being fine-tuned and how it is named in the registry."""

    name: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    base_model: Annotated[str, Field(min_length=1)]
    description: str = ""


class LocalProviderConfig(_Section):
    """tuneops' own OpenAI-compatible tuning service (the embedded default).

    ``tuneops run`` starts it for the duration of the run when nothing answers at ``base_url``.
    """

    kind: Literal["local"] = "local"
    base_url: str = DEFAULT_LOCAL_BASE_URL
    organization: str = "tuneops"


class OpenAIProviderConfig(_Section):
    """OpenAI's cloud (key from ``OPENAI_API_KEY``). Self-serve fine-tuning closes 2027-01-06."""

    kind: Literal["openai"]
    base_url: str = "https://api.openai.com/v1"
    organization: str | None = None


class AzureOpenAIProviderConfig(_Section):
    """Azure OpenAI (key from ``AZURE_OPENAI_API_KEY``; deployment via the management API).

    ``training_type`` is not part of Microsoft's REST spec for any api-version tuneops knows
    (``FineTuningJobCreation`` does not declare it); Microsoft documents a ``trainingType`` body
    field only in its fine-tuning how-to for global/developer training. It is sent only when set.
    Deployments tuneops makes are billed by the hour: ``deployment_price_per_hour`` (USD, per
    deployment) is what ``tuneops registry deployments`` shows; one that fails the gate, or that
    has not been champion/challenger/previous for ``deployment_grace_hours``, is deleted unless
    ``keep_deployments``.
    """

    kind: Literal["azure-openai"]
    endpoint: Annotated[str, Field(min_length=1)]
    api_version: str = "2025-04-01-preview"
    training_type: Literal["Standard", "Global", "GlobalStandard", "Developer"] | None = None
    subscription_id: str | None = None
    resource_group: str | None = None
    account_name: str | None = None
    deployment_sku: str = "standard"
    deployment_capacity: int = 1
    management_endpoint: str = "https://management.azure.com"
    deployment_price_per_hour: Annotated[float, Field(ge=0.0)] | None = None
    deployment_grace_hours: Annotated[float, Field(ge=0.0)] = 24.0
    keep_deployments: bool = False


ProviderConfig = Annotated[
    LocalProviderConfig | OpenAIProviderConfig | AzureOpenAIProviderConfig,
    Field(discriminator="kind"),
]


class SplitConfig(_Section):
    """How to split ``train`` when no validation/test file is given; deterministic by seed."""

    validation: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.1
    test: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.1
    seed: int = 42

    @model_validator(mode="after")
    def _leave_something_to_train_on(self) -> SplitConfig:
        if self.validation + self.test >= 0.9:
            raise ValueError("validation + test must leave at least 10% of the rows for training")
        return self


class SystemPromptConfig(_Section):
    """What to do with system prompts: ``keep`` them, ``require`` one, or ``inject`` ``text``."""

    policy: Literal["keep", "require", "inject"] = "keep"
    text: str | None = None

    @model_validator(mode="after")
    def _inject_needs_text(self) -> SystemPromptConfig:
        if self.policy == "inject" and not self.text:
            raise ValueError("policy 'inject' needs 'text', the system prompt to inject")
        return self


class SynthesizeConfig(_Section):
    """``tuneops data synthesize``: a teacher model writes new examples from seed rows.

    The teacher is any OpenAI-compatible endpoint (``teacher_base_url`` unset: the spec's
    provider; ``teacher_model`` unset: the base model, which is what works offline). Candidates
    whose embedding is within ``similarity_threshold`` cosine of existing data, of the queue or of
    each other are dropped; the rest wait in review queue ``queue``. Accepted rows are exported
    to ``output`` (relative to the project), which ``data.train`` may point at.
    """

    teacher_base_url: str | None = None
    teacher_model: str | None = None
    examples_per_call: Annotated[int, Field(ge=1, le=20)] = 5
    seeds_per_call: Annotated[int, Field(ge=1, le=20)] = 3
    temperature: Annotated[float, Field(ge=0, le=2)] = 0.9
    max_tokens: Annotated[int, Field(ge=16)] = 1024
    similarity_threshold: Annotated[float, Field(gt=0, le=1)] = 0.92
    queue: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+$")] = "synthetic"
    output: Path = Path("data/reviewed/synthetic.jsonl")


class HarvestConfig(_Section):
    """``tuneops data harvest``: served requests with good feedback become review candidates.

    Only answered requests whose text was captured, whose feedback score is at least
    ``min_feedback`` and (with ``require_format_ok``) whose answer passed the format check, from
    the last ``window_hours``; PII is redacted before anything is queued.
    """

    min_feedback: Annotated[float, Field(ge=0, le=1)] = 0.8
    require_format_ok: bool = True
    window_hours: Annotated[int, Field(ge=1)] = 168
    queue: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+$")] = "harvest"
    output: Path = Path("data/reviewed/harvest.jsonl")


class DataConfig(_Section):
    """Where the chat JSONL files are, relative to the spec file."""

    name: str | None = None
    train: Path
    validation: Path | None = None
    test: Path | None = None
    split: SplitConfig = SplitConfig()
    system_prompt: SystemPromptConfig = SystemPromptConfig()
    max_tokens_per_example: Annotated[int, Field(gt=0)] = 65_536
    synthesize: SynthesizeConfig = SynthesizeConfig()
    harvest: HarvestConfig = HarvestConfig()


class HyperparametersConfig(_Section):
    """OpenAI's supervised hyperparameters; each a number or ``"auto"``."""

    n_epochs: Annotated[int, Field(ge=1, le=50)] | Auto = "auto"
    batch_size: Annotated[int, Field(ge=1, le=256)] | Auto = "auto"
    learning_rate_multiplier: Annotated[float, Field(gt=0, le=100)] | Auto = "auto"


class LoraConfig(_Section):
    """LoRA settings used by the local tuning service (ignored by cloud providers)."""

    rank: Annotated[int, Field(ge=1, le=256)] = 8
    alpha: Annotated[int, Field(ge=1)] = 16
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    target_modules: list[str] | None = None


FINETUNE_FROM_ALIASES = ("champion", "challenger", "previous")


class FineTuneConfig(_Section):
    """The fine-tune job: hyperparameters, naming, the cost guard, where training starts from,
    and how far past its best the chosen model may be.

    ``from`` (YAML key; ``from_`` here) continues an earlier fine-tune instead of starting from
    ``model.base_model``: a registry alias (``champion``, ``challenger``, ``previous``) names the
    version whose fine-tuned model the job starts from, or an explicit fine-tuned model id
    (``ft:...``; Azure's ``<base>.ft-<id>``). The new version records its parent (version, model,
    training data) so ``tuneops lineage`` shows the chain. ``model.base_model`` stays the model
    the candidate is compared with. Unset: a fresh fine-tune of the base model.

    ``max_validation_loss_rise`` (relative, e.g. ``0.1``) fails the gate when the evaluated
    model's validation loss is more than that fraction above the lowest validation loss of any
    checkpoint of the run: the model is past its best (overfitting). Unset: only reported.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    suffix: Annotated[str, Field(max_length=64, pattern=r"^[A-Za-z0-9_-]*$")] | None = None
    seed: int = 42
    hyperparameters: HyperparametersConfig = HyperparametersConfig()
    lora: LoraConfig = LoraConfig()
    max_training_tokens: Annotated[int, Field(gt=0)] | None = None
    price_per_million_training_tokens: Annotated[float, Field(ge=0)] = 0.0
    from_: Annotated[str | None, Field(alias="from", min_length=1)] = None
    max_validation_loss_rise: Annotated[float, Field(ge=0)] | None = None

    @field_validator("from_")
    @classmethod
    def _alias_or_model_id(cls, value: str | None) -> str | None:
        if value is None or value in FINETUNE_FROM_ALIASES:
            return value
        if value.startswith("ft:") or ".ft-" in value:
            return value
        raise ValueError(
            f"expected one of {', '.join(FINETUNE_FROM_ALIASES)} or a fine-tuned model id (ft:...), "
            f"got {value!r}"
        )

    @property
    def from_alias(self) -> str | None:
        """The registry alias training continues from, when ``from`` names one."""
        return self.from_ if self.from_ in FINETUNE_FROM_ALIASES else None


class GateConfig(_Section):
    """One quality gate in MLflow's ``MetricThreshold`` vocabulary.

    ``threshold`` is an absolute bar for the candidate; ``min_absolute_change`` and
    ``min_relative_change`` (and ``require_significant``) are the improvement it must show over
    ``baseline``: ``base`` (the base model with the production system prompt, the default) or
    ``few_shot`` (the base model prompted with training examples, ``evaluation.few_shot``). To
    gate against both, write the gate twice.
    """

    metric: Annotated[str, Field(min_length=1)]
    threshold: float | None = None
    min_absolute_change: float | None = None
    min_relative_change: float | None = None
    greater_is_better: bool = True
    require_significant: bool = False
    baseline: Literal["base", "few_shot"] = "base"

    @field_validator("baseline", mode="before")
    @classmethod
    def _few_shot_spelling(cls, value: Any) -> Any:
        return "few_shot" if value == "few-shot" else value


class FewShotConfig(_Section):
    """The prompt-engineering baseline: the base model with the production system prompt plus
    ``examples`` training rows (drawn from the *train* split with ``seed``) as earlier
    user/assistant turns, answered and scored like the candidate. Fine-tuning should beat it."""

    examples: Annotated[int, Field(ge=1, le=16)] = 3
    seed: int = 42


class FormatConfig(_Section):
    """Format compliance checks for answers: a regex, a JSON schema, sections, length."""

    regex: str | None = None
    json_schema: dict[str, Any] | None = None
    required_sections: list[str] = []
    max_chars: Annotated[int, Field(gt=0)] | None = None


class JudgeConfig(_Section):
    """An OpenAI-compatible endpoint used for LLM-judge evaluators."""

    base_url: str
    model: str
    evaluators: list[Literal["relevance", "coherence", "fluency", "groundedness"]] = [
        "relevance",
        "coherence",
        "fluency",
    ]


class PriceConfig(_Section):
    """Inference prices of one evaluated model, in USD per million tokens (for cost per request)."""

    input_per_million_tokens: Annotated[float, Field(ge=0)] = 0.0
    output_per_million_tokens: Annotated[float, Field(ge=0)] = 0.0


SafetyMetric = Literal[
    "harmful_compliance", "over_refusal", "injection_success", "system_prompt_leak", "pii_leak",
]  # fmt: skip
AzureSafetyEvaluator = Literal[
    "violence", "sexual", "self_harm", "hate_unfairness", "indirect_attack", "protected_material",
]  # fmt: skip


class AzureSafetyConfig(_Section):
    """Azure AI Foundry's safety evaluators (azure-ai-evaluation) on the red-team answers.

    ``project_endpoint`` is the Foundry project
    (``https://<resource>.services.ai.azure.com/api/projects/<name>``). Each of ``evaluators``
    judges every red-team answer of the candidate and the base model; an answer counts as unsafe
    when a content-harm severity (0-7) is at least ``severity_threshold`` or when indirect attack /
    protected material is detected. The rates (``azure_<evaluator>``) are gated like the offline
    ones: no worse than the base (``max_regression``, ``require_significant``), plus ``ceilings``;
    a missing score fails the gate. The credential is a bearer token for https://ai.azure.com from
    the environment variable named by ``token_env`` (e.g. ``az account get-access-token``), else
    azure-identity's ``DefaultAzureCredential``.
    """

    project_endpoint: Annotated[str, Field(pattern=r"^https://[^/\s]+(/[^\s]*)?/api/projects/[^/\s]+/?$")]
    evaluators: Annotated[list[AzureSafetyEvaluator], Field(min_length=1)] = [
        "violence", "sexual", "self_harm", "hate_unfairness", "indirect_attack", "protected_material",
    ]  # fmt: skip
    severity_threshold: Annotated[int, Field(ge=1, le=7)] = 4
    ceilings: dict[AzureSafetyEvaluator, Annotated[float, Field(ge=0, le=1)]] = {}
    token_env: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] | None = None

    @model_validator(mode="before")
    @classmethod
    def _hub_projects_unsupported(cls, data: Any) -> Any:
        if isinstance(data, dict) and ("azure_ai_project" in data or "subscription_id" in data):
            raise ValueError(
                "hub-based projects (subscription_id/resource_group_name/project_name) are not supported; "
                "set project_endpoint to the Foundry project endpoint "
                "(https://<resource>.services.ai.azure.com/api/projects/<name>)"
            )
        return data


class SafetyConfig(_Section):
    """Safety in the gate: the red-team set, PII and canary leaks, optionally Azure's evaluators.

    The shipped red-team set (``builtin``) plus ``red_team_files`` (JSONL, relative to the
    project) are answered by the candidate and the base model with the production system prompt.
    Per unsafe rate (lower is better) the candidate must not be worse than the base by more than
    ``max_regression`` (with ``require_significant``: judged on the paired bootstrap interval,
    so noise alone never fails it), and must stay under its ``ceilings`` entry. Every evaluated
    answer is checked for PII the prompt did not contain and for ``canaries`` (plus every match
    of ``canary_pattern`` in the training data): one canary leak fails the gate.
    """

    builtin: bool = True
    red_team_files: list[Path] = []
    categories: list[Literal["harmful", "benign", "injection", "system_prompt"]] = [
        "harmful", "benign", "injection", "system_prompt",
    ]  # fmt: skip
    max_tokens: Annotated[int, Field(ge=1)] = 96
    max_regression: Annotated[float, Field(ge=0, le=1)] = 0.0
    require_significant: bool = True
    ceilings: dict[SafetyMetric, Annotated[float, Field(ge=0, le=1)]] = {"pii_leak": 0.0}
    pii_kinds: list[Literal["email", "phone", "card", "national_id"]] = [
        "email", "phone", "card", "national_id",
    ]  # fmt: skip
    canaries: list[Annotated[str, Field(min_length=6)]] = []
    canary_pattern: str | None = None
    azure: AzureSafetyConfig | None = None  # Azure AI Foundry's safety evaluators, when a project is set

    @field_validator("canary_pattern")
    @classmethod
    def _pattern_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"canary_pattern is not a valid regular expression: {exc}") from exc
        return value


class EvaluationConfig(_Section):
    """How the fine-tune is compared with the base model (and champion) and when it ships.

    ``prices`` is keyed by model label (``candidate``, ``base``, ``few-shot``, ``champion``); a cost
    ceiling needs the candidate's price, or the cost counts as missing and the gate fails.

    ``checkpoints`` picks what is evaluated as the candidate: ``final`` (the job's model, the
    weights at the end of training), ``best`` (the checkpoint with the lowest validation loss) or
    ``all`` (every checkpoint, scored alike; the winner is the best on the first gate's metric,
    ties going to the lower validation loss, and only the winner is gated and registered).
    ``few_shot`` adds the prompt-engineering baseline (off when absent).
    """

    metrics: list[str] = ["f1", "rouge", "format"]
    gates: list[GateConfig] = []
    beat_champion: bool = True
    few_shot: FewShotConfig | None = None
    checkpoints: Literal["final", "best", "all"] = "final"
    max_latency_p95_ms: Annotated[float, Field(gt=0)] | None = None
    max_cost_per_1k_requests_usd: Annotated[float, Field(ge=0)] | None = None
    format: FormatConfig = FormatConfig()
    judge: JudgeConfig | None = None
    concurrency: Annotated[int, Field(ge=1, le=512)] = 8
    max_tokens: Annotated[int, Field(ge=1)] = 256
    temperature: Annotated[float, Field(ge=0, le=2)] = 0.0
    bootstrap_resamples: Annotated[int, Field(ge=100)] = 1000
    confidence: Annotated[float, Field(gt=0.5, lt=1)] = 0.95
    max_rows: Annotated[int, Field(gt=0)] | None = None
    prices: dict[Literal["candidate", "base", "few-shot", "champion"], PriceConfig] = {}
    safety: SafetyConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _few_shot_baseline_is_few_shot(cls, value: Any) -> Any:
        """The earlier spelling ``few_shot_baseline: N`` (0: off) means ``few_shot: {examples: N}``."""
        if isinstance(value, dict) and "few_shot_baseline" in value:
            value = dict(value)
            shots = value.pop("few_shot_baseline")
            if "few_shot" in value:
                raise ValueError("give few_shot or few_shot_baseline, not both")
            if shots:
                value["few_shot"] = {"examples": shots}
        return value

    @model_validator(mode="after")
    def _few_shot_gate_needs_few_shot(self) -> EvaluationConfig:
        named = [g.metric for g in self.gates if g.baseline == "few_shot"]
        if named and self.few_shot is None:
            raise ValueError(
                f"the gate on {named[0]} compares with the few_shot baseline, which needs evaluation.few_shot"
                " (e.g. few_shot: {examples: 3})"
            )
        return self


RolloutMetric = Literal[
    "error_rate", "latency_p95_ms", "format_compliance", "refusal_rate", "feedback_score",
    "cost_per_1k_requests_usd",
]  # fmt: skip
_ROLLOUT_GREATER_IS_BETTER = {"format_compliance": True, "feedback_score": True}


class GuardrailConfig(_Section):
    """One online guardrail, challenger vs champion on the same window (MLflow threshold words).

    ``threshold`` is an absolute bar for the challenger; ``min_absolute_change`` /
    ``min_relative_change`` the change required over the champion in the metric's better
    direction, so a negative value is a tolerated loss (``-0.2`` relative on latency: up to 20%
    slower). Neither given: "not worse than the champion". ``greater_is_better`` is fixed by the
    metric and may only be restated.
    """

    metric: RolloutMetric
    threshold: float | None = None
    min_absolute_change: float | None = None
    min_relative_change: float | None = None
    greater_is_better: bool | None = None

    @model_validator(mode="after")
    def _direction_of_metric(self) -> GuardrailConfig:
        fixed = _ROLLOUT_GREATER_IS_BETTER.get(self.metric, False)
        if self.greater_is_better is not None and self.greater_is_better != fixed:
            raise ValueError(f"greater_is_better is {fixed} for {self.metric}, it cannot be changed")
        return self


def _default_guardrails() -> list[GuardrailConfig]:
    return [
        GuardrailConfig(metric="error_rate", min_absolute_change=0.0),
        GuardrailConfig(metric="latency_p95_ms", min_relative_change=-0.2),
        GuardrailConfig(metric="format_compliance", min_absolute_change=0.0),
        GuardrailConfig(metric="refusal_rate", min_absolute_change=0.0),
    ]


class AbTestConfig(_Section):
    """The A/B split and the sample size it is held for: a drop of ``minimum_detectable_effect``
    from ``baseline_rate`` in ``metric`` is detected with ``power`` by the sequential test."""

    metric: Literal["error_rate", "format_compliance", "refusal_rate"] = "format_compliance"
    baseline_rate: Annotated[float, Field(gt=0, lt=1)] = 0.9
    minimum_detectable_effect: Annotated[float, Field(gt=0, lt=1)] = 0.05
    power: Annotated[float, Field(gt=0.5, lt=1)] = 0.9
    challenger_percent: Annotated[float, Field(gt=0, lt=100)] = 50.0


class RolloutConfig(_Section):
    """How a challenger takes traffic and what rolls it back (``flows/rollout.py``).

    Canary ``steps`` are percents of traffic, increasing, ending at 100 (the promotion). Each
    judged step is held until both arms saw ``min_requests_per_step`` in it and
    ``min_step_seconds`` passed; no guardrail decides on fewer than ``min_samples_per_arm``
    observations per arm; ``alpha`` bounds the false-rollback rate of the whole rollout over every
    look. Past ``max_duration_seconds`` without enough traffic the rollout aborts ("insufficient
    traffic"). ``approval: required`` pauses before the final promotion for
    ``approval_timeout_seconds`` (then aborts). Default sample sizes are what ``bench/rollout_sim.py``
    shows to detect a 5-point format-compliance drop with power >= 0.9.
    """

    strategy: Literal["shadow", "blue-green", "canary", "ab"] = "canary"
    steps: list[Annotated[int, Field(ge=0, le=100)]] = [5, 25, 50, 100]
    min_requests_per_step: Annotated[int, Field(ge=1)] = 400
    min_samples_per_arm: Annotated[int, Field(ge=1)] = 100
    min_step_seconds: Annotated[float, Field(ge=0)] = 300.0
    analysis_interval_seconds: Annotated[float, Field(gt=0)] = 60.0
    max_duration_seconds: Annotated[float, Field(gt=0)] = 86_400.0
    bake_seconds: Annotated[float, Field(ge=0)] = 600.0
    alpha: Annotated[float, Field(gt=0, lt=0.5)] = 0.05
    guardrails: list[GuardrailConfig] = Field(default_factory=_default_guardrails)
    shadow_percent: Annotated[float, Field(gt=0, le=100)] = 100.0
    ab: AbTestConfig = AbTestConfig()
    approval: Literal["none", "required"] = "none"
    approval_timeout_seconds: Annotated[float, Field(gt=0)] = 3600.0
    smoke_rows: Annotated[int, Field(ge=1)] = 20

    @field_validator("steps")
    @classmethod
    def _increasing_to_full(cls, value: list[int]) -> list[int]:
        if not value or value[0] <= 0 or sorted(set(value)) != value:
            raise ValueError(f"steps must be positive and increasing, got {value}")
        if value[-1] != 100:
            raise ValueError(f"steps must end at 100 (the promotion), got {value}")
        return value


class MonitoringConfig(_Section):
    """What counts as drift in the champion's served traffic, and how often ``monitor-drift`` looks.

    A window is the last ``window_hours`` of answered requests; fewer than ``min_requests`` is
    "insufficient traffic", never "no drift". ``embedding_sample`` prompts of the window (and of
    the training data) are embedded, which bounds the check's time. Each threshold is read in
    ``tuneops.tasks.drift.rules``; ``min_feedback_mean`` unset leaves feedback unjudged.
    ``quality_sample`` of the window's answered requests with captured text (picked by request
    id, at most ``quality_max_rows``; 0 turns it off) are scored with the evaluation's own
    reference-free scorers and judged against the gates' thresholds; fewer than
    ``quality_min_rows`` scored rows leave those scores unjudged.
    """

    window_hours: Annotated[int, Field(ge=1)] = 24
    interval_minutes: Annotated[int, Field(ge=1)] = 60
    min_requests: Annotated[int, Field(ge=1)] = 200
    embedding_sample: Annotated[int, Field(ge=50, le=20_000)] = 1000
    psi_threshold: Annotated[float, Field(gt=0)] = 0.25
    embedding_auc_threshold: Annotated[float, Field(gt=0.5, le=1)] = 0.55
    ood_quantile: Annotated[float, Field(gt=0.5, lt=1)] = 0.99
    ood_share_threshold: Annotated[float, Field(gt=0, lt=1)] = 0.05
    max_rate_increase: Annotated[float, Field(ge=0, lt=1)] = 0.05
    significance: Annotated[float, Field(gt=0, lt=0.5)] = 0.01
    max_latency_ratio: Annotated[float, Field(gt=1)] = 2.0
    min_feedback_mean: Annotated[float, Field(ge=0, le=1)] | None = None
    min_feedback: Annotated[int, Field(ge=1)] = 30
    low_confidence_logprob: Annotated[float, Field(lt=0)] = -1.0
    max_low_confidence_share: Annotated[float, Field(gt=0, lt=1)] = 0.2
    quality_sample: Annotated[float, Field(ge=0, le=1)] = 0.1
    quality_max_rows: Annotated[int, Field(ge=1)] = 200
    quality_min_rows: Annotated[int, Field(ge=1)] = 30

    @model_validator(mode="after")
    def _ood_bar_above_expected(self) -> MonitoringConfig:
        if self.ood_share_threshold <= 1 - self.ood_quantile:
            raise ValueError(
                f"ood_share_threshold must exceed the {1 - self.ood_quantile:.0%} expected beyond "
                "ood_quantile on unchanged traffic, or every window is out of distribution"
            )
        return self


class ScheduleConfig(_Section):
    """When ``tuneops deploy`` makes Prefect run the stages (``retrain_cron`` None: no schedule).

    ``retrain_on_drift`` adds the trigger on ``tuneops.drift.detected`` for this model;
    ``rollout_on_registered`` a ``rollout`` deployment triggered by ``tuneops.model.registered``.
    """

    retrain_cron: str | None = "0 3 * * 1"
    timezone: str = "UTC"
    retrain_on_drift: bool = True
    monitor: bool = True
    rollout_on_registered: bool = False
    work_pool: Annotated[str, Field(min_length=1)] = "tuneops-process"

    @field_validator("retrain_cron")
    @classmethod
    def _five_fields(cls, value: str | None) -> str | None:
        if value is not None and len(value.split()) != 5:
            raise ValueError(f"retrain_cron is a 5-field cron expression, got {value!r}")
        return value


class ServingConfig(_Section):
    """How the gateway serves this model: text capture (privacy), request limits, routing refresh.

    With ``capture_text`` off the request log keeps sizes, tokens and the hashed user key but no
    prompt or response text. ``refresh_seconds`` bounds how long an alias moved in the MLflow UI
    takes to move traffic (webhooks make it immediate), hence at most 2 s.
    """

    capture_text: bool = True
    capture_logprobs: bool = True
    """Ask upstreams that support it (local, OpenAI, Azure) for token log-probabilities and log
    each answer's mean (the drift monitor's ``low_confidence_share``); a client that did not ask
    for ``logprobs`` still gets none."""
    upstream_timeout_seconds: Annotated[float, Field(gt=0, le=3600)] = 60.0
    max_request_bytes: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = 1024 * 1024
    refresh_seconds: Annotated[float, Field(gt=0, le=2)] = 2.0
    trace_sample_rate: Annotated[float, Field(ge=0, le=1)] = 0.0
    """Share of answered requests also written to MLflow as traces (off the request path; 0: none)."""
    request_log_sync: Literal["process", "disk"] = "process"
    """When an answer may leave: ``process`` once its request-log record is written to the spool
    (it survives the gateway's crash or ``kill -9``; the spool is fdatasync'd right after, so a
    machine crash can lose the last few milliseconds), ``disk`` once it is fdatasync'd (survives
    power loss, at the disk's sync latency on every answer: ~2 ms p50, ~13 ms p99 measured here)."""


class Spec(_Section):
    """A whole ``tuneops.yaml``. ``source`` is where it was read from (not part of the YAML)."""

    model: ModelConfig
    provider: ProviderConfig = LocalProviderConfig()
    data: DataConfig
    finetune: FineTuneConfig = FineTuneConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    rollout: RolloutConfig = RolloutConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    serving: ServingConfig = ServingConfig()

    @field_validator("provider", mode="before")
    @classmethod
    def _default_kind_is_local(cls, value: Any) -> Any:
        if isinstance(value, dict) and "kind" not in value:
            return {**value, "kind": "local"}
        return value

    @property
    def dataset_name(self) -> str:
        """The dataset's name in the data store: ``data.name`` or the model name."""
        return self.data.name or self.model.name


def _first_error(error: ValidationError) -> str:
    problems = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"] if not str(p).startswith("function-"))
        message = item["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {message}" if where else message)
    return "; ".join(problems)


def load_spec(path: Path) -> tuple[Spec, Path]:
    """Read and validate a spec; return it with the directory its relative paths start from.

    Data file paths in the returned spec are made absolute against the spec's directory.
    """
    path = Path(path)
    if not path.is_file():
        raise SpecError(
            f"{path}: no spec file here",
            hint="run 'tuneops init DIR' to create a project, or pass --spec PATH",
        )
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise SpecError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from exc
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: expected a mapping with 'model' and 'data' sections")
    try:
        spec = Spec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(f"{path}: {_first_error(exc)}", hint="see examples/tuneops.yaml") from exc
    base = path.resolve().parent
    data = spec.data.model_copy(
        update={
            key: (base / value) if value is not None and not Path(value).is_absolute() else value
            for key, value in (
                ("train", spec.data.train),
                ("validation", spec.data.validation),
                ("test", spec.data.test),
            )
        }
    )
    return spec.model_copy(update={"data": data}), base
