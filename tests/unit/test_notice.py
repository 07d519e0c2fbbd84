"""The completion notice of an llm job queued from a chat (SPEC 12), carried by the
run's webhook."""

from __future__ import annotations

import dataclasses
import json

from termjobs.actors.notifier import payload
from termjobs.jobdef import Job
from termjobs.model import ExitReason, Run, RunOutput, RunStatus
from tests.helpers import make_job, make_run

ORIGIN = {"origin": "web", "session_id": "chat-42"}


def agent_job(**config: object) -> Job:
    runner_config = {"agent_name": "reviewer", "instructions": "Review it.", "cwd": "/tmp", **config}
    return make_job("queued-agent", runner_type="llm", runner_config=runner_config)


def ended(
    job: Job,
    status: RunStatus,
    *,
    response: str | None = None,
    error: str | None = None,
    exit_reason: ExitReason | None = None,
) -> Run:
    output = RunOutput(response=response)
    run = make_run(job)
    return dataclasses.replace(run, status=status, output=output, error=error, exit_reason=exit_reason)


def sent(job: Job, run: Run) -> dict[str, object]:
    body: dict[str, object] = json.loads(payload(job, run))
    return body


def test_an_agent_queued_from_a_chat_says_how_it_ended_and_where_to() -> None:
    job = agent_job(notify_when_done=True, notify_origin=ORIGIN)
    run = ended(job, RunStatus.SUCCEEDED, response="STATUS: done\n\n  All   three files\nlook fine.\n")
    assert sent(job, run)["notice"] == {
        "origin": ORIGIN,
        "text": "Queued job job_queued-agent (reviewer) succeeded: All three files look fine.",
    }


def test_the_excerpt_prefers_the_error_then_an_unusual_exit_and_is_cut_at_240() -> None:
    job = agent_job(notify_when_done=True, notify_origin=ORIGIN)
    failed = ended(job, RunStatus.FAILED, error="provider down", response="partial")
    timed = ended(job, RunStatus.TIMED_OUT, exit_reason=ExitReason.TIMEOUT, response="partial")
    long = ended(job, RunStatus.SUCCEEDED, response="word " * 100)
    assert sent(job, failed)["notice"]["text"].endswith("failed: provider down")  # type: ignore[index]
    assert sent(job, timed)["notice"]["text"].endswith("timed_out: timeout")  # type: ignore[index]
    excerpt = sent(job, long)["notice"]["text"].split("succeeded: ")[1]  # type: ignore[index]
    assert len(excerpt) == 240 and excerpt.endswith("…")


def test_no_notice_without_an_origin_or_the_flag_or_for_a_program() -> None:
    no_origin = agent_job(notify_when_done=True)
    not_asked = agent_job(notify_origin=ORIGIN)
    program = make_job("plain")
    for job in (no_origin, not_asked, program):
        assert "notice" not in sent(job, ended(job, RunStatus.SUCCEEDED))
