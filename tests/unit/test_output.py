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
    def __init__(self) -> None:
        self.events: list[tuple[str, str, float]] = []

    async def publish(self, stream: str, text: str) -> None:
        self.events.append((stream, text, trio.current_time()))


async def test_complete_lines_are_emitted_at_once_and_partials_after_100ms(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sink = Sink()
    live = LiveOutput(sink.publish)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(live.run_flusher)
        start = trio.current_time()
        await live.feed("stdout", b"line one\nline t")
        assert [(s, t) for s, t, _ in sink.events] == [("stdout", "line one\n")]
        await trio.sleep(1)
        assert [(s, t) for s, t, _ in sink.events] == [("stdout", "line one\n"), ("stdout", "line t")]
        assert sink.events[1][2] - start == 0.1
        nursery.cancel_scope.cancel()


async def test_big_chunks_flush_at_4kib_and_multibyte_chars_are_not_split() -> None:
    sink = Sink()
    live = LiveOutput(sink.publish)
    await live.feed("stderr", b"x" * FLUSH_BYTES)
    assert len(sink.events) == 1 and len(sink.events[0][1]) == FLUSH_BYTES
    euro = "€".encode()
    await live.feed("stdout", euro[:1])
    await live.feed("stdout", euro[1:] + b"\n")
    assert sink.events[-1][:2] == ("stdout", "€\n")


async def test_live_output_stops_at_its_limit_with_one_notice() -> None:
    sink = Sink()
    live = LiveOutput(sink.publish, live_limit=10)
    for _ in range(5):
        await live.feed("stdout", b"123456\n")
    texts = [text for _, text, _ in sink.events]
    assert texts[:2] == ["123456\n", "123456\n"]
    assert "live output limit reached" in texts[2]
    assert len(texts) == 3
