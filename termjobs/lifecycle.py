"""The run state machine: the one table of allowed status changes.

Every status write in storage is guarded by this table (``UPDATE ... WHERE status IN
allowed_from(target)``), so a terminal state is never overwritten and two racing
writers cannot both win.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from termjobs.model import RunStatus

S = RunStatus

#: status -> statuses it may move to
TRANSITIONS: Final[Mapping[RunStatus, frozenset[RunStatus]]] = {
    # waiting for its time, the job's concurrency policy, or a global run slot;
    # a retry whose time comes while its job is paused or busy is skipped
    S.QUEUED: frozenset({S.CLAIMED, S.CANCELLED, S.SKIPPED}),
    # holds a run slot; the runner is being started
    S.CLAIMED: frozenset({S.RUNNING, S.QUEUED, S.CANCELLED, S.FAILED}),
    # the runner is executing
    S.RUNNING: frozenset({S.SUCCEEDED, S.FAILED, S.TIMED_OUT, S.CANCELLED, S.CANCEL_REQUESTED}),
    # cancel asked while running; whatever the runner returns, the run ends cancelled
    S.CANCEL_REQUESTED: frozenset({S.CANCELLED}),
    S.SUCCEEDED: frozenset(),
    S.FAILED: frozenset(),
    S.TIMED_OUT: frozenset(),
    S.CANCELLED: frozenset(),
    S.SKIPPED: frozenset(),
}


class InvalidTransition(Exception):
    """A status change that the state machine does not allow."""


def allowed_from(target: RunStatus) -> frozenset[RunStatus]:
    """The statuses from which a run may move to ``target``."""
    return frozenset(src for src, targets in TRANSITIONS.items() if target in targets)


def check(current: RunStatus, target: RunStatus) -> None:
    """Raise :class:`InvalidTransition` unless ``current -> target`` is allowed."""
    if target not in TRANSITIONS[current]:
        raise InvalidTransition(f"run cannot move from {current} to {target}")
