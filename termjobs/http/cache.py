"""Listings and jobs answered again from their rendered JSON while the database is
unchanged.

A listing (``GET /v2/runs``, ``GET /v2/jobs``) reads a page and the count of every
match and renders each item: most of its cost, and the same answer every time while
nothing was written (a dashboard polling an idle server, a script following a run). A
single job (``GET /v2/jobs/{id}``, with its newest run) is a point read and a render:
about a fifth of the request's time on the event loop, and the same. The storage's
:meth:`~termjobs.storage.Storage.data_version` tells whether anything was committed
since, by this server or any other process, so an answer kept under the version read
*before* its query is never served once the data has moved on. A store that cannot
tell (PostgreSQL, where other servers of a cluster write) keeps nothing."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable

from quart import Response

from termjobs import wire
from termjobs.model import PAYLOAD_FIELDS, Run
from termjobs.storage import Storage

#: Answers kept, and the most text kept in all (full run pages carry output).
CACHED_ANSWERS = 32
CACHED_CHARS = 8_000_000
#: Finished runs whose JSON is kept (a summary is about 500 bytes), and the most
#: output (characters) a run rendered in full may carry to be kept.
RENDERED_RUNS = 5_000
RENDERED_PAYLOAD = 2_000


class ListingCache:
    """Rendered answers by request (path and query string), least recently used out."""

    def __init__(self, storage: Storage, *, answers: int = CACHED_ANSWERS, chars: int = CACHED_CHARS) -> None:
        self._storage = storage
        self._answers = answers
        self._chars = chars
        self._kept: OrderedDict[tuple[str, bytes], tuple[object, str]] = OrderedDict()
        self._kept_chars = 0

    async def answer(self, key: tuple[str, bytes], render: Callable[[], Awaitable[str]]) -> Response:
        """The answer kept for ``key`` if the data has not changed since; else the
        JSON text ``render()`` returns, kept for next time."""
        version = await self._storage.data_version()
        kept = self._kept.get(key)
        if version is not None and kept is not None and kept[0] == version:
            self._kept.move_to_end(key)
            return _json(kept[1])
        body = await render()
        if version is not None:
            self._keep(key, version, body)
        return _json(body)

    def _keep(self, key: tuple[str, bytes], version: object, body: str) -> None:
        old = self._kept.pop(key, None)
        if old is not None:
            self._kept_chars -= len(old[1])
        if len(body) > self._chars // 4:
            return  # one huge page would push out every other
        self._kept[key] = (version, body)
        self._kept_chars += len(body)
        while len(self._kept) > self._answers or self._kept_chars > self._chars:
            _, (_, dropped) = self._kept.popitem(last=False)
            self._kept_chars -= len(dropped)


class RenderedRuns:
    """Runs' JSON text, kept for runs in a final status: listings render the same
    finished runs request after request (about 25 µs a run, against 1-2 µs to find
    it here). Kept by the run's whole value, so any change to it, whoever made it, is
    rendered afresh; runs carrying more output than :data:`RENDERED_PAYLOAD` in full
    are not kept. The whole lot is dropped when full."""

    def __init__(self, size: int = RENDERED_RUNS) -> None:
        self._size = size
        self._kept: dict[tuple[Run, bool], str] = {}

    def text(self, run: Run, *, full: bool) -> str:
        """:func:`wire.compact` of :func:`wire.run_json`."""
        if not run.status.terminal or (full and _payload(run) > RENDERED_PAYLOAD):
            return wire.compact(wire.run_json(run, full=full))
        key = (run, full)
        try:
            text = self._kept.get(key)
        except TypeError:  # it holds a JSON object (a run's overrides): not hashable
            return wire.compact(wire.run_json(run, full=full))
        if text is None:
            if len(self._kept) >= self._size:
                self._kept.clear()
            text = self._kept[key] = wire.compact(wire.run_json(run, full=full))
        return text


def _payload(run: Run) -> int:
    return sum(len(value) for name in PAYLOAD_FIELDS if isinstance(value := getattr(run.output, name), str))


def _json(body: str) -> Response:
    return Response(body, content_type="application/json")
