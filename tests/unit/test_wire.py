"""JSON shapes: omission rules and timestamp format."""

from __future__ import annotations

import dataclasses
import datetime as dt

from termjobs import wire
from termjobs.http.cache import RenderedRuns
from termjobs.jobdef import Job, JobDefinition
from termjobs.model import (
    EventType,
    ExitReason,
    JSONObject,
    Run,
    RunEvent,
    RunnerType,
    RunOutput,
    RunStatus,
    RunTrigger,
    TriggerType,
    format_ts,
    parse_ts,
)
from tests.helpers import EPOCH, make_run


def test_timestamps_are_utc_z_with_trimmed_fractions() -> None:
    assert format_ts(EPOCH) == "2026-03-01T12:00:00Z"
    assert format_ts(EPOCH.replace(microsecond=123400)) == "2026-03-01T12:00:00.1234Z"
    berlin = dt.datetime(2026, 3, 1, 13, 0, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert format_ts(berlin) == "2026-03-01T12:00:00Z"
    assert parse_ts("2026-03-01T13:00:00+01:00") == EPOCH
    assert parse_ts("2026-03-01T12:00:00Z") == EPOCH
    assert parse_ts("2026-03-01T12:00:00") is None


def job(**changes: object) -> Job:
    spec = JobDefinition(
        name="a",
        runner_type=RunnerType.PROGRAM,
        runner_config={"command": "true"},
        trigger_type=TriggerType.MANUAL,
        trigger_config={},
    )
    base = Job(id="job_a", spec=spec, next_run_at=None, last_fire_at=None, created_at=EPOCH, updated_at=EPOCH)
    spec_changes = {key: value for key, value in changes.items() if hasattr(spec, key)}
    job_changes = {key: value for key, value in changes.items() if key not in spec_changes}
    return dataclasses.replace(base, spec=dataclasses.replace(spec, **spec_changes), **job_changes)  # type: ignore[arg-type]


def test_job_keeps_the_field_order_of_the_reference_system() -> None:
    out = wire.job_json(job(labels={"k": "v"}, schedule_timezone="UTC", next_run_at=EPOCH))
    assert list(out) == [
        "id",
        "name",
        "enabled",
        "runner_type",
        "runner_config",
        "trigger_type",
        "trigger_config",
        "schedule_timezone",
        "concurrency_policy",
        "max_concurrent_runs",
        "timeout_seconds",
        "misfire_policy",
        "misfire_grace_seconds",
        "labels",
        "next_run_at",
        "created_at",
        "updated_at",
    ]
    assert out["concurrency_policy"] == "forbid" and out["runner_type"] == "program"


def test_job_omits_empty_optional_fields() -> None:
    out = wire.job_json(job())
    for absent in ("schedule_timezone", "retry_policy", "labels", "next_run_at", "last_run", "last_fire_at"):
        assert absent not in out
    assert out["runner_config"] == {"command": "true"}
    full = wire.job_json(job(labels={"k": "v"}, retry_policy={"max_attempts": 2}, next_run_at=EPOCH))
    assert full["labels"] == {"k": "v"} and full["next_run_at"] == "2026-03-01T12:00:00Z"


def test_run_summary_drops_payloads_but_keeps_metadata() -> None:
    run = Run(
        id="run_a",
        job_id="job_a",
        attempt=1,
        trigger=RunTrigger.MANUAL,
        scheduled_for=EPOCH,
        status=RunStatus.FAILED,
        error="boom",
        exit_reason=ExitReason.EXCEPTION,
        output=RunOutput(exit_code=0, stdout="out", stderr="err"),
        created_at=EPOCH,
        updated_at=EPOCH,
    )
    full, summary = wire.run_json(run), wire.run_json(run, full=False)
    assert full["stdout"] == "out" and full["stderr"] == "err"
    assert "stdout" not in summary and "stderr" not in summary
    assert summary["error"] == "boom" and summary["exit_code"] == 0
    for absent in ("worker_id", "started_at", "finished_at", "truncated", "turn_count", "retry_of"):
        assert absent not in full


def test_event_shape() -> None:
    event = RunEvent(
        id=7,
        run_id="run_a",
        job_id="job_a",
        event_type=EventType.QUEUED,
        message=None,
        data=None,
        created_at=EPOCH,
    )
    assert wire.event_json(event) == {
        "id": 7,
        "run_id": "run_a",
        "event_type": "queued",
        "created_at": "2026-03-01T12:00:00Z",
    }
    assert wire.event_json(event, with_job=True)["job_id"] == "job_a"
    assert wire.dumps({"a": "é"}) == '{"a":"é"}\n'


def test_a_run_survives_its_json_exactly() -> None:
    """What a cluster's server answers for another: the run rebuilt from its JSON."""
    import dataclasses

    from termjobs.model import ExitReason, RunOutput, RunStatus
    from termjobs.wire import run_from_json, run_json
    from tests.helpers import EPOCH, make_job, make_run

    run = dataclasses.replace(
        make_run(make_job("w")),
        status=RunStatus.FAILED,
        worker_id="worker_a",
        started_at=EPOCH,
        finished_at=EPOCH,
        error="exit 3",
        exit_reason=ExitReason.NATURAL_COMPLETION,
        overrides={"args": ["x"], "env": {"K": "v"}},
        output=RunOutput(stdout="out\n", exit_code=3, turn_count=0),
    )
    assert run_from_json(run_json(run)) == run


def test_a_list_of_items_already_rendered_is_the_same_text_as_the_envelope() -> None:
    items: list[JSONObject] = [{"id": "run_ä", "n": 1}, {"id": "run_b", "ok": True}]
    text = wire.list_text([wire.compact(item) for item in items], total=7, offset=2, limit=2)
    assert text == wire.dumps(wire.list_envelope(items, total=7, offset=2, limit=2))
    assert wire.list_text([], total=0, offset=0, limit=50) == wire.dumps(
        wire.list_envelope([], total=0, offset=0, limit=50)
    )


def test_rendered_runs_keep_only_final_runs_and_see_every_change() -> None:
    rendered = RenderedRuns(size=2)
    running = dataclasses.replace(make_run(job()), status=RunStatus.RUNNING)
    finished = dataclasses.replace(
        running,
        status=RunStatus.SUCCEEDED,
        output=RunOutput(exit_code=0, stdout="out"),
        updated_at=EPOCH + dt.timedelta(seconds=1),
    )
    for run in (running, finished, finished, running):
        for full in (True, False):
            assert rendered.text(run, full=full) == wire.compact(wire.run_json(run, full=full))
    assert rendered.text(finished, full=False) is rendered.text(finished, full=False)  # kept
    assert rendered.text(running, full=False) is not rendered.text(running, full=False)  # not kept
    # A final run changed after all (an operator's edit, updated_at untouched): new text.
    edited = dataclasses.replace(finished, error="edited")
    assert '"error":"edited"' in rendered.text(edited, full=False)
    with_overrides = dataclasses.replace(finished, overrides={"args": ["x"]})  # not hashable
    assert rendered.text(with_overrides, full=True) == wire.compact(wire.run_json(with_overrides))
    chatty = dataclasses.replace(finished, output=RunOutput(exit_code=0, stdout="x" * 5000))
    assert rendered.text(chatty, full=True) == wire.compact(wire.run_json(chatty))
    many = [dataclasses.replace(finished, id=f"run_{i}") for i in range(5)]  # beyond its size
    assert [rendered.text(run, full=True) for run in many] == [
        wire.compact(wire.run_json(run)) for run in many
    ]
