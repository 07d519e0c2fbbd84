"""The run state machine."""

from __future__ import annotations

import pytest

from termjobs.lifecycle import TRANSITIONS, InvalidTransition, allowed_from, check
from termjobs.model import TERMINAL_STATUSES, RunStatus


def test_terminal_statuses_never_move() -> None:
    for status in TERMINAL_STATUSES:
        assert TRANSITIONS[status] == frozenset()


def test_every_status_has_an_entry() -> None:
    assert set(TRANSITIONS) == set(RunStatus)


def test_allowed_sources() -> None:
    assert allowed_from(RunStatus.CANCELLED) == {
        RunStatus.QUEUED,
        RunStatus.CLAIMED,
        RunStatus.RUNNING,
        RunStatus.CANCEL_REQUESTED,
    }
    assert allowed_from(RunStatus.SUCCEEDED) == {RunStatus.RUNNING}
    assert allowed_from(RunStatus.CANCEL_REQUESTED) == {RunStatus.RUNNING}


def test_check() -> None:
    check(RunStatus.RUNNING, RunStatus.SUCCEEDED)
    with pytest.raises(InvalidTransition, match="cannot move from succeeded to failed"):
        check(RunStatus.SUCCEEDED, RunStatus.FAILED)
    with pytest.raises(InvalidTransition):
        check(RunStatus.CANCEL_REQUESTED, RunStatus.SUCCEEDED)
