"""A scripted LLM provider on loopback, speaking the real streaming wire formats.

The server answers ``POST /v1/chat/completions`` in OpenAI's chat-completions format
and ``POST /v1/messages`` in Anthropic's messages format, both as server-sent events
(``stream: true``), from one queue of scripted :class:`Turn` values: the same script
drives either SDK. It records every request (path, headers, JSON body) and counts
connections the client closed while a reply was still streaming (a cancelled run must
close its socket at once).

Built on h11 over a trio TCP listener, so the SDKs talk to it through their real HTTP
stack, retries and SSE parsers included.
"""

from __future__ import annotations

import contextlib
import json
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import h11
import trio


@dataclass
class ToolCall:
    """A tool call the scripted model makes."""

    id: str
    name: str
    arguments: dict[str, Any]


@dataclass
class Turn:
    """One reply of the scripted model.

    A normal turn streams ``thinking``, then ``text`` (in ``chunks`` pieces), then the
    tool calls, then the usage. ``hold`` pauses the stream after the first text piece
    until the event is set (or forever with ``hold_forever``). ``status`` other than
    200 answers with that error instead (``error`` is the message, ``headers`` are
    added, e.g. ``retry-after-ms``).
    """

    text: str = ""
    thinking: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    #: tokens reported (OpenAI: ``None`` sends no usage chunk, as llama-cpp-python)
    usage: tuple[int, int] | None = (10, 5)
    chunks: int = 2
    hold: trio.Event | None = None
    hold_forever: bool = False
    status: int = 200
    error: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    #: a reply used for every request once the script is exhausted (errors "until failure")
    repeat: bool = False


@dataclass
class Request:
    """A request the server received."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class ScriptedLLM:
    """The server's state: the script, what was asked and what happened."""

    def __init__(self) -> None:
        self.script: deque[Turn] = deque()
        self.requests: list[Request] = []
        self.disconnects = 0
        self.disconnected = trio.Event()  # set when a client closed a held reply
        self.failures: list[Exception] = []
        self.streaming = trio.Event()  # set once a held reply has started streaming
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add(self, *turns: Turn) -> None:
        self.script.extend(turns)

    def _next(self) -> Turn:
        if not self.script:
            return Turn(status=500, error="the scripted model has no reply left")
        turn = self.script[0]
        if not turn.repeat:
            self.script.popleft()
        return turn

    # ------------------------------------------------------------ connection

    async def handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request = await self._read_request(conn, stream)
                if request is None:
                    return
                await self._answer(conn, stream, request)
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            return
        except Exception as exc:  # a broken script must not take the server (or a fixture) down
            self.failures.append(exc)
        finally:
            await stream.aclose()

    async def _read_request(self, conn: h11.Connection, stream: trio.SocketStream) -> Request | None:
        head: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                conn.receive_data(data)
                if not data and head is None:
                    return None
                continue
            if isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                headers = {k.decode().lower(): v.decode() for k, v in head.headers}
                parsed = json.loads(body) if body else {}
                return Request(head.target.decode(), headers, parsed)
            elif isinstance(event, h11.ConnectionClosed):
                return None

    async def _answer(self, conn: h11.Connection, stream: trio.SocketStream, request: Request) -> None:
        self.requests.append(request)
        anthropic = request.path.endswith("/messages")
        turn = self._next()
        if turn.status != 200:
            await self._error(conn, stream, turn, anthropic=anthropic)
            return
        headers = [("content-type", "text/event-stream"), ("cache-control", "no-cache")]
        await stream.send_all(conn.send(h11.Response(status_code=200, headers=headers)))
        frames = anthropic_frames(turn, request) if anthropic else openai_frames(turn, request)
        for index, frame in enumerate(frames):
            await stream.send_all(conn.send(h11.Data(data=frame.encode())))
            if index == _first_text_frame(anthropic, turn) and (turn.hold is not None or turn.hold_forever):
                await self._hold(stream, turn)
        await stream.send_all(conn.send(h11.EndOfMessage()))

    async def _hold(self, stream: trio.SocketStream, turn: Turn) -> None:
        """Pause mid-stream; notice (and count) the client closing the connection."""
        self.streaming.set()
        closed = False
        async with trio.open_nursery() as nursery:

            async def watch_close() -> None:
                nonlocal closed
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    while await stream.receive_some(65536):
                        pass
                closed = True
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch_close)
            if turn.hold_forever:
                await trio.sleep_forever()
            assert turn.hold is not None
            await turn.hold.wait()
            nursery.cancel_scope.cancel()
        if closed:
            self.disconnects += 1
            self.disconnected.set()
            raise trio.ClosedResourceError("the client went away")

    async def _error(
        self, conn: h11.Connection, stream: trio.SocketStream, turn: Turn, *, anthropic: bool
    ) -> None:
        if anthropic:
            kind = {401: "authentication_error", 404: "not_found_error", 429: "rate_limit_error"}
            body: dict[str, Any] = {
                "type": "error",
                "error": {"type": kind.get(turn.status, "api_error"), "message": turn.error},
            }
        else:
            body = {"error": {"message": turn.error, "type": "invalid_request_error", "param": None}}
        data = json.dumps(body).encode()
        headers = [
            ("content-type", "application/json"),
            ("content-length", str(len(data))),
            *((k, v) for k, v in turn.headers.items()),
        ]
        await stream.send_all(conn.send(h11.Response(status_code=turn.status, headers=headers)))
        await stream.send_all(conn.send(h11.Data(data=data)))
        await stream.send_all(conn.send(h11.EndOfMessage()))


