"""The llm runner against a scripted provider (OpenAI and Anthropic wire formats):
what a user sees in the run, its events, its session and the provider's requests."""

from __future__ import annotations

import json
import os

import trio

from tests.helpers import alive
from tests.llm.conftest import KEY, LLM
from tests.scripted_llm import ToolCall, Turn

LIMIT_S = 30


def texts(events: list[dict[str, object]], stream: str = "response") -> str:
    return "".join(
        str(e["data"]["text"])  # type: ignore[index]
        for e in events
        if e["event_type"] == "output" and e["data"]["stream"] == stream  # type: ignore[index]
    )


def of_type(events: list[dict[str, object]], kind: str) -> list[dict[str, object]]:
    return [e for e in events if e["event_type"] == kind]


async def test_a_plain_answer_is_the_response_with_tokens_and_a_session(llm: LLM) -> None:
    with trio.fail_after(LIMIT_S):
        llm.model.add(Turn(text="Hello from the model.", thinking="Let me think.", usage=(12, 7)))
        run = await llm.run_job(llm.llm_job(instructions="Say hello."))
        assert run["status"] == "succeeded", run
        assert run["exit_reason"] == "natural_completion" and run["exit_code"] == 0
        assert run["response"] == "Hello from the model." and run["thinking"] == "Let me think."
        assert (run["turn_count"], run["input_tokens"], run["output_tokens"]) == (1, 12, 7)
        events = await llm.events(run["id"])
        kinds = [e["event_type"] for e in events]
        assert kinds[:3] == ["queued", "claimed", "running"] and kinds[-1] == "succeeded"
        assert texts(events) == "Hello from the model." and texts(events, "thinking") == "Let me think."
        (turn,) = of_type(events, "turn_complete")
        assert turn["data"] == {"turn": 1, "input_tokens": 12, "output_tokens": 7}
        assert turn["message"] == "turn 1 complete (12 in, 7 out tokens)"
        assert kinds.index("turn_complete") > max(i for i, k in enumerate(kinds) if k == "output")

        (request,) = llm.model.requests
        assert request.body["model"] == "scripted-model" and request.body["stream"] is True
        assert request.headers["authorization"] == f"Bearer {KEY}"
        sent = json.dumps(request.body)
        assert "Say hello." in sent and "careful software developer" in sent  # instructions, agent prompt
        session = await llm.get(f"/v2/sessions/{run['session_id']}")
        assert session.status == 200
        assert [m["role"] for m in session.body["messages"]] == ["user", "assistant"]
        assert session.body["messages"][1]["text"] == "Hello from the model."
        assert session.body["messages"][1]["usage"] == {"input_tokens": 12, "output_tokens": 7}
        assert (session.body["agent"], session.body["provider"], session.body["model"]) == (
            "developer",
            "scripted",
            "scripted-model",
        )


async def test_a_running_run_shows_each_finished_turn(llm: LLM) -> None:
    with trio.fail_after(LIMIT_S):
        held = trio.Event()
        llm.model.add(
            Turn(text="First turn.", tool_calls=[ToolCall("ls", "list_dir", {"path": "."})], usage=(5, 2)),
            Turn(text="Second turn.", hold=held),
        )
        job = await llm.create(llm.llm_job())
        run = (await llm.post(f"/v2/jobs/{job['id']}/trigger")).body
        await llm.model.streaming.wait()  # the second turn is streaming, held
        await llm.wait_event(run["id"], "turn_complete")
        live = (await llm.get(f"/v2/runs/{run['id']}")).body
        assert live["status"] == "running" and live["response"] == "First turn."
        assert (live["turn_count"], live["input_tokens"], live["output_tokens"]) == (1, 5, 2)
        assert live["session_id"]
        held.set()
        final = await llm.wait_final(run["id"])
        assert final["status"] == "succeeded" and final["turn_count"] == 2
        assert final["response"] == "First turn.\n\nSecond turn."


