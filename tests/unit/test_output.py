"""Head+tail output capture and batched live output events."""

from __future__ import annotations

import trio
import trio.testing

from termjobs.runners.output import FLUSH_BYTES, HeadTail, LiveOutput


def test_short_output_is_kept_whole() -> None:
    capture = HeadTail(limit=8)
    for chunk in (b"abc", b"defgh", b"ijklmnop"):
        capture.feed(chunk)
    assert capture.text() == "abcdefghijklmnop" and not capture.truncated


def test_long_output_keeps_exact_head_and_tail_with_a_marker() -> None:
    capture = HeadTail(limit=4)
    data = bytes(range(97, 97 + 26))  # a..z
    for i in range(0, 26, 3):
        capture.feed(data[i : i + 3])
    assert capture.truncated
    assert capture.text() == "abcd\n[... termjobs: 18 bytes of output omitted ...]\nwxyz"


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    capture = HeadTail()
    capture.feed(b"ok \xff\xfe done")
    assert capture.text() == "ok \ufffd\ufffd done"


class Sink:
    def __init__(self, *, delay: float = 0.0, fail: bool = False) -> None:
        self.events: list[tuple[str, str, float]] = []
        self.delay, self.fail = delay, fail

    async def publish(self, stream: str, text: str) -> None:
        await trio.sleep(self.delay)
        if self.fail:
            raise RuntimeError("storage is down")
        self.events.append((stream, text, trio.current_time()))

    def texts(self) -> list[tuple[str, str]]:
        return [(s, t) for s, t, _ in self.events]


async def test_complete_lines_are_written_at_once_and_partials_after_100ms(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sink = Sink()
    live = LiveOutput(sink.publish)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(live.run)
        start = trio.current_time()
        live.feed("stdout", b"line one\nline t")
        await trio.testing.wait_all_tasks_blocked()
        assert sink.texts() == [("stdout", "line one\n")] and sink.events[0][2] == start
        await trio.sleep(1)
        assert sink.texts() == [("stdout", "line one\n"), ("stdout", "line t")]
        assert sink.events[1][2] - start == 0.1
        nursery.cancel_scope.cancel()


async def test_big_chunks_flush_at_4kib_and_multibyte_chars_are_not_split(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sink = Sink()
    live = LiveOutput(sink.publish)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(live.run)
        live.feed("stderr", b"x" * FLUSH_BYTES)
        await trio.testing.wait_all_tasks_blocked()
        assert len(sink.events) == 1 and len(sink.events[0][1]) == FLUSH_BYTES
        euro = "€".encode()
        live.feed("stdout", euro[:1])
        live.feed("stdout", euro[1:] + b"\n")
        await trio.testing.wait_all_tasks_blocked()
        assert sink.texts()[-1] == ("stdout", "€\n")
        nursery.cancel_scope.cancel()


async def test_live_output_stops_at_its_limit_with_one_notice() -> None:
    sink = Sink()
    live = LiveOutput(sink.publish, live_limit=10)
    for _ in range(5):
        live.feed("stdout", b"123456\n")
        await live.close()
    texts = [text for _, text in sink.texts()]
    assert texts[:2] == ["123456\n", "123456\n"]
    assert "live output limit reached" in texts[2]
    assert len(texts) == 3


async def test_feeding_never_waits_for_a_slow_writer_and_drops_are_reported(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sink = Sink(delay=10)
    live = LiveOutput(sink.publish)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(live.run)
        start = trio.current_time()
        for _ in range(200):  # 200 x 4 KiB while the writer is stuck for 10 s
            live.feed("stdout", b"y" * 4095 + b"\n")
        assert trio.current_time() == start  # feeding took no time at all
        await trio.sleep(100)
        nursery.cancel_scope.cancel()
    notes = [t for s, t in sink.texts() if "dropped because storage fell behind" in t]
    assert len(notes) == 1
    assert sum(len(t) for s, t in sink.texts() if s == "stdout") >= 256 * 1024


async def test_a_failing_writer_never_raises() -> None:
    live = LiveOutput(Sink(fail=True).publish)
    live.feed("stdout", b"lost\n")
    await live.close()  # logged, not raised


async def test_text_whose_write_was_cancelled_is_written_by_close(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sink = Sink(delay=1.0)
    live = LiveOutput(sink.publish)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(live.run)
        live.feed("stdout", b"last words\n")
        await trio.sleep(0.5)  # the writer is in the middle of writing them
        nursery.cancel_scope.cancel()  # the run ended
    sink.delay = 0.0
    await live.close()
    assert sink.texts() == [("stdout", "last words\n")]
