"""What one evaluation of a fine-tune compares, and on which split.

The contenders are the candidate (the fine-tune), the base model with the production system
prompt, and the current champion when the spec asks to beat it and it is a different model; the
split is the dataset version's test split, with its train split as the few-shot source.
"""

from __future__ import annotations

from dataclasses import dataclass
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
from tuneops.tasks.finetune.types import InferenceTarget


@dataclass(frozen=True)
class Contenders:
    """The models one evaluation compares: the candidate, the base, and the champion if any."""

    candidate: ModelUnderTest
    base: ModelUnderTest
    champion: ModelUnderTest | None
    champion_version: str | None = None


@task(name="choose-contenders", cache_policy=NO_CACHE)
def choose_contenders(spec: Spec, settings: TuneopsSettings, target: InferenceTarget) -> Contenders:
    """Candidate (the fine-tune), base (production system prompt) and the current champion."""
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
    return Contenders(
        candidate=model_under_test(spec, settings, CANDIDATE_LABEL, target.model),
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