async def test_tools_run_and_their_results_go_back_to_the_model(llm: LLM) -> None:
    with trio.fail_after(LIMIT_S):
        (llm.workdir / "notes.txt").write_text("buy milk\n")
        report = llm.outdir / "report.md"
        llm.model.add(
            Turn(text="Reading.", tool_calls=[ToolCall("call_r", "read_file", {"path": "notes.txt"})]),
            Turn(tool_calls=[ToolCall("call_w", "write_file", {"path": str(report), "content": "# milk\n"})]),
            Turn(tool_calls=[ToolCall("call_s", "shell", {"command": "echo from-the-shell"})], usage=(30, 2)),
            Turn(text="Wrote the report."),
        )
        run = await llm.run_job(llm.llm_job())
        assert run["status"] == "succeeded", run
        assert report.read_text() == "# milk\n"
        assert run["response"] == "Reading.\n\nWrote the report."
        assert (run["turn_count"], run["input_tokens"], run["output_tokens"]) == (4, 60, 17)
        events = await llm.events(run["id"])
        starts, ends = of_type(events, "tool_start"), of_type(events, "tool_end")
        assert [(s["data"]["tool"], s["data"]["id"]) for s in starts] == [  # type: ignore[index]
            ("read_file", "call_r"),
            ("write_file", "call_w"),
            ("shell", "call_s"),
        ]
        assert starts[0]["message"] == "→ read_file: notes.txt"
        assert [e["data"] for e in ends] == [
            {"tool": "read_file", "id": "call_r", "success": True},
            {"tool": "write_file", "id": "call_w", "success": True},
            {"tool": "shell", "id": "call_s", "success": True},
        ]
        assert ends[0]["message"] == "← read_file (ok)"
        assert [e["data"]["turn"] for e in of_type(events, "turn_complete")] == [1, 2, 3, 4]  # type: ignore[index]
        sent = llm.request_texts()
        assert "buy milk" in sent[1] and "wrote 7 bytes" in sent[2] and "from-the-shell" in sent[3]


async def test_denied_and_unknown_tools_are_errors_the_model_sees(llm: LLM) -> None:
    with trio.fail_after(LIMIT_S):
        llm.model.add(
            Turn(tool_calls=[ToolCall("c1", "shell", {"command": "rm -rf /tmp/x"})]),
            Turn(tool_calls=[ToolCall("c2", "write_file", {"path": "here.txt", "content": "x"})]),
            Turn(tool_calls=[ToolCall("c3", "browse", {"url": "http://example.com"})]),
            Turn(text="I could not."),
        )
        run = await llm.run_job(llm.llm_job())
        assert run["status"] == "succeeded" and run["response"] == "I could not."
        assert not (llm.workdir / "here.txt").exists()
        ends = of_type(await llm.events(run["id"]), "tool_end")
        assert [e["data"]["success"] for e in ends] == [False, False, False]  # type: ignore[index]
        errors = [str(e["data"]["error"]) for e in ends]  # type: ignore[index]
        assert "matches none of the --shell-allow patterns (echo *)" in errors[0]
        assert "writing 'here.txt' is not allowed" in errors[1] and "--write-dir" in errors[1]
        assert errors[2].startswith("unknown tool 'browse'")
        assert ends[0]["message"] == "← shell (failed)"
        sent = llm.request_texts()
        assert "error: shell command not allowed" in sent[1]
        assert "error: writing 'here.txt' is not allowed" in sent[2]
        assert "error: unknown tool 'browse'" in sent[3]


async def test_paths_escaping_the_roots_are_refused(llm: LLM) -> None:
    with trio.fail_after(LIMIT_S):
        secret = llm.tmp / "secret.txt"
        secret.write_text("TOP-SECRET-CONTENT")
        os.symlink(secret, llm.workdir / "innocent.txt")
        os.symlink(llm.tmp, llm.workdir / "up")
        llm.model.add(
            Turn(tool_calls=[ToolCall("a", "read_file", {"path": "../secret.txt"})]),
            Turn(tool_calls=[ToolCall("b", "read_file", {"path": "innocent.txt"})]),
            Turn(tool_calls=[ToolCall("c", "list_dir", {"path": "up"})]),
            Turn(
                tool_calls=[
                    ToolCall("d", "write_file", {"path": str(llm.outdir / "../escape.txt"), "content": "x"})
                ]
            ),
            Turn(text="Refused everywhere."),
        )
        run = await llm.run_job(llm.llm_job())
        assert run["status"] == "succeeded"
        ends = of_type(await llm.events(run["id"]), "tool_end")
        assert [e["data"]["success"] for e in ends] == [False] * 4  # type: ignore[index]
        assert all("outside the" in str(e["data"]["error"]) for e in ends)  # type: ignore[index]
        assert not (llm.tmp / "escape.txt").exists()
        assert not any(
            "TOP-SECRET-CONTENT" in text or "secret.txt\\n" in text for text in llm.request_texts()
        )