def _first_text_frame(anthropic: bool, turn: Turn) -> int:
    """Where the first text delta is in the rendered frames (where a hold pauses)."""
    if anthropic:  # message_start, [thinking block: 4 frames], text block start
        return 2 + (4 if turn.thinking else 0)
    return 1 + (1 if turn.thinking else 0)  # role chunk, [reasoning chunk]


def _pieces(text: str, count: int) -> list[str]:
    if not text:
        return []
    size = max(1, -(-len(text) // max(1, count)))
    return [text[i : i + size] for i in range(0, len(text), size)]


def _sse(data: dict[str, Any] | str, event: str | None = None) -> str:
    payload = data if isinstance(data, str) else json.dumps(data)
    return (f"event: {event}\n" if event else "") + f"data: {payload}\n\n"


def openai_frames(turn: Turn, request: Request) -> list[str]:
    """The turn as OpenAI ``chat.completion.chunk`` events."""
    model = str(request.body.get("model", "scripted"))

    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        return _sse(
            {
                "id": "chatcmpl-scripted",
                "object": "chat.completion.chunk",
                "created": 1_767_225_600,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
        )

    frames = [chunk({"role": "assistant", "content": ""})]
    if turn.thinking:
        frames.append(chunk({"reasoning_content": turn.thinking}))
    frames += [chunk({"content": piece}) for piece in _pieces(turn.text, turn.chunks)]
    for index, call in enumerate(turn.tool_calls):
        arguments = json.dumps(call.arguments)
        half = len(arguments) // 2
        opening = {"index": index, "id": call.id, "type": "function"}
        frames.append(chunk({"tool_calls": [{**opening, "function": {"name": call.name, "arguments": ""}}]}))
        for part in (arguments[:half], arguments[half:]):
            frames.append(chunk({"tool_calls": [{"index": index, "function": {"arguments": part}}]}))
    frames.append(chunk({}, "tool_calls" if turn.tool_calls else "stop"))
    if turn.usage is None:
        return [*frames, _sse("[DONE]")]
    prompt, completion = turn.usage
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    frames.append(
        _sse(
            {
                "id": "chatcmpl-scripted",
                "object": "chat.completion.chunk",
                "created": 1_767_225_600,
                "model": model,
                "choices": [],
                "usage": usage,
            }
        )
    )
    frames.append(_sse("[DONE]"))
    return frames


def anthropic_frames(turn: Turn, request: Request) -> list[str]:
    """The turn as Anthropic ``messages`` stream events."""
    model = str(request.body.get("model", "scripted"))
    prompt, completion = turn.usage or (0, 0)
    frames = [
        _sse(
            {
                "type": "message_start",
                "message": {
                    "id": "msg_scripted",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": prompt, "output_tokens": 1},
                },
            },
            "message_start",
        )
    ]
    index = 0

    def block(start: dict[str, Any], deltas: list[dict[str, Any]]) -> None:
        nonlocal index
        frames.append(
            _sse(
                {"type": "content_block_start", "index": index, "content_block": start}, "content_block_start"
            )
        )
        for delta in deltas:
            frames.append(
                _sse({"type": "content_block_delta", "index": index, "delta": delta}, "content_block_delta")
            )
        frames.append(_sse({"type": "content_block_stop", "index": index}, "content_block_stop"))
        index += 1

    if turn.thinking:
        block(
            {"type": "thinking", "thinking": "", "signature": ""},
            [
                {"type": "thinking_delta", "thinking": turn.thinking},
                {"type": "signature_delta", "signature": "c2lnbmF0dXJl"},
            ],
        )
    if turn.text or not turn.tool_calls:
        block(
            {"type": "text", "text": ""},
            [{"type": "text_delta", "text": piece} for piece in _pieces(turn.text, turn.chunks)],
        )
    for call in turn.tool_calls:
        arguments = json.dumps(call.arguments)
        half = len(arguments) // 2
        block(
            {"type": "tool_use", "id": call.id, "name": call.name, "input": {}},
            [
                {"type": "input_json_delta", "partial_json": arguments[:half]},
                {"type": "input_json_delta", "partial_json": arguments[half:]},
            ],
        )
    stop = "tool_use" if turn.tool_calls else "end_turn"
    frames.append(
        _sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": completion},
            },
            "message_delta",
        )
    )
    frames.append(_sse({"type": "message_stop"}, "message_stop"))
    return frames


@asynccontextmanager
async def scripted_llm() -> AsyncIterator[ScriptedLLM]:
    """Serve a :class:`ScriptedLLM` on a free loopback port until the block ends."""
    server = ScriptedLLM()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1"))
        server.port = listeners[0].socket.getsockname()[1]
        yield server
        nursery.cancel_scope.cancel()
