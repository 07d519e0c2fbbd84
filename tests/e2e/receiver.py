"""A webhook receiver on loopback: records what arrives, answers as scripted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial

import h11
import trio


@dataclass
class Received:
    """One request the receiver got."""

    at: float
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Answer:
    """What to answer: a status, headers, and how long to wait first."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Receiver:
    """The receiver's state: ``script`` answers requests in order (then ``default``)."""

    port: int = 0
    script: list[Answer] = field(default_factory=list)
    default: Answer = field(default_factory=Answer)
    received: list[Received] = field(default_factory=list)
    arrived: trio.Event = field(default_factory=trio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def wait_for(self, count: int) -> list[Received]:
        """Wait until ``count`` requests have arrived."""
        while len(self.received) < count:
            await self.arrived.wait()
            self.arrived = trio.Event()
        return self.received

    async def _serve_one(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        request: h11.Request | None = None
        body = b""
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(65536))
                elif isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    return
            assert request is not None
            self.received.append(
                Received(
                    at=trio.current_time(),
                    method=request.method.decode(),
                    path=request.target.decode(),
                    headers={k.decode().lower(): v.decode() for k, v in request.headers},
                    body=body,
                )
            )
            self.arrived.set()
            answer = self.script.pop(0) if self.script else self.default
            await trio.sleep(answer.delay)
            headers = [("content-length", "0"), ("connection", "close"), *answer.headers.items()]
            await stream.send_all(conn.send(h11.Response(status_code=answer.status, headers=headers)))
            await stream.send_all(conn.send(h11.EndOfMessage()))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await stream.aclose()


@asynccontextmanager
async def receiver(*script: Answer) -> AsyncIterator[Receiver]:
    """A receiver on a free loopback port, answering ``script`` then 200."""
    state = Receiver(script=list(script))
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, state._serve_one, 0, host="127.0.0.1"))
        state.port = listeners[0].socket.getsockname()[1]
        yield state
        nursery.cancel_scope.cancel()
