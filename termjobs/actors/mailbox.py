"""Request/reply over bounded mailboxes.

Every request message carries a :class:`Reply`; the receiving actor always answers it,
with a value or an exception, and the exception is re-raised in the caller. Requests
are sent and awaited under a timeout, so a wedged actor costs the caller a 503, never
a hang.
"""

from __future__ import annotations

from typing import Generic, TypeVar

import outcome
import trio

from termjobs.errors import Unavailable

T = TypeVar("T")
M = TypeVar("M")

MAILBOX_SIZE = 64


class Reply(Generic[T]):
    """A one-shot answer slot."""

    __slots__ = ("_done", "_result")

    def __init__(self) -> None:
        self._done = trio.Event()
        self._result: outcome.Outcome[T] | None = None

    def send(self, value: T) -> None:
        if self._result is None:
            self._result = outcome.Value(value)
            self._done.set()

    def fail(self, exc: BaseException) -> None:
        if self._result is None:
            self._result = outcome.Error(exc)
            self._done.set()

    def rearm(self) -> None:
        """Forget an answer so the request can be sent again (its recipient stopped
        before handling it and answered ``ActorGone``, or never received it)."""
        self._done = trio.Event()
        self._result = None

    @property
    def answered(self) -> bool:
        return self._result is not None

    async def wait(self) -> T:
        await self._done.wait()
        assert self._result is not None
        return self._result.unwrap()


async def ask(mailbox: trio.MemorySendChannel[M], message: M, reply: Reply[T], *, within: float) -> T:
    """Send ``message`` and wait for ``reply``, at most ``within`` seconds in all.

    Raises :class:`trio.BrokenResourceError` or :class:`trio.ClosedResourceError` if the
    actor is gone, and :class:`Unavailable` on timeout.
    """
    with trio.move_on_after(within):
        await mailbox.send(message)
        return await reply.wait()
    raise Unavailable(f"the server did not answer within {within:g}s; try again")
