"""The stop signal a runner watches: requests, and the run's timeout as its deadline (virtual time)."""

from __future__ import annotations

import trio
import trio.testing

from termjobs.runners.base import StopReason, StopSignal


async def test_the_deadline_is_a_timeout_request_noticed_without_a_task(
    autojump_clock: trio.testing.MockClock,
) -> None:
    stop = StopSignal()
    stop.expire_at(trio.current_time() + 10)
    calls: list[float] = []
    stop.on_request(lambda: calls.append(trio.current_time()))
    with trio.CancelScope() as scope:
        stop.cancels(scope)
        await trio.sleep(3600)
    assert scope.cancelled_caught and trio.current_time() == 10
    assert (stop.requested, stop.reason) == (True, StopReason.TIMEOUT)
    await stop.wait()  # returns at once
    assert calls == [10]  # the hooks ran when the deadline was noticed, once
    stop.request(StopReason.CANCEL)
    assert (stop.reason, calls) == (StopReason.TIMEOUT, [10])  # the first reason stays


async def test_a_request_before_the_deadline_wakes_waiters_and_cancels_scopes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    stop = StopSignal()
    stop.expire_at(trio.current_time() + 60)
    woken: list[float] = []

    async def waiter() -> None:
        await stop.wait()
        woken.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        with trio.CancelScope() as scope:
            stop.cancels(scope)
            nursery.start_soon(lambda: _request_after(stop, 5))
            await trio.sleep(3600)
    assert scope.cancelled_caught and woken == [5] and stop.reason is StopReason.CANCEL
    late = trio.CancelScope()
    stop.cancels(late)  # given after the request: cancelled at once
    assert late.cancel_called


async def test_without_a_deadline_nothing_expires(autojump_clock: trio.testing.MockClock) -> None:
    stop = StopSignal()
    with trio.move_on_after(86400):
        await stop.wait()
    assert (stop.requested, stop.reason) == (False, None)


async def _request_after(stop: StopSignal, seconds: float) -> None:
    await trio.sleep(seconds)
    stop.request(StopReason.CANCEL)
