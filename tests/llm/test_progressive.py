"""Progressive mode against the scripted provider: envelopes while running, passes,
the finalization reserve."""

from __future__ import annotations

import json

import trio

from tests.llm.conftest import LLM
from tests.scripted_llm import ToolCall, Turn

LIMIT_S = 30


def commit(call_id: str, state: dict[str, object], **extra: object) -> ToolCall:
    return ToolCall(call_id, "update_progress", {"state": state, **extra})


async def test_progress_envelopes_show_while_running_and_the_prose_ends_it(llm: LLM) -> None:
    with trio.fail_after(LIMIT_S):
        held = trio.Event()
        llm.model.add(
            Turn(text="Starting.", tool_calls=[commit("p1", {"step": 1}, message="first draft")]),
            Turn(tool_calls=[commit("p2", {"step": 2})], hold=held),
            Turn(tool_calls=[ToolCall("p3", "finalize_progress", {"state": {"step": 3}})]),
            Turn(text="All done in three steps."),
        )
        job = await llm.create(llm.llm_job(progressive=True, stop_when="done"))
        run = (await llm.post(f"/v2/jobs/{job['id']}/trigger")).body
        await llm.model.streaming.wait()
        await llm.wait_event(run["id"], "progress_update")
        live = (await llm.get(f"/v2/runs/{run['id']}")).body
        assert live["status"] == "running" and live["turn_count"] == 1
        envelope = json.loads(live["response"])
        assert envelope == {
            "exit_reason": "",
            "finalized": False,
            "session_id": envelope["session_id"],
            "sequence": 1,
            "message": "first draft",
            "progress": {"step": 1},
        }
        assert envelope["session_id"] == live["session_id"]
        held.set()
        final = await llm.wait_final(run["id"])
        assert final["status"] == "succeeded" and final["exit_reason"] == "natural_completion"
        assert final["response"] == "All done in three steps."
        events = await llm.events(run["id"])
        updates = [e for e in events if e["event_type"] == "progress_update"]
        assert [u["data"]["sequence"] for u in updates] == [1, 2, 3]
        assert updates[0]["message"] == "first draft" and updates[1]["message"] == "progress updated"
        assert updates[2]["data"]["finalized"] is True and updates[2]["data"]["reason"] == "finalize"
        # The progress tools are the run's own: no tool events for them.
        assert not [e for e in events if e["event_type"] in ("tool_start", "tool_end")]
        tools = {
            t["function"]["name"] if "function" in t else t["name"]
            for t in llm.model.requests[0].body["tools"]
        }
        assert {"update_progress", "finalize_progress", "read_file"} <= tools


async def test_without_final_prose_the_response_is_the_last_state(llm: LLM) -> None:
    with trio.fail_after(LIMIT_S):
        llm.model.add(Turn(tool_calls=[commit("p1", {"draft": "v1"})]), Turn(text=""))
        run = await llm.run_job(llm.llm_job(progressive=True, stop_when="done"))
        assert run["status"] == "succeeded" and json.loads(run["response"]) == {"draft": "v1"}


async def test_passes_continue_until_time_is_up_then_finalize(llm: LLM) -> None:
    with trio.fail_after(LIMIT_S):
        llm.model.add(
            Turn(tool_calls=[commit("p1", {"n": 1})]),
            Turn(text="Pass one done."),
            # Second pass (the continue prompt): the model works until the budget
            # (minus the finalization reserve) is spent and is stopped there.
            Turn(text="still thinking", hold_forever=True),
            Turn(tool_calls=[ToolCall("f", "finalize_progress", {"state": {"n": 2}})]),
            Turn(text="Final report: n is 2."),
        )
        started = trio.current_time()
        run = await llm.run_job(llm.llm_job(progressive=True, timeout_seconds=8))
        assert trio.current_time() - started < 8
        assert run["status"] == "timed_out" and run["exit_reason"] == "timeout"
        assert run["response"] == "Final report: n is 2."
        continue_prompt = json.dumps(llm.model.requests[2].body["messages"])
        assert "s remaining. Keep improving" in continue_prompt
        phases = [e["message"] for e in await llm.events(run["id"]) if e["event_type"] == "phase"]
        assert phases == ["Continuing with remaining budget...", "Finalizing: time is almost up"]
        assert "finalize_progress now" in json.dumps(llm.model.requests[3].body["messages"])


async def test_a_pass_that_does_nothing_ends_the_run_naturally(llm: LLM) -> None:
    with trio.fail_after(LIMIT_S):
        llm.model.add(
            Turn(tool_calls=[commit("p1", {"n": 1})]),
            Turn(text="Done for now."),
            Turn(text="Nothing left to improve."),
        )
        run = await llm.run_job(llm.llm_job(progressive=True, timeout_seconds=600))
        assert run["status"] == "succeeded" and run["exit_reason"] == "natural_completion"
        assert json.loads(run["response"]) == {"n": 1} and len(llm.model.requests) == 3


async def test_a_cancelled_progressive_run_keeps_its_last_state(llm: LLM) -> None:
    with trio.fail_after(LIMIT_S):
        llm.model.add(
            Turn(tool_calls=[commit("p1", {"kept": True})]), Turn(text="more...", hold_forever=True)
        )
        job = await llm.create(llm.llm_job(progressive=True))
        run = (await llm.post(f"/v2/jobs/{job['id']}/trigger")).body
        await llm.model.streaming.wait()
        await llm.post(f"/v2/runs/{run['id']}/cancel")
        final = await llm.wait_final(run["id"])
        assert final["status"] == "cancelled" and json.loads(final["response"]) == {"kept": True}
