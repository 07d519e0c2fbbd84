"""The agent loop (SPEC 10.4), in trio: prompt, stream a turn, run its tool calls,
feed the results back, until the model answers without calling a tool or the turn
budget is spent.

Each turn ends with the same steps, in order: the streamed text is flushed as
``output`` events, ``turn_complete`` is emitted, the run's output so far is written
(``GET /v2/runs/{id}`` shows it), and the new messages are saved to the session.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from termjobs.model import RunOutput
from termjobs.runners.llm.events import RunEvents
from termjobs.runners.llm.messages import Message, ToolCall, ToolSpec, Usage, with_tool_results
from termjobs.runners.llm.plan import RunPlan
from termjobs.runners.llm.providers import Provider
from termjobs.runners.llm.sessions import SessionLog
from termjobs.runners.llm.tools import Toolbox, ToolResult

#: Between the texts of successive turns in the run's ``response``.
TURN_SEPARATOR = "\n\n"
#: A tool handled by the run itself (progressive mode's progress tools): no events.
QuietTool = Callable[[ToolCall], Awaitable[ToolResult]]


@dataclass
class Totals:
    """What the run has produced so far (``partial_*``: the turn still streaming)."""

    response: list[str] = field(default_factory=list)
    partial_text: list[str] = field(default_factory=list)
    partial_thinking: list[str] = field(default_factory=list)
    thinking: list[str] = field(default_factory=list)
    #: the text of every turn that had some, in order
    texts: list[str] = field(default_factory=list)
    turns: int = 0
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass(frozen=True, slots=True)
class PassEnd:
    """How one pass (one prompt and the turns it took) ended."""

    out_of_turns: bool
    used_tools: bool


class Conversation:
    """One run's conversation with its model (see the module docstring)."""

    def __init__(
        self,
        *,
        provider: Provider,
        plan: RunPlan,
        toolbox: Toolbox,
        events: RunEvents,
        log: SessionLog,
        history: list[Message],
        session_id: str,
        quiet_tools: Mapping[str, tuple[ToolSpec, QuietTool]] | None = None,
        collect_response: bool = True,
    ) -> None:
        self._provider = provider
        self._plan = plan
        self._toolbox = toolbox
        self._events = events
        self._log = log
        self.messages = list(history)
        self.session_id = session_id
        self._quiet = dict(quiet_tools or {})
        self._collect_response = collect_response
        self.totals = Totals()
        #: what the run's ``response`` shows while it runs (progressive mode replaces it)
        self.live_response: Callable[[], str] = lambda: TURN_SEPARATOR.join(self.totals.response)

    # TurnSink: the turn's text is kept until the turn completes, so that a run
    # stopped mid-turn still reports what the model had said.
    def text(self, delta: str) -> None:
        self.totals.partial_text.append(delta)
        self._events.text(delta)

    def thinking(self, delta: str) -> None:
        self.totals.partial_thinking.append(delta)
        self._events.thinking(delta)

    def output(self, *, response: str | None = None) -> RunOutput:
        """The run's output so far (``response`` replaces the collected text)."""
        totals = self.totals
        texts = list(totals.response)
        if totals.partial_text and self._collect_response:
            texts.append("".join(totals.partial_text))
        thinking = [*totals.thinking, "".join(totals.partial_thinking)]
        return RunOutput(
            exit_code=0,
            session_id=self.session_id,
            response=(response if response is not None else TURN_SEPARATOR.join(texts)) or None,
            thinking="\n\n".join(t for t in thinking if t) or None,
            turn_count=totals.turns,
            input_tokens=totals.input_tokens,
            output_tokens=totals.output_tokens,
        )

    async def run_pass(self, prompt: str, *, max_turns: int | None = None) -> PassEnd:
        """Send ``prompt`` and keep going until the model stops calling tools, or
        ``max_turns`` turns (default: the plan's) have been taken. The tool calls of
        the last allowed turn are not run: nobody would read their results."""
        self.messages = with_tool_results(self.messages)
        self._add(Message.user(prompt))
        used_tools = False
        specs = [*self._toolbox.specs(), *(spec for spec, _ in self._quiet.values())]
        limit = max_turns or self._plan.max_turns
        for number in range(1, limit + 1):
            turn = await self._provider.turn(
                system=self._plan.system_prompt,
                messages=self.messages,
                tools=specs,
                max_output_tokens=self._plan.max_output_tokens,
                sink=self,
            )
            await self._turn_done(turn.message)
            if not turn.message.tool_calls:
                return PassEnd(out_of_turns=False, used_tools=used_tools)
            if number == limit:
                break
            for call in turn.message.tool_calls:
                used_tools = used_tools or call.name not in self._quiet
                text, failed = await self._call(call)
                self._add(Message.tool_result(call, text, is_error=failed))
            await self._log.save()
        return PassEnd(out_of_turns=True, used_tools=used_tools)

    async def _turn_done(self, message: Message) -> None:
        usage = message.usage
        totals = self.totals
        totals.partial_text.clear()
        totals.partial_thinking.clear()
        totals.turns += 1
        if usage is not None:
            totals.input_tokens += usage.input_tokens
            totals.output_tokens += usage.output_tokens
        if message.text:
            totals.texts.append(message.text)
            if self._collect_response:
                totals.response.append(message.text)
        if message.thinking:
            totals.thinking.append(message.thinking)
        self._add(message)
        await self._events.turn_complete(totals.turns, usage or Usage())
        await self._events.report(self.output(response=self.live_response()))
        await self._log.save()

    async def _call(self, call: ToolCall) -> tuple[str, bool]:
        """Run one tool call: the text for the model and whether it failed."""
        if call.name in self._quiet:
            _, handler = self._quiet[call.name]
            result = await handler(call)
            return result.text, not result.ok
        await self._events.tool_start(call, self._toolbox.info(call))
        result = await self._toolbox.run(call)
        await self._events.tool_end(call, result)
        return result.text, not result.ok

    def _add(self, message: Message) -> None:
        self.messages.append(message)
        self._log.add(message, message.usage)  # only assistant messages carry usage
