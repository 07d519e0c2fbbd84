"""Progressive mode (SPEC 10.5): the agent commits its work as it goes.

The agent gets two extra tools, ``update_progress`` (``state`` object, optional
``reason``, ``message``, ``final``) and ``finalize_progress`` (the same; final).
Each commit gets the next ``sequence``, a ``progress_update`` event, and replaces the
run's ``response`` with the envelope::

    {"exit_reason":"","finalized":false,"session_id":"...","sequence":2,
     "reason":"...","message":"...","progress":{...}}

so ``GET /v2/runs/{id}`` shows the latest state while the run goes on.

Passes: the instructions start the first. With ``stop_when: done`` the run ends after
it; with ``stop_when: timeout`` (the default) the agent is sent ``continue_with``
(``{{remaining}}`` becomes e.g. ``4m30s remaining. ``) for another pass, until its
time is spent or a pass commits nothing and uses no other tool. A reserve of 10 % of
the budget (5 s to 5 min) is kept for a last pass that asks for ``finalize_progress``;
a run that gets there ends with exit reason ``timeout`` (status ``timed_out``).

The final ``response`` is the prose written after ``finalize_progress``, else (when
nothing was ever committed) the last text, else the JSON of the last progress state.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final

import trio

from termjobs.model import ExitReason, JSONObject, JSONValue
from termjobs.runners.llm.conversation import Conversation, QuietTool
from termjobs.runners.llm.events import RunEvents
from termjobs.runners.llm.messages import ToolCall, ToolSpec
from termjobs.runners.llm.tools import ToolResult

DEFAULT_CONTINUE: Final = (
    "{{remaining}}Keep improving your work: check it, fill the gaps, and call update_progress "
    "with the improved state. If there is nothing left to improve, answer without calling any tool."
)
FINALIZE_PROMPT: Final = (
    "Time is almost up. Call finalize_progress now with your final state, "
    "then write your final answer in prose."
)
RESERVE_SHARE: Final = 0.10
RESERVE_MIN_S: Final = 5.0
RESERVE_MAX_S: Final = 300.0
#: The last pass stops this long before the hard deadline, so the run reports itself.
DEADLINE_MARGIN_S: Final = 1.0


def _schema(*, with_final: bool) -> JSONObject:
    properties: JSONObject = {
        "state": {"type": "object", "description": "Your work so far, as a JSON object."},
        "reason": {"type": "string", "description": "Why you are committing now."},
        "message": {"type": "string", "description": "A one-line summary for the timeline."},
    }
    if with_final:
        properties["final"] = {"type": "boolean", "description": "Whether this is your final state."}
    return {"type": "object", "properties": properties, "required": ["state"]}


def progress_tools(progress: Progress) -> dict[str, tuple[ToolSpec, QuietTool]]:
    """The two progress tools, bound to ``progress``."""
    update = ToolSpec(
        "update_progress", "Commit your work so far (replaces the previous state).", _schema(with_final=True)
    )
    finalize = ToolSpec("finalize_progress", "Commit your final state.", _schema(with_final=False))
    return {"update_progress": (update, progress.update), "finalize_progress": (finalize, progress.finalize)}


def reserve_for(budget: float) -> float:
    """The finalization reserve of a ``budget``-second run."""
    reserve = min(max(budget * RESERVE_SHARE, RESERVE_MIN_S), RESERVE_MAX_S)
    return min(reserve, budget / 2)


def remaining_text(seconds: float) -> str:
    """``4m30s remaining. `` (Go-style duration, whole seconds)."""
    total = max(0, int(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if hours or minutes else "") + f"{secs}s"
    return f"{text} remaining. "


@dataclass(frozen=True, slots=True)
class Outcome:
    """How the progressive loop ended."""

    exit_reason: ExitReason
    response: str


class Progress:
    """The committed state and the pass loop (see the module docstring)."""

    def __init__(self, events: RunEvents, *, stop_when: str, continue_with: str | None) -> None:
        self._events = events
        self._stop_when = stop_when
        self._continue = continue_with or DEFAULT_CONTINUE
        self.conversation: Conversation | None = None
        self.sequence = 0
        self.envelope: JSONObject | None = None
        self.state: JSONValue = None
        self.finalized = False
        self._committed_in_pass = False
        self._final_mark: int | None = None

    def live_response(self) -> str:
        """The run's ``response`` while it runs: the latest envelope."""
        return json.dumps(self.envelope, separators=(",", ":")) if self.envelope else ""

    async def update(self, call: ToolCall) -> ToolResult:
        return await self._commit(call, final=None)

    async def finalize(self, call: ToolCall) -> ToolResult:
        return await self._commit(call, final=True)

    async def _commit(self, call: ToolCall, *, final: bool | None) -> ToolResult:
        try:
            args = call.parsed_arguments()
        except ValueError as exc:
            return ToolResult.failed(str(exc))
        state = args.get("state")
        if not isinstance(state, dict):
            return ToolResult.failed(f"{call.name} needs a 'state' argument (a JSON object)")
        is_final = final if final is not None else args.get("final") is True
        reason = _text(args.get("reason")) or ("finalize" if final else "")
        message = _text(args.get("message"))
        assert self.conversation is not None
        self.sequence += 1
        self.state, self.finalized = state, self.finalized or is_final
        self._committed_in_pass = True
        envelope: JSONObject = {"exit_reason": "", "finalized": self.finalized}
        envelope["session_id"] = self.conversation.session_id
        envelope["sequence"] = self.sequence
        if reason:
            envelope["reason"] = reason
        if message:
            envelope["message"] = message
        envelope["progress"] = state
        self.envelope = envelope
        if is_final:
            self._final_mark = len(self.conversation.totals.texts)
        await self._events.progress_update(envelope, message)
        await self._events.report(self.conversation.output(response=self.live_response()))
        return ToolResult(f"progress committed (sequence {self.sequence})")

    async def run(self, instructions: str, *, deadline: float, budget: float) -> Outcome:
        """Passes until done, out of turns, or out of time (then the final pass)."""
        conversation = self.conversation
        assert conversation is not None
        reserve = reserve_for(budget)
        prompt = instructions
        with trio.move_on_at(deadline - reserve):
            while True:
                self._committed_in_pass = False
                end = await conversation.run_pass(prompt)
                if end.out_of_turns:
                    return self._outcome(ExitReason.MAX_TURNS_EXCEEDED)
                if self._stop_when == "done" or not (self._committed_in_pass or end.used_tools):
                    return self._outcome(ExitReason.NATURAL_COMPLETION)
                prompt = self._continue.replace(
                    "{{remaining}}", remaining_text(deadline - reserve - trio.current_time())
                )
                await self._events.phase("Continuing with remaining budget...")
        await self._events.phase("Finalizing: time is almost up")
        with trio.move_on_at(deadline - DEADLINE_MARGIN_S):
            await conversation.run_pass(FINALIZE_PROMPT)
        return self._outcome(ExitReason.TIMEOUT)

    def _outcome(self, exit_reason: ExitReason) -> Outcome:
        return Outcome(exit_reason, self.final_response())

    def final_response(self) -> str:
        """The run's final ``response`` (see the module docstring)."""
        conversation = self.conversation
        assert conversation is not None
        texts = conversation.totals.texts
        final_text = "".join(texts[self._final_mark :]).strip() if self._final_mark is not None else ""
        if final_text:
            return final_text
        if self.sequence == 0:
            return texts[-1] if texts else ""
        return json.dumps(self.state, separators=(",", ":"))


def _text(value: object) -> str:
    return value.strip() if isinstance(value, str) else ""
