"""Checkpoint rules: best epoch, stopped early, the final-vs-best rise, what to evaluate, the winner."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tuneops.tasks.finetune.checkpoints import (
    CANDIDATE_LABEL,
    CheckpointCandidate,
    TrainingReport,
    analyse_training,
    checkpoint_candidates,
    choose_winner,
    epoch_of,
    relative_rise,
)
from tuneops.tasks.finetune.types import Checkpoint

FINAL = "ft:tiny:tuneops:bot:abcd1234"


def ckpt(step: int, loss: float | None, epoch: int | None = None) -> Checkpoint:
    return Checkpoint(step=step, model=f"{FINAL}:ckpt-step-{step}", epoch=epoch, valid_loss=loss)


def report(*losses: float | None, epochs: int | None = None, steps_per_epoch: int = 4) -> TrainingReport:
    """One checkpoint per epoch, ``steps_per_epoch`` steps each."""
    points = [ckpt(steps_per_epoch * (i + 1), loss) for i, loss in enumerate(losses)]
    asked = epochs if epochs is not None else len(losses)
    return analyse_training(
        points, final_model=FINAL, epochs_requested=asked, total_steps=asked * steps_per_epoch
    )


@pytest.mark.parametrize(
    ("step", "total", "epochs", "expected"),
    [
        (4, 20, 5, 1),
        (5, 20, 5, 2),
        (8, 20, 5, 2),
        (20, 20, 5, 5),
        (1, 3, 3, 1),
        (7, 21, 3, 1),
        (8, 21, 3, 2),
        (99, 20, 5, 5),  # past the plan: clamped
        (4, None, 5, None),
        (4, 20, None, None),
        (4, 2, 5, None),  # fewer steps than epochs: no whole epochs to count
        (0, 20, 5, None),
    ],
)
def test_epoch_of_a_step(step: int, total: int | None, epochs: int | None, expected: int | None):
    assert epoch_of(step, total_steps=total, n_epochs=epochs) == expected


@given(st.integers(1, 50), st.integers(1, 40), st.data())
def test_epoch_of_every_epoch_end_is_that_epoch(epochs: int, per_epoch: int, data: st.DataObject):
    epoch = data.draw(st.integers(1, epochs))
    assert epoch_of(epoch * per_epoch, total_steps=epochs * per_epoch, n_epochs=epochs) == epoch
    assert (
        epoch_of(epoch * per_epoch - per_epoch + 1, total_steps=epochs * per_epoch, n_epochs=epochs) == epoch
    )


@pytest.mark.parametrize(
    ("loss", "best", "expected"),
    [
        (1.1, 1.0, 0.1),
        (1.0, 1.0, 0.0),
        (0.9, 1.0, 0.0),
        (0.0, 0.0, 0.0),
        (0.5, 0.0, math.inf),
        (2.0, 0.5, 3.0),
    ],
)
def test_relative_rise(loss: float, best: float, expected: float):
    assert relative_rise(loss, best) == pytest.approx(expected)


def test_overfitting_run_best_early_final_above_it():
    found = report(2.0, 1.2, 1.5, 1.8)
    assert found.best is not None and found.best.epoch == 2 and found.best.step == 8
    assert found.final is not None and found.final.epoch == 4
    assert found.validation_loss_rise == pytest.approx(0.5)
    assert found.stopped_early is False
    metrics = found.metrics()
    assert metrics["best_epoch"] == 2
    assert metrics["best_step"] == 8
    assert metrics["validation_loss_rise"] == pytest.approx(0.5)
    assert metrics["stopped_early"] == 0.0
    assert metrics["final_valid_loss"] == 1.8
    assert "best epoch 2 (step 8)" in found.summary()
    assert "+50.0% vs best" in found.summary()


def test_improving_run_has_no_rise():
    found = report(2.0, 1.5, 1.2)
    assert found.best == found.final
    assert found.validation_loss_rise == 0.0


def test_stopped_early_when_fewer_epochs_than_asked():
    found = report(2.0, 1.5, 1.7, epochs=6)
    assert found.stopped_early is True
    assert found.metrics()["stopped_early"] == 1.0
    assert "stopped early" in found.summary()


def test_ties_go_to_the_earlier_checkpoint():
    found = report(1.5, 1.2, 1.2)
    assert found.best is not None and found.best.step == 8
    assert found.validation_loss_rise == 0.0


def test_no_validation_loss_means_unknown_not_zero():
    found = report(None, None)
    assert found.best is None
    assert found.validation_loss_rise is None
    assert "best_epoch" not in found.metrics() and "validation_loss_rise" not in found.metrics()
    assert "no validation loss" in found.summary()


def test_no_checkpoints_at_all():
    found = analyse_training([], final_model=FINAL, epochs_requested=3)
    assert (found.best, found.final, found.stopped_early, found.validation_loss_rise) == (
        None,
        None,
        None,
        None,
    )
    assert found.metrics() == {"checkpoint_count": 0.0}


def test_unknown_epochs_leave_epoch_unset_and_stopped_early_unknown():
    found = analyse_training([ckpt(3, 1.0), ckpt(6, 1.1)], final_model=FINAL, epochs_requested=None)
    assert found.final is not None and found.final.epoch is None
    assert found.stopped_early is None
    assert "best_epoch" not in found.metrics()
    assert "step 3" in found.summary()


def test_checkpoints_any_order_and_duplicates_are_sorted_once():
    found = analyse_training(
        [ckpt(8, 1.0), ckpt(4, 2.0), ckpt(8, 1.0)], final_model=FINAL, epochs_requested=2, total_steps=8
    )
    assert [c.step for c in found.checkpoints] == [4, 8]
    assert [c.epoch for c in found.checkpoints] == [1, 2]


def test_provider_epoch_is_kept():
    found = analyse_training([ckpt(5, 1.0, epoch=9)], final_model=FINAL, epochs_requested=3, total_steps=15)
    assert found.checkpoints[0].epoch == 9


def test_the_job_model_is_the_last_checkpoint():
    found = report(2.0, 1.2, 1.5)
    assert found.checkpoint_of(FINAL) == found.final
    assert found.rise_of(FINAL) == pytest.approx(0.25)
    assert found.rise_of(f"{FINAL}:ckpt-step-8") == 0.0
    assert found.rise_of("ft:other") is None


@pytest.mark.parametrize(
    ("choice", "losses", "expected"),
    [
        ("final", (2.0, 1.2, 1.5), [(CANDIDATE_LABEL, FINAL)]),
        ("best", (2.0, 1.2, 1.5), [(CANDIDATE_LABEL, f"{FINAL}:ckpt-step-8")]),
        ("best", (2.0, 1.5, 1.2), [(CANDIDATE_LABEL, FINAL)]),  # best is the last: the job's model
        ("best", (None, None), [(CANDIDATE_LABEL, FINAL)]),  # nothing to choose by
        (
            "all",
            (2.0, 1.2, 1.5),
            [
                ("ckpt-step-4", f"{FINAL}:ckpt-step-4"),
                ("ckpt-step-8", f"{FINAL}:ckpt-step-8"),
                ("ckpt-step-12", FINAL),
            ],
        ),
        ("all", (1.0,), [(CANDIDATE_LABEL, FINAL)]),
        ("all", (), [(CANDIDATE_LABEL, FINAL)]),
    ],
)
def test_checkpoint_candidates(
    choice: str, losses: tuple[float | None, ...], expected: list[tuple[str, str]]
):
    chosen = checkpoint_candidates(report(*losses), choice, FINAL)  # type: ignore[arg-type]
    assert [(c.label, c.model) for c in chosen] == expected


def cand(step: int, loss: float | None) -> CheckpointCandidate:
    return CheckpointCandidate(f"ckpt-step-{step}", f"m{step}", ckpt(step, loss))


@pytest.mark.parametrize(
    ("scored", "greater", "winner"),
    [
        ([(cand(4, 1.0), 0.5), (cand(8, 1.2), 0.7)], True, 8),
        ([(cand(4, 1.0), 0.5), (cand(8, 1.2), 0.7)], False, 4),
        ([(cand(4, 1.3), 0.7), (cand(8, 1.2), 0.7)], True, 8),  # tie: lower validation loss
        ([(cand(4, 1.2), 0.7), (cand(8, 1.3), 0.7)], True, 4),
        ([(cand(4, 1.2), 0.7), (cand(8, 1.2), 0.7)], True, 8),  # full tie: the later one
        ([(cand(4, None), 0.7), (cand(8, 1.3), 0.7)], True, 8),  # unknown loss ranks last
        ([(cand(4, 1.0), None), (cand(8, 1.3), 0.1)], True, 8),  # missing score ranks last
        ([(cand(4, 1.0), math.nan), (cand(8, 1.3), 0.1)], True, 8),
        ([(cand(4, 1.0), 0.1 + 0.2), (cand(8, 1.3), 0.3)], True, 4),  # float noise is a tie
    ],
)
def test_choose_winner(scored: list[tuple[CheckpointCandidate, float | None]], greater: bool, winner: int):
    chosen = choose_winner(scored, greater_is_better=greater)
    assert chosen.checkpoint is not None and chosen.checkpoint.step == winner


def test_choose_winner_needs_candidates():
    with pytest.raises(ValueError, match="no candidates"):
        choose_winner([])
