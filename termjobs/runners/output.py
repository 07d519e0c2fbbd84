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
import logging
from collections.abc import Awaitable, Callable

import trio

HEAD_TAIL_LIMIT = 32 * 1024
FLUSH_BYTES = 4 * 1024
FLUSH_INTERVAL_S = 0.1
LIVE_LIMIT = 1024 * 1024

logger = logging.getLogger(__name__)


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

#: Live text waiting to be written, per stream, before newer text is dropped.
PENDING_LIMIT = 256 * 1024


class LiveOutput:
    """Batches one run's output bytes (per stream: ``stdout``/``stderr`` for programs,
    ``response``/``thinking`` for LLM runs) into ``output`` events.

    :meth:`feed` never blocks: the pipes are read at full speed whatever storage does.
    One writer task (:meth:`run`) turns what was fed into events with ``publish``;
    if it falls behind by more than ``PENDING_LIMIT`` the newest live text is dropped
    (it is still in the run's captured output) and a note says how much. Publishing
    is best effort: a failed event write is logged and never fails the run.
    """

    def __init__(
        self,
        publish: Publish,
        *,
        live_limit: int = LIVE_LIMIT,
        streams: tuple[str, ...] = ("stdout", "stderr"),
        kept_in: str = "the run's stdout/stderr",
    ) -> None:
        self._publish = publish
        self._live_left = live_limit
        self._limit_noted = False
        self._decoders = {s: codecs.getincrementaldecoder("utf-8")("replace") for s in streams}
        self._pending = dict.fromkeys(streams, "")
        self._note_stream = streams[-1]
        self._kept_in = kept_in
        # flush() and the writer task may both write: one at a time, or text repeats.
        self._writing = trio.Lock()
        self._dropped = 0
        self._wake = trio.Event()  # something was fed
        self._ready = trio.Event()  # a newline or a full batch was fed
        self._failed = False

    def feed(self, stream: str, data: bytes | bytearray) -> None:
        """Add bytes read from ``stream``."""
        text = self._decoders[stream].decode(bytes(data))
        if not text:
            return
        if len(self._pending[stream]) >= PENDING_LIMIT:
            self._dropped += len(text.encode())
            return
        self._pending[stream] += text
        if "\n" in text or len(self._pending[stream]) >= FLUSH_BYTES:
            self._ready.set()
        self._wake.set()

    async def run(self) -> None:
        """Write batches: complete lines at once, a partial line after 100 ms."""
        while True:
            await self._wake.wait()
            timed_out = False
            if not self._ready.is_set():
                with trio.move_on_after(FLUSH_INTERVAL_S) as scope:
                    await self._ready.wait()
                timed_out = scope.cancelled_caught
            self._wake, self._ready = trio.Event(), trio.Event()
            await self._write_pending(partial=timed_out)
            if any(self._pending.values()):
                self._wake.set()  # a partial line is left: its 100 ms start now

    async def close(self) -> None:
        """Write everything still buffered (call once the pipes are closed)."""
        for stream, decoder in self._decoders.items():
            self._pending[stream] += decoder.decode(b"", final=True)
        if self._dropped or any(self._pending.values()):
            await self._write_pending(partial=True)

    async def flush(self) -> None:
        """Write what was fed so far now, partial lines included (an LLM runner calls
        this before a turn's other events, so the timeline keeps its order)."""
        await self._write_pending(partial=True)

    async def _write_pending(self, *, partial: bool) -> None:
        async with self._writing:
            await self._write_locked(partial=partial)

    async def _write_locked(self, *, partial: bool) -> None:
        # Text leaves the buffer only once it was handed on: a write cancelled by the
        # end of the run leaves it for close() (feed() only ever appends meanwhile).
        if dropped := self._dropped:
            await self._emit(
                self._note_stream,
                f"[termjobs: {dropped} bytes of live output dropped because storage fell behind; "
                f"{self._kept_in} keep them]\n",
            )
            self._dropped -= dropped
        for stream in list(self._pending):
            text = self._pending[stream]
            cut = len(text) if partial or len(text) >= FLUSH_BYTES else text.rfind("\n") + 1
            if cut:
                await self._emit(stream, text[:cut])
                self._pending[stream] = self._pending[stream][cut:]

    async def _emit(self, stream: str, text: str) -> None:
        size, over_limit = len(text.encode("utf-8")), self._live_left <= 0
        if over_limit:
            if self._limit_noted:
                return
            text = f"[termjobs: live output limit reached; the rest is kept only in {self._kept_in}]\n"
        try:
            await self._publish(stream, text)
        except Exception:
            if not self._failed:
                self._failed = True
                logger.exception("could not store live output; the run continues")
        # Counted once handed on (or given up on); a cancelled write changes nothing.
        if over_limit:
            self._limit_noted = True
        else:
            self._live_left -= size
