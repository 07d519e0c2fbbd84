"""Program output: bounded capture for the run record, and batched live events.

:class:`HeadTail` keeps the first and the last ``limit`` bytes of a stream exactly; what
falls between them is replaced by one visible marker line. :class:`LiveOutput` turns
the same bytes into ``output`` events, batched so a chatty program cannot flood
storage: a batch is emitted at a newline, at 4 KiB, or 100 ms after the first
unflushed byte, and once a run has streamed ``live_limit`` bytes live, the rest is
kept only in the run's captured output.
"""

from __future__ import annotations

import codecs
from collections.abc import Awaitable, Callable

import trio

HEAD_TAIL_LIMIT = 32 * 1024
FLUSH_BYTES = 4 * 1024
FLUSH_INTERVAL_S = 0.1
LIVE_LIMIT = 1024 * 1024


class HeadTail:
    """The first and last ``limit`` bytes of a stream."""

    def __init__(self, limit: int = HEAD_TAIL_LIMIT) -> None:
        self._limit = limit
        self._head = bytearray()
        self._tail = bytearray()
        self.total = 0

    def feed(self, data: bytes | bytearray) -> None:
        self.total += len(data)
        room = self._limit - len(self._head)
        if room > 0:
            self._head += data[:room]
            data = data[room:]
        if data:
            self._tail += data
            if len(self._tail) > 2 * self._limit:  # trim in bulk, not per chunk
                del self._tail[: len(self._tail) - self._limit]

    @property
    def truncated(self) -> bool:
        return self.total > 2 * self._limit

    def text(self) -> str:
        """The captured output as text (invalid UTF-8 shown as U+FFFD)."""
        tail = bytes(self._tail[-self._limit :]) if self._tail else b""
        if not self.truncated:
            return (bytes(self._head) + bytes(self._tail)).decode("utf-8", "replace")
        dropped = self.total - len(self._head) - len(tail)
        marker = f"\n[... termjobs: {dropped} bytes of output omitted ...]\n"
        return self._head.decode("utf-8", "replace") + marker + tail.decode("utf-8", "replace")


Publish = Callable[[str, str], Awaitable[None]]


class LiveOutput:
    """Batches one run's stdout/stderr bytes into ``output`` events.

    ``publish(stream, text)`` writes one event. Feeding and flushing are serialised by
    a lock so events of a stream keep their order.
    """

    def __init__(self, publish: Publish, *, live_limit: int = LIVE_LIMIT) -> None:
        self._publish = publish
        self._live_left = live_limit
        self._limit_noted = False
        self._decoders = {s: codecs.getincrementaldecoder("utf-8")("replace") for s in ("stdout", "stderr")}
        self._pending = {"stdout": "", "stderr": ""}
        self._lock = trio.Lock()
        self._has_partial = trio.Event()

    async def feed(self, stream: str, data: bytes | bytearray) -> None:
        """Add bytes read from ``stream``; emits complete lines and full batches."""
        async with self._lock:
            buffered = self._pending[stream] + self._decoders[stream].decode(data)
            cut = len(buffered) if len(buffered) >= FLUSH_BYTES else buffered.rfind("\n") + 1
            self._pending[stream] = buffered[cut:]
            if cut:
                await self._emit(stream, buffered[:cut])
            if self._pending[stream]:
                self._has_partial.set()

    async def run_flusher(self) -> None:
        """Flush partial lines ``FLUSH_INTERVAL_S`` after they arrive (run as a task)."""
        while True:
            await self._has_partial.wait()
            await trio.sleep(FLUSH_INTERVAL_S)
            self._has_partial = trio.Event()
            await self.flush()

    async def flush(self, *, final: bool = False) -> None:
        """Emit everything buffered (``final`` also drains the UTF-8 decoders)."""
        async with self._lock:
            for stream, decoder in self._decoders.items():
                text = self._pending[stream] + (decoder.decode(b"", final=True) if final else "")
                self._pending[stream] = ""
                if text:
                    await self._emit(stream, text)

    async def _emit(self, stream: str, text: str) -> None:
        if self._live_left <= 0:
            if not self._limit_noted:
                self._limit_noted = True
                await self._publish(
                    stream,
                    "[termjobs: live output limit reached; the rest is kept only in the "
                    "run's stdout/stderr]\n",
                )
            return
        size = len(text.encode("utf-8"))
        self._live_left -= size
        await self._publish(stream, text)
