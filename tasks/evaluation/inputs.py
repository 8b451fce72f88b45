"""What one evaluation of a fine-tune compares, and on which split.

The contenders are the candidate (the fine-tune, or the checkpoints of it that
``evaluation.checkpoints`` asks for), the base model with the production system prompt, and the
current champion when the spec asks to beat it and it is a different model; the split is the
dataset version's test split, with its train split as the few-shot source.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from tuneops.errors import DatasetError, VersionNotFoundError
from tuneops.registry.conventions import CHAMPION, TAG_ENDPOINT_MODEL
from tuneops.registry.mlflow_store import RegistryStore
from tuneops.settings import TuneopsSettings
from tuneops.spec import Spec
from tuneops.tasks.data.types import DatasetVersion
from tuneops.tasks.evaluation.pipeline import BASE_LABEL, CANDIDATE_LABEL, CHAMPION_LABEL, model_under_test
from tuneops.tasks.evaluation.types import ModelUnderTest
from tuneops.tasks.finetune.checkpoints import TrainingReport, checkpoint_candidates
from tuneops.tasks.finetune.types import InferenceTarget

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Contenders:
    """The models one evaluation compares: the candidate(s), the base, and the champion if any.

    ``candidates`` holds one model (labelled ``candidate``) or, with ``evaluation.checkpoints:
    all``, one per checkpoint (``ckpt-step-N``); the evaluation gates the winner.
    """

    candidates: tuple[ModelUnderTest, ...]
    base: ModelUnderTest
    champion: ModelUnderTest | None
    champion_version: str | None = None

    @property
    def candidate(self) -> ModelUnderTest | tuple[ModelUnderTest, ...]:
        """What ``evaluate_candidate`` takes: the one candidate, or every checkpoint to choose from."""
        return self.candidates[0] if len(self.candidates) == 1 else self.candidates


@task(name="choose-contenders", cache_policy=NO_CACHE)
def choose_contenders(
    spec: Spec, settings: TuneopsSettings, target: InferenceTarget, training: TrainingReport | None = None
) -> Contenders:
    """Candidate(s) (the fine-tune per ``evaluation.checkpoints``), base and the current champion.

    Checkpoints other than the final model are called by their ``ft:...:ckpt-step-N`` id on the
    same endpoint (OpenAI, the local service). Where inference needs a deployment per model
    (Azure), only the final model is evaluated, with a warning.
    """
    champion, champion_version = None, None
    store = RegistryStore(settings.tracking_uri or "", settings.artifact_root)
    try:
        current = store.version_by_alias(spec.model.name, CHAMPION)
    except VersionNotFoundError:
        current = None
    if current is not None and spec.evaluation.beat_champion:
        endpoint_model = current.tags.get(TAG_ENDPOINT_MODEL)
        if endpoint_model and endpoint_model != target.model:
            champion = model_under_test(spec, settings, CHAMPION_LABEL, endpoint_model)
            champion_version = current.version
    final = model_under_test(spec, settings, CANDIDATE_LABEL, target.model)
    choice = spec.evaluation.checkpoints
    candidates: tuple[ModelUnderTest, ...] = (final,)
    if choice != "final" and training is not None:
        if target.api_version is not None:
            log.warning("evaluation.checkpoints: %s needs a deployment per checkpoint on Azure; "
                        "evaluating the final model only", choice)  # fmt: skip
        else:
            final_id = training.final_model or target.model
            candidates = tuple(
                replace(final, label=c.label, model=target.model if c.model == final_id else c.model)
                for c in checkpoint_candidates(training, choice, final_id)
            )
    return Contenders(
        candidates=candidates,
        base=model_under_test(spec, settings, BASE_LABEL, spec.model.base_model),
        champion=champion,
        champion_version=champion_version,
    )


def evaluation_split_paths(dataset: DatasetVersion, settings: TuneopsSettings) -> tuple[Path, Path | None]:
    """Local paths of the test split (required) and the train split (few-shot source).

    Raises:
        DatasetError: the version has no test split.
    """
    from tuneops.tasks.data import materialize_split

    if dataset.split("test") is None:
        raise DatasetError(
            f"dataset {dataset.ref} has no test split to evaluate on",
            hint="give data.test in tuneops.yaml or a non-zero data.split.test",
        )
    train = Path(materialize_split(dataset, "train", settings)) if dataset.split("train") else None
    return Path(materialize_split(dataset, "test", settings)), train
