"""Anthropic's messages API, streamed, through the official ``anthropic`` SDK."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from termjobs.runners.llm.messages import Message, ToolCall, ToolSpec, Turn, TurnSink, Usage
from termjobs.runners.llm.providers.errors import (
    connection_error,
    missing_package,
    other_error,
    status_error,
)
from termjobs.runners.llm.settings import ProviderConfig

if TYPE_CHECKING:
    import anthropic

#: Anthropic requires a cap on the answer; used when neither job nor provider sets one.
DEFAULT_MAX_TOKENS = 4096


@asynccontextmanager
async def open_anthropic(
    config: ProviderConfig, model: str, key: str | None
) -> AsyncIterator[AnthropicMessages]:
    """An :class:`AnthropicMessages` with its client open."""
    try:
        import anthropic
    except ImportError:
        raise missing_package(config, "anthropic") from None
    # As for OpenAI: an explicit placeholder keeps the SDK from looking for
    # credentials in the environment or on disk; keyless requests omit the headers.
    async with anthropic.AsyncAnthropic(
        api_key=key or "keyless",
        base_url=config.endpoint,
        timeout=config.timeout,
        max_retries=config.max_retries,
        open_telemetry=False,
    ) as client:
        yield AnthropicMessages(config, model, key, client)


@dataclass(slots=True)
class _Block:
    kind: str
    id: str = ""
    name: str = ""
    parts: list[str] = field(default_factory=list)
    signature: str = ""


class AnthropicMessages:
    """:class:`~termjobs.runners.llm.providers.Provider` over ``messages.create``."""

    def __init__(
        self, config: ProviderConfig, model: str, key: str | None, client: anthropic.AsyncAnthropic
    ) -> None:
        self.name = config.name
        self.model = model
        self._config = config
        self._key = key
        self._client = client

    async def turn(
        self,
        *,
        system: str,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec],
        max_output_tokens: int | None,
        sink: TurnSink,
    ) -> Turn:
        import anthropic

        params: dict[str, Any] = {
            "model": self.model,
            "messages": _messages(messages),
            "max_tokens": max_output_tokens or self._config.max_output_tokens or DEFAULT_MAX_TOKENS,
            "stream": True,
        }
        if system:
            params["system"] = system
        if tools:
            params["tools"] = [
                {"name": s.name, "description": s.description, "input_schema": s.parameters} for s in tools
            ]
        if self._key is None:
            params["extra_headers"] = {"X-Api-Key": anthropic.omit, "Authorization": anthropic.omit}
        try:
            stream = await self._client.messages.create(**params)
            async with stream:
                return await _read(stream, sink)
        except anthropic.APITimeoutError:
            raise connection_error(self._config, self._key, timed_out=True) from None
        except anthropic.APIConnectionError as exc:
            cause = str(exc.__cause__ or "")
            raise connection_error(self._config, self._key, timed_out=False, cause=cause) from None
        except anthropic.APIStatusError as exc:
            error = status_error(self._config, self.model, self._key, exc.status_code, exc.body, exc.message)
            raise error from None
        except anthropic.AnthropicError as exc:
            raise other_error(self._config, self._key, exc) from None


async def _read(stream: Any, sink: TurnSink) -> Turn:
    blocks: dict[int, _Block] = {}
    input_tokens = output_tokens = 0
    stop = ""
    async for event in stream:
        kind = event.type
        if kind == "message_start":
            usage = event.message.usage
            input_tokens = (
                (usage.input_tokens or 0)
                + (getattr(usage, "cache_creation_input_tokens", 0) or 0)
                + (getattr(usage, "cache_read_input_tokens", 0) or 0)
            )
            output_tokens = usage.output_tokens or 0
        elif kind == "content_block_start":
            start = event.content_block
            blocks[event.index] = _Block(start.type, getattr(start, "id", ""), getattr(start, "name", ""))
        elif kind == "content_block_delta":
            _delta(blocks.setdefault(event.index, _Block("text")), event.delta, sink)
        elif kind == "message_delta":
            stop = event.delta.stop_reason or stop
            if event.usage is not None and event.usage.output_tokens is not None:
                output_tokens = event.usage.output_tokens  # cumulative
    ordered = [blocks[i] for i in sorted(blocks)]
    usage = Usage(input_tokens, output_tokens)
    message = Message(
        role="assistant",
        text="".join("".join(b.parts) for b in ordered if b.kind == "text"),
        thinking="\n\n".join("".join(b.parts) for b in ordered if b.kind == "thinking"),
        thinking_signature=next((b.signature for b in ordered if b.kind == "thinking" and b.signature), ""),
        tool_calls=tuple(ToolCall(b.id, b.name, "".join(b.parts)) for b in ordered if b.kind == "tool_use"),
        usage=usage,
    )
    return Turn(message=message, usage=usage, stop_reason=stop)


def _delta(block: _Block, delta: Any, sink: TurnSink) -> None:
    match delta.type:
        case "text_delta":
            block.parts.append(delta.text)
            sink.text(delta.text)
        case "thinking_delta":
            block.parts.append(delta.thinking)
            sink.thinking(delta.thinking)
        case "signature_delta":
            block.signature += delta.signature
        case "input_json_delta":
            block.parts.append(delta.partial_json)


def _messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """The conversation in Anthropic's shape: tool results travel in user messages, and
    consecutive messages of one role are merged (the API wants them alternating)."""
    out: list[dict[str, Any]] = []
    for message in messages:
        role, blocks = _blocks(message)
        if not blocks:
            continue
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    return out


def _blocks(message: Message) -> tuple[str, list[dict[str, Any]]]:
    if message.role == "user":
        return "user", [{"type": "text", "text": message.text}] if message.text else []
    if message.role == "tool":
        result = {
            "type": "tool_result",
            "tool_use_id": message.tool_call_id,
            "content": message.text,
            "is_error": message.is_error,
        }
        return "user", [result]
    blocks: list[dict[str, Any]] = []
    if message.thinking and message.thinking_signature:
        blocks.append(
            {"type": "thinking", "thinking": message.thinking, "signature": message.thinking_signature}
        )
    if message.text:
        blocks.append({"type": "text", "text": message.text})
    for call in message.tool_calls:
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": _input(call)})
    return "assistant", blocks


def _input(call: ToolCall) -> Any:
    try:
        value = json.loads(call.arguments) if call.arguments.strip() else {}
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}
