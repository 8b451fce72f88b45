"""One drift check end to end, without Prefect: champion → window → reference → measurements → verdict.

The flow (``flows/monitor.py``) calls this through a thin task; tests and ``tuneops monitor``
reach the same code. The training prompts are embedded once per dataset version and kept in the
state home (``drift/embeddings/<digest>.npy``): a dataset version is immutable, so its sample's
embeddings never change.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from tuneops.requestlog import LoggedRequest
from tuneops.settings import TuneopsSettings
from tuneops.spec import Spec
from tuneops.tasks.data.tokens import count_tokens
from tuneops.tasks.drift import sources
from tuneops.tasks.drift.measure import Reference, measure_window, sample_indices, texts_to_embed
from tuneops.tasks.drift.rules import DriftVerdict, Measurements, decide_drift


@dataclass(frozen=True)
class DriftCheck:
    """A verdict with its context: the champion it judged and what could not be followed."""

    verdict: DriftVerdict
    champion: dict[str, Any]
    notes: tuple[str, ...] = ()
    checked_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.verdict.to_dict(),
            "champion": self.champion,
            "notes": list(self.notes),
            "checked_at": self.checked_at.isoformat(),
        }


def run_drift_check(spec: Spec, settings: TuneopsSettings, now: datetime | None = None) -> DriftCheck:
    """Judge the champion's last ``monitoring.window_hours`` of traffic."""
    config = spec.monitoring
    until = now or datetime.now(UTC)
    since = until - timedelta(hours=config.window_hours)
    champion = sources.load_champion(spec, settings)
    if champion is None:
        rows = sources.read_window(settings, spec.model.name, since, until, None)
        verdict = decide_drift(
            spec.model.name, None, Measurements(requests=0), config, window_start=since, window_end=until
        )
        note = f"{spec.model.name}@champion is not set: nothing to compare {len(rows)} requests with"
        return DriftCheck(verdict=verdict, champion={}, notes=(note,), checked_at=until)

    rows = sources.read_window(settings, spec.model.name, since, until, champion.version)
    window = sources.window_sample(rows)
    notes = list(champion.notes)
    if window.requests < config.min_requests:  # say so without loading the encoder
        measured = Measurements(requests=window.requests)
    else:
        reference = _reference(spec, settings, champion, until, window, notes)
        texts = texts_to_embed(window, config)
        current = None
        if texts and reference.embeddings is not None:
            from tuneops.tasks.drift.embed import embed_texts

            current = embed_texts(texts)
        measured = measure_window(window, reference, current, config)
        measured = _with_quality(measured, spec, settings, rows, champion, notes)
    verdict = decide_drift(
        spec.model.name, champion.version, measured, config, window_start=since, window_end=until
    )
    return DriftCheck(
        verdict=verdict, champion=sources.describe_champion(champion), notes=tuple(notes), checked_at=until
    )


def _with_quality(
    measured: Measurements,
    spec: Spec,
    settings: TuneopsSettings,
    rows: list[LoggedRequest],
    champion: sources.ChampionContext,
    notes: list[str],
) -> Measurements:
    """The measurements plus the sampled quality scores (or why the sample could not be judged)."""
    from tuneops.tasks.drift.scoring import measure_quality

    sample = measure_quality(spec, settings, rows, champion.baseline.scores)
    notes.extend(sample.notes)
    missing = {**measured.missing, **({"quality": sample.missing} if sample.missing else {})}
    return replace(measured, quality=sample.scores, missing=missing)


def _reference(
    spec: Spec,
    settings: TuneopsSettings,
    champion: sources.ChampionContext,
    until: datetime,
    window: Any,
    notes: list[str],
) -> Reference:
    """The training data's prompts (embeddings, lengths), or the reference window's lengths."""
    captured = any(p for p in window.prompts)
    if champion.train_path is not None and captured:
        prompts = sources.training_prompts(champion.train_path)
        if prompts:
            embeddings = _training_embeddings(settings, champion, prompts, spec.monitoring.embedding_sample)
            return Reference(
                embeddings=embeddings,
                prompt_tokens=[count_tokens(p) for p in prompts],
                baseline=champion.baseline,
                description=f"training data {champion.dataset_ref}",
            )
        notes.append(f"no user prompts in the training split of {champion.dataset_ref}")
    if not captured:
        notes.append("prompt texts are not captured: lengths compared with the reference window")
        earlier = sources.reference_window(settings, champion, spec.monitoring.window_hours, until)
        window_rows_tokens = sources.logged_prompt_tokens(earlier)
        return Reference(
            embeddings=None,
            prompt_tokens=window_rows_tokens,
            baseline=champion.baseline,
            description="reference window",
        )
    return Reference(embeddings=None, prompt_tokens=[], baseline=champion.baseline)


def _training_embeddings(
    settings: TuneopsSettings, champion: sources.ChampionContext, prompts: list[str], sample: int
) -> np.ndarray:
    from tuneops.tasks.drift.embed import embed_texts

    digest = (champion.dataset_ref or "unknown").replace("@", "-")
    cache = Path(settings.state_home) / "drift" / "embeddings" / f"{digest}-{sample}.npy"
    if cache.is_file():
        return np.load(cache)
    picked = [prompts[i] for i in sample_indices(len(prompts), sample, seed=0)]
    embeddings = embed_texts(picked)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npy")
    np.save(tmp, embeddings)
    tmp.replace(cache)
    return embeddings
