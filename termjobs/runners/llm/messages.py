"""The conversation, independent of any provider's wire format.

Providers translate these values to and from their APIs; sessions store them as JSON
(:meth:`Message.to_json`, which is also what ``GET /v2/sessions/{id}`` shows).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from termjobs.model import JSONObject, JSONValue

Role = Literal["user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool call as the model made it (``arguments`` is the raw JSON text it sent)."""

    id: str
    name: str
    arguments: str

    def parsed_arguments(self) -> dict[str, Any]:
        """The arguments as an object; ``ValueError`` with a message for the model."""
        if not self.arguments.strip():
            return {}
        try:
            value = json.loads(self.arguments)
        except json.JSONDecodeError as exc:
            raise ValueError(f"the arguments are not valid JSON ({exc.msg})") from None
        if not isinstance(value, dict):
            raise ValueError("the arguments must be a JSON object")
        return value


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens of one model turn; ``estimated`` when the provider did not report them
    (some OpenAI-compatible servers send no usage in streams)."""

    input_tokens: int = 0
    output_tokens: int = 0
    estimated: bool = False

    def to_json(self) -> JSONObject:
        out: JSONObject = {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens}
        if self.estimated:
            out["estimated"] = True
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """One message of the conversation.

    ``user``: ``text``. ``assistant``: ``text``, ``thinking`` (with the provider's
    ``thinking_signature`` when it needs it back), ``tool_calls`` and the turn's
    ``usage``. ``tool``: the result of ``tool_call_id`` (``tool_name``) in ``text``,
    ``is_error`` when the call failed or was refused.
    """

    role: Role
    text: str = ""
    thinking: str = ""
    thinking_signature: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str = ""
    tool_name: str = ""
    is_error: bool = False
    usage: Usage | None = None

    @classmethod
    def user(cls, text: str) -> Message:
        return cls(role="user", text=text)

    @classmethod
    def tool_result(cls, call: ToolCall, text: str, *, is_error: bool) -> Message:
        return cls(role="tool", text=text, tool_call_id=call.id, tool_name=call.name, is_error=is_error)

    def to_json(self) -> JSONObject:
        """The stored (and API) form: only the fields that apply to the role."""
        out: JSONObject = {"role": self.role, "text": self.text}
        if self.role == "assistant":
            if self.thinking:
                out["thinking"] = self.thinking
            if self.thinking_signature:
                out["thinking_signature"] = self.thinking_signature
            calls: list[JSONValue] = [
                {"id": c.id, "name": c.name, "arguments": c.arguments} for c in self.tool_calls
            ]
            out["tool_calls"] = calls
            if self.usage is not None:
                out["usage"] = self.usage.to_json()
        elif self.role == "tool":
            out.update(tool_call_id=self.tool_call_id, tool_name=self.tool_name, is_error=self.is_error)
        return out

    @classmethod
    def from_json(cls, data: JSONValue) -> Message | None:
        """A stored message; ``None`` for anything that does not look like one."""
        if not isinstance(data, dict) or data.get("role") not in ("user", "assistant", "tool"):
            return None
        role: Role = data["role"]  # type: ignore[assignment]
        calls = data.get("tool_calls")
        usage = data.get("usage")
        return cls(
            role=role,
            text=_str(data.get("text")),
            thinking=_str(data.get("thinking")),
            thinking_signature=_str(data.get("thinking_signature")),
            tool_calls=tuple(
                ToolCall(_str(c.get("id")), _str(c.get("name")), _str(c.get("arguments")))
                for c in (calls if isinstance(calls, list) else [])
                if isinstance(c, dict)
            ),
            tool_call_id=_str(data.get("tool_call_id")),
            tool_name=_str(data.get("tool_name")),
            is_error=data.get("is_error") is True,
            usage=Usage(
                _int(usage.get("input_tokens")),
                _int(usage.get("output_tokens")),
                usage.get("estimated") is True,
            )
            if isinstance(usage, dict)
            else None,
        )


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


NOT_RUN = "error: the tool was not run (the run ended before it could be)"


def with_tool_results(messages: list[Message]) -> list[Message]:
    """``messages`` where every tool call is answered: providers refuse a conversation
    with an unanswered call, which a run that ended mid-turn (cancelled, out of turns)
    leaves behind. Missing results say the tool was not run."""
    out: list[Message] = []
    waiting: list[ToolCall] = []
    for message in messages:
        if message.role == "tool":
            waiting = [c for c in waiting if c.id != message.tool_call_id]
        elif waiting:
            out.extend(Message.tool_result(c, NOT_RUN, is_error=True) for c in waiting)
            waiting = []
        out.append(message)
        if message.role == "assistant":
            waiting = list(message.tool_calls)
    out.extend(Message.tool_result(c, NOT_RUN, is_error=True) for c in waiting)
    return out


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool offered to the model: its name, what it does and its JSON schema."""

    name: str
    description: str
    parameters: JSONObject


@dataclass(frozen=True, slots=True, kw_only=True)
class Turn:
    """What one model turn produced: the assistant message (with its usage)."""

    message: Message
    usage: Usage = field(default_factory=Usage)
    stop_reason: str = ""


class TurnSink(Protocol):
    """Receives a turn's text and reasoning as they stream in."""

    def text(self, delta: str) -> None: ...

    def thinking(self, delta: str) -> None: ...
