"""The routing table's log discipline: a failure repeated every refresh is logged once, then once a
minute, then its recovery, while the failure count stays exact."""

from __future__ import annotations

import logging

import pytest

from tuneops.serving.gateway.table import Complaints


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_hour_of_failures_every_two_seconds_logs_a_handful_of_lines(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    complaints = Complaints(repeat_seconds=60, clock=clock)
    with caplog.at_level(logging.WARNING, logger="tuneops.serving.gateway.table"):
        logged = 0
        for _ in range(1800):
            logged += complaints.failed("claims", "routing refresh of claims failed: MLflow is down")
            clock.now += 2
        assert complaints.recovered("claims", "routing refresh of claims")
        assert not complaints.recovered("claims", "routing refresh of claims")  # no streak: silent
    assert logged == 60
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 61
    assert lines[0] == "routing refresh of claims failed: MLflow is down"
    assert lines[1].endswith("(31 times in a row)")
    assert lines[-1] == "routing refresh of claims works again after 1800 failure(s)"


def test_streaks_are_kept_per_key(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    complaints = Complaints(clock=clock)
    with caplog.at_level(logging.WARNING, logger="tuneops.serving.gateway.table"):
        assert complaints.failed("a", "a broke")
        assert complaints.failed("b", "b broke")  # another key starts its own streak
        assert not complaints.failed("a", "a broke")
        assert complaints.recovered("a", "a")
        assert complaints.failed("a", "a broke")  # a new streak is news again
    assert [r.getMessage() for r in caplog.records] == [
        "a broke",
        "b broke",
        "a works again after 2 failure(s)",
        "a broke",
    ]