async def test_max_turns_ends_the_run_failed_and_truncated(llm: LLM) -> None:
    with trio.fail_after(LIMIT_S):
        looping = Turn(tool_calls=[ToolCall("again", "list_dir", {"path": "."})], repeat=True)
        llm.model.add(looping)
        run = await llm.run_job(llm.llm_job(max_turns=3))
        assert run["status"] == "failed" and run["exit_reason"] == "max_turns_exceeded"
        assert run["truncated"] is True and run["error"] == "agentic loop exceeded max turns (3)"
        assert run["turn_count"] == 3 and len(llm.model.requests) == 3
        # The third turn's call is not run: nobody would read its result.
        assert len(of_type(await llm.events(run["id"]), "tool_end")) == 2


async def test_rate_limits_are_retried_and_the_run_succeeds(llm: LLM) -> None:
    with trio.fail_after(LIMIT_S):
        llm.model.add(
            Turn(status=429, error="slow down", headers={"retry-after-ms": "20"}),
            Turn(text="made it"),
        )
        run = await llm.run_job(llm.llm_job())
        assert run["status"] == "succeeded" and run["response"] == "made it"
        assert len(llm.model.requests) == 2


async def test_server_errors_fail_the_run_naming_the_provider_after_retries(llm: LLM) -> None:
    with trio.fail_after(LIMIT_S):
        llm.model.add(Turn(status=500, error="overloaded", headers={"retry-after-ms": "20"}, repeat=True))
        run = await llm.run_job(llm.llm_job())
        assert run["status"] == "failed" and run["exit_reason"] == "exception"
        assert run["error"].startswith(
            'provider "scripted": 500 overloaded; the provider failed (after 2 retries)'
        )
        assert len(llm.model.requests) == 3


async def test_cancel_mid_stream_closes_the_connection_at_once(llm: LLM) -> None:
    with trio.fail_after(LIMIT_S):
        llm.model.add(Turn(text="I am working on a very long answer", chunks=4, hold_forever=True))
        job = await llm.create(llm.llm_job())
        run = (await llm.post(f"/v2/jobs/{job['id']}/trigger")).body
        await llm.model.streaming.wait()
        await llm.wait_event(run["id"], "output")
        started = trio.current_time()
        assert (await llm.post(f"/v2/runs/{run['id']}/cancel")).body["status"] == "cancel_requested"
        final = await llm.wait_final(run["id"])
        assert trio.current_time() - started < 3
        assert final["status"] == "cancelled" and final["exit_reason"] == "cancelled"
        assert final["response"].startswith("I am")  # what the model had said is kept
        with trio.fail_after(2):
            await llm.model.disconnected.wait()  # the provider's socket was closed
        assert texts(await llm.events(run["id"])).startswith("I am")


async def test_a_timeout_stops_the_stream_and_ends_timed_out(llm: LLM) -> None:
    with trio.fail_after(LIMIT_S):
        llm.model.add(Turn(text="slow...", hold_forever=True))
        started = trio.current_time()
        run = await llm.run_job(llm.llm_job(timeout_seconds=1))
        assert trio.current_time() - started < 4
        assert run["status"] == "timed_out" and run["exit_reason"] == "timeout"
        with trio.fail_after(2):
            await llm.model.disconnected.wait()  # the provider's socket was closed


