"""What a run shows while it works: its events (SPEC 10.4) and its partial output.

* ``output``: the model's text (``data.stream`` ``response``) and reasoning
  (``thinking``) as it streams, batched like program output;
* ``tool_start`` / ``tool_end``: ``{tool, info, id}`` / ``{tool, id, success[, error]}``;
* ``phase``: ``{text}``; ``turn_complete``: ``{turn, input_tokens, output_tokens}``;
* ``progress_update``: the progressive envelope;
* the run's ``response``, tokens and turns, written after each turn so that
  ``GET /v2/runs/{id}`` shows them while the run goes on.

Events are queued, never awaited to commit (``RunContext.emit``); a failed progress
write is logged once and never fails the run.
"""

from __future__ import annotations

import logging

from termjobs.clock import Clock
from termjobs.model import EventType, JSONObject, RunOutput
from termjobs.runners.base import RunContext
from termjobs.runners.llm.messages import ToolCall, Usage
from termjobs.runners.llm.tools import ToolResult
from termjobs.runners.output import LiveOutput
from termjobs.storage import Storage

logger = logging.getLogger(__name__)


class RunEvents:
    """The live side of one LLM run (see the module docstring). Also the turns'
    :class:`~termjobs.runners.llm.messages.TurnSink`."""

    def __init__(self, ctx: RunContext, storage: Storage, clock: Clock) -> None:
        self._ctx = ctx
        self._storage = storage
        self._clock = clock
        self.live = LiveOutput(
            self._publish, streams=("thinking", "response"), kept_in="the run's response and thinking"
        )
        self._report_failed = False

    async def _publish(self, stream: str, text: str) -> None:
        await self._ctx.emit(EventType.OUTPUT, None, {"stream": stream, "text": text})

    # TurnSink
    def text(self, delta: str) -> None:
        self.live.feed("response", delta.encode())

    def thinking(self, delta: str) -> None:
        self.live.feed("thinking", delta.encode())

    async def tool_start(self, call: ToolCall, info: str) -> None:
        await self.live.flush()
        data: JSONObject = {"tool": call.name, "info": info, "id": call.id}
        await self._ctx.emit(EventType.TOOL_START, f"→ {call.name}: {info}", data)

    async def tool_end(self, call: ToolCall, result: ToolResult) -> None:
        data: JSONObject = {"tool": call.name, "id": call.id, "success": result.ok}
        if result.error is not None:
            data["error"] = result.error
        outcome = "ok" if result.ok else "failed"
        await self._ctx.emit(EventType.TOOL_END, f"← {call.name} ({outcome})", data)

    async def phase(self, text: str) -> None:
        await self.live.flush()
        await self._ctx.emit(EventType.PHASE, text, {"text": text})

    async def turn_complete(self, turn: int, usage: Usage) -> None:
        await self.live.flush()
        estimated = ", estimated" if usage.estimated else ""
        message = (
            f"turn {turn} complete ({usage.input_tokens} in, {usage.output_tokens} out tokens{estimated})"
        )
        data: JSONObject = {"turn": turn, **usage.to_json()}
        await self._ctx.emit(EventType.TURN_COMPLETE, message, data)

    async def progress_update(self, envelope: JSONObject, message: str | None) -> None:
        await self.live.flush()
        await self._ctx.emit(EventType.PROGRESS_UPDATE, message or "progress updated", envelope)

    async def report(self, output: RunOutput) -> None:
        """Show ``output`` on the run while it is still running."""
        try:
            await self._storage.update_run_output(self._ctx.run.id, output, now=self._clock.now())
        except Exception:
            if not self._report_failed:
                self._report_failed = True
                logger.exception("run %s: could not store its progress; the run continues", self._ctx.run.id)
