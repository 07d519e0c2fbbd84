"""LLM providers behind one small interface (:class:`Provider`).

Two implementations, over the official SDKs, both of which work under trio: any
OpenAI-compatible chat-completions endpoint (``openai_chat``) and Anthropic's messages
API (``anthropic_messages``). The SDKs are dependencies of termjobs, imported lazily
(only by :func:`open_provider`), so a server without llm jobs never loads them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Protocol

from termjobs.runners.llm.messages import Message, ToolSpec, Turn, TurnSink
from termjobs.runners.llm.providers.errors import ProviderError
from termjobs.runners.llm.settings import ProviderConfig

__all__ = ["Provider", "ProviderError", "open_provider"]


class Provider(Protocol):
    """One model of one provider, ready for turns."""

    name: str
    model: str

    async def turn(
        self,
        *,
        system: str,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec],
        max_output_tokens: int | None,
        sink: TurnSink,
    ) -> Turn:
        """One model turn: streams text and reasoning into ``sink`` and returns the
        assistant message. Raises :class:`ProviderError` (message for the run's error)."""
        ...


@asynccontextmanager
async def open_provider(config: ProviderConfig, model: str, key: str | None) -> AsyncIterator[Provider]:
    """A client for ``config`` (closed on exit: the SDKs only clean up by themselves
    under asyncio)."""
    if config.type == "anthropic":
        from termjobs.runners.llm.providers.anthropic_messages import open_anthropic

        async with open_anthropic(config, model, key) as anthropic_provider:
            yield anthropic_provider
    else:
        from termjobs.runners.llm.providers.openai_chat import open_openai

        async with open_openai(config, model, key) as openai_provider:
            yield openai_provider