async def test_a_fixed_session_id_continues_the_conversation(llm: LLM) -> None:
    with trio.fail_after(LIMIT_S):
        llm.model.add(Turn(text="Noted: 42.", usage=(10, 3)), Turn(text="You said 42.", usage=(20, 4)))
        job = await llm.create(llm.llm_job(session_id="notes-1", instructions="Remember 42."))
        runs = []
        for _ in range(2):
            triggered = await llm.post(f"/v2/jobs/{job['id']}/trigger")
            runs.append(await llm.wait_final(triggered.body["id"]))
        assert [r["session_id"] for r in runs] == ["notes-1", "notes-1"]
        second = llm.model.requests[1].body
        sent = json.dumps(second["messages"])
        assert "Noted: 42." in sent and sent.count("Remember 42.") == 2
        session = (await llm.get("/v2/sessions/notes-1")).body
        assert [m["role"] for m in session["messages"]] == ["user", "assistant", "user", "assistant"]
        assert [m["run_id"] for m in session["messages"]] == [runs[0]["id"]] * 2 + [runs[1]["id"]] * 2
        assert (session["turn_count"], session["input_tokens"], session["output_tokens"]) == (2, 30, 7)


async def test_a_hub_delegation_names_its_session(llm: LLM) -> None:
    with trio.fail_after(LIMIT_S):
        llm.model.add(Turn(text="ok"))
        labels = {"hub_delegation": {"id": "d-1", "origin": "hub.example", "depth": 1, "chain": []}}
        run = await llm.run_job({**llm.llm_job("hub-delegation-d-1"), "labels": labels})
        session = (await llm.get(f"/v2/sessions/{run['session_id']}")).body
        assert session["name"] == "Delegation from hub.example" and session["job_id"] == run["job_id"]


async def test_unpersisted_sessions_are_not_stored(llm: LLM) -> None:
    with trio.fail_after(LIMIT_S):
        llm.model.add(Turn(text="ok"))
        run = await llm.run_job(llm.llm_job(persist_session=False))
        assert run["status"] == "succeeded" and run["session_id"]
        missing = await llm.get(f"/v2/sessions/{run['session_id']}")
        assert missing.status == 404 and missing.error == "session not found"


async def test_cancel_kills_a_running_shell_tool_at_once(llm: LLM) -> None:
    with trio.fail_after(LIMIT_S):
        fifo = llm.tmp / "tool.pid"
        os.mkfifo(fifo)  # the command's pid arrives through it once the command runs
        command = f"echo started; echo $$ > {fifo}; sleep 60"
        llm.model.add(Turn(tool_calls=[ToolCall("long", "shell", {"command": command})]))
        job = await llm.create(llm.llm_job())
        run = (await llm.post(f"/v2/jobs/{job['id']}/trigger")).body
        pid = int(await trio.to_thread.run_sync(fifo.read_text))
        assert alive(pid)
        started = trio.current_time()
        await llm.post(f"/v2/runs/{run['id']}/cancel")
        final = await llm.wait_final(run["id"])
        assert final["status"] == "cancelled" and trio.current_time() - started < 3
        assert not alive(pid)


async def test_a_trigger_can_give_one_run_its_own_instructions(llm: LLM) -> None:
    with trio.fail_after(LIMIT_S):
        llm.model.add(Turn(text="Counted."))
        llm.model.add(Turn(text="Hello."))
        job = await llm.create(llm.llm_job(instructions="Say hello."))
        body = {"instructions": "Count the open issues.", "timeout_seconds": 60}
        reply = await llm.post(f"/v2/jobs/{job['id']}/trigger", body)
        assert reply.status == 202 and reply.body["overrides"] == body
        once = await llm.wait_final(reply.body["id"])
        plain = await llm.wait_final((await llm.post(f"/v2/jobs/{job['id']}/trigger")).body["id"])
        refused = await llm.post(f"/v2/jobs/{job['id']}/trigger", {"args": ["x"]})
    assert (once["response"], plain["response"]) == ("Counted.", "Hello.")
    first, second = llm.request_texts()
    assert "Count the open issues." in first and "Say hello." not in first
    assert "Say hello." in second and "Count the open issues." not in second
    assert refused.status == 400 and refused.error == "args can only be overridden for program jobs"
