"""Any OpenAI-compatible chat-completions endpoint (OpenAI, Ollama, vLLM, llama.cpp,
OpenRouter...), streamed, through the official ``openai`` SDK."""

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
    import openai


@asynccontextmanager
async def open_openai(config: ProviderConfig, model: str, key: str | None) -> AsyncIterator[OpenAIChat]:
    """An :class:`OpenAIChat` with its client open."""
    try:
        import openai
    except ImportError:
        raise missing_package(config, "openai") from None
    # A keyless provider still passes a placeholder: given nothing, the SDK would
    # fall back to $OPENAI_API_KEY (and send it to a local server). The placeholder
    # itself is never sent: each request omits the Authorization header.
    async with openai.AsyncOpenAI(
        api_key=key or "keyless",
        base_url=config.endpoint,
        timeout=config.timeout,
        max_retries=config.max_retries,
    ) as client:
        yield OpenAIChat(config, model, key, client)


@dataclass(slots=True)
class _Call:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class OpenAIChat:
    """:class:`~termjobs.runners.llm.providers.Provider` over ``chat.completions``."""

    def __init__(
        self, config: ProviderConfig, model: str, key: str | None, client: openai.AsyncOpenAI
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
        import openai

        params: dict[str, Any] = {
            "model": self.model,
            "messages": _messages(system, messages),
            "stream": True,
            # OpenAI-compatible servers send usage only when asked.
            "stream_options": {"include_usage": True},
        }
        if tools:
            params["tools"] = [_tool(spec) for spec in tools]
        if max_output_tokens or self._config.max_output_tokens:
            params["max_tokens"] = max_output_tokens or self._config.max_output_tokens
        if self._key is None:
            params["extra_headers"] = {"Authorization": openai.omit}
        try:
            stream = await self._client.chat.completions.create(**params)
            async with stream:
                return await _read(stream, sink, params)
        except openai.APITimeoutError:
            raise connection_error(self._config, self._key, timed_out=True) from None
        except openai.APIConnectionError as exc:
            cause = str(exc.__cause__ or "")
            raise connection_error(self._config, self._key, timed_out=False, cause=cause) from None
        except openai.APIStatusError as exc:
            error = status_error(self._config, self.model, self._key, exc.status_code, exc.body, exc.message)
            raise error from None
        except openai.OpenAIError as exc:
            raise other_error(self._config, self._key, exc) from None


async def _read(stream: Any, sink: TurnSink, params: dict[str, Any]) -> Turn:
    text: list[str] = []
    thinking: list[str] = []
    calls: dict[int, _Call] = {}
    usage: Usage | None = None
    finish = ""
    deltas = 0
    async for chunk in stream:
        if chunk.usage is not None:
            usage = Usage(chunk.usage.prompt_tokens or 0, chunk.usage.completion_tokens or 0)
        for choice in chunk.choices:
            delta = choice.delta
            reasoning = _reasoning(delta)
            deltas += bool(delta.content or reasoning or delta.tool_calls)
            if delta.content:
                text.append(delta.content)
                sink.text(delta.content)
            if reasoning:
                thinking.append(reasoning)
                sink.thinking(reasoning)
            for piece in delta.tool_calls or ():
                call = calls.setdefault(piece.index, _Call())
                call.id = piece.id or call.id
                if piece.function is not None:
                    call.name = piece.function.name or call.name
                    call.arguments.append(piece.function.arguments or "")
            finish = choice.finish_reason or finish
    tool_calls = tuple(
        ToolCall(call.id or f"call_{index}", call.name, "".join(call.arguments))
        for index, call in sorted(calls.items())
    )
    if usage is None:
        usage = _estimate(params, deltas)
    message = Message(
        role="assistant", text="".join(text), thinking="".join(thinking), tool_calls=tool_calls, usage=usage
    )
    return Turn(message=message, usage=usage, stop_reason=finish)


def _estimate(params: dict[str, Any], deltas: int) -> Usage:
    """Usage for a server that streams none (llama-cpp-python's, for one): such
    servers send a token per chunk; the prompt is taken at four characters a token."""
    prompt = json.dumps(params["messages"]) + json.dumps(params.get("tools", []))
    return Usage(-(-len(prompt) // 4), deltas, estimated=True)


def _reasoning(delta: Any) -> str:
    # Not part of OpenAI's schema: llama.cpp and DeepSeek send ``reasoning_content``,
    # Ollama and OpenRouter ``reasoning``.
    extra = getattr(delta, "model_extra", None) or {}
    for name in ("reasoning_content", "reasoning"):
        value = extra.get(name)
        if isinstance(value, str) and value:
            return value
    return ""


def _tool(spec: ToolSpec) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {"name": spec.name, "description": spec.description, "parameters": spec.parameters},
    }


def _messages(system: str, messages: Sequence[Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    for message in messages:
        if message.role == "user":
            out.append({"role": "user", "content": message.text})
        elif message.role == "tool":
            out.append({"role": "tool", "tool_call_id": message.tool_call_id, "content": message.text})
        else:
            entry: dict[str, Any] = {"role": "assistant", "content": message.text}
            if message.tool_calls:
                entry["tool_calls"] = [
                    {
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.name, "arguments": c.arguments or "{}"},
                    }
                    for c in message.tool_calls
                ]
            out.append(entry)
    return out
