"""Our serving layer around hypercorn: every connection is contained and bounded.

hypercorn supplies the HTTP/1.1, HTTP/2 and websocket protocol machines; this module
owns the sockets. It replaces hypercorn's trio ``TCPServer`` and ``worker_serve``
because, under quart-trio, three things go wrong there:

* The app's task sends the response, and quart-trio cancels that task's scope as soon
  as the response is out. hypercorn closes a connection (``Connection: close``,
  HTTP/1.0, a request body that never arrived) and arms the keep-alive timer from that
  same task, so both were cancelled half-way: such connections stayed open forever and
  a body arriving after the response stalled the connection. Here the protocol's side
  effects (write, close, arm the idle timer) are shielded, with a write deadline so a
  client that never reads cannot pin a task.
* Closing the socket (``send_eof``) raced with a send of another task
  (``trio.BusyResourceError``); the error escaped the connection and ended the whole
  server. Here every write, ``send_eof`` included, holds the connection's send lock,
  and any error inside one connection is logged once with the peer address and ends
  that connection only.
* Nothing bounded the number of connections, so idle clients could use up the
  process's file descriptors. Here a connection over ``max_connections`` is answered
  ``503`` and closed at once.
"""

from __future__ import annotations

import contextlib
import logging
import resource
from collections.abc import Awaitable, Callable
from functools import partial
from math import inf
from typing import Any

import h11
import trio
from hypercorn.config import Config
from hypercorn.events import Closed, Event, RawData, Updated
from hypercorn.protocol import ProtocolWrapper
from hypercorn.protocol.events import Event as StreamEvent
from hypercorn.protocol.events import Response
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.task_group import TaskGroup
from hypercorn.trio.tcp_server import MAX_RECV
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import AppWrapper, ConnectionState, LifespanState
from hypercorn.utils import parse_socket_addr, repr_socket_addr, wrap_app
from quart_trio import QuartTrio

from termjobs.config import HttpLimits

logger = logging.getLogger(__name__)

#: File descriptors kept free for the database, run pipes and log files when the
#: connection cap is derived from the process's limit.
FD_RESERVE = 128
_BUSY_BODY = b'{"error":{"message":"too many open connections; retry shortly","type":"unavailable_error"}}\n'
_BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY)
)


def raise_fd_limit() -> int:
    """Raise the soft open-files limit to the hard one; the resulting soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def connection_cap(requested: int, fd_limit: int) -> int:
    """``requested``, lowered so the connections cannot use up the descriptors."""
    return max(1, min(requested, fd_limit - FD_RESERVE))


class _Connection:
    """One client connection: hypercorn's protocol machine on a trio socket stream.

    Shaped after hypercorn's trio ``TCPServer`` (same protocol calls), with the fixes
    described in the module docstring.
    """

    def __init__(
        self,
        app: AppWrapper,
        config: Config,
        context: WorkerContext,
        state: LifespanState,
        limits: HttpLimits,
        stream: trio.SocketStream,
    ) -> None:
        self._app, self._config, self._context, self._state = app, config, context, state
        self._limits = limits
        self._stream = stream
        self._send_lock = trio.Lock()
        # The keep-alive timer: one task for the connection's life whose deadline each
        # request moves (hypercorn starts a timer task after every response).
        self._idle_scope = trio.CancelScope(deadline=inf)
        self._idle = True
        self._stopping = False
        self._read_done = False
        self._closed = False
        self._protocol: _ProtocolWrapper
        self.peer = "?"

    async def run(self) -> None:
        """Serve the connection until either side closes it; never raises but
        ``Cancelled``."""
        try:
            socket = self._stream.socket
            self.peer = repr_socket_addr(socket.family, socket.getpeername())
            await self._serve(
                parse_socket_addr(socket.family, socket.getpeername()),
                parse_socket_addr(socket.family, socket.getsockname()),
            )
        except OSError:
            pass  # the peer went away (reset, broken pipe)
        except trio.Cancelled:
            raise
        except BaseExceptionGroup as group:
            cancelled, errors = group.split(trio.Cancelled)
            if errors is not None:
                self._log_error(errors)
            if cancelled is not None:
                raise cancelled from None
        except Exception as exc:
            self._log_error(exc)
        finally:
            with trio.CancelScope(shield=True):
                await self._close()

    def _log_error(self, exc: BaseException) -> None:
        if _only(exc, (OSError, trio.BrokenResourceError, trio.ClosedResourceError)):
            return  # the peer went away
        if _only(exc, (h11.ProtocolError,)):
            logger.info("connection from %s closed: it broke the HTTP protocol (%s)", self.peer, _first(exc))
            return
        logger.error("connection from %s ended by an error; the server carries on", self.peer, exc_info=exc)

    async def _serve(self, client: tuple[str, int] | None, server: tuple[str, int] | None) -> None:
        async with TaskGroup() as task_group:
            self._protocol = _ProtocolWrapper(
                self._app,
                self._config,
                self._context,
                task_group,
                ConnectionState(self._state),
                False,
                client,
                server,
                self._protocol_send,
                "http/1.1",
            )
            await self._protocol.initiate()
            self._set_idle(True)
            task_group.spawn(self._idle_watch)
            await self._read_data()
            # The client is gone: no timer to wait for (the socket is closed once a
            # response still being written is out, when this connection's tasks end).
            self._read_done = True
            self._idle_scope.cancel()

    async def _protocol_send(self, event: Event) -> None:
        # Called from the app's task too, which quart-trio cancels once the response is
        # out: shielded so a close or the keep-alive timer is never cancelled half-way,
        # and bounded so a client that never reads cannot hold the task.
        if isinstance(event, Updated):
            self._set_idle(event.idle)
            return
        if isinstance(event, RawData) and not event.data:
            return  # h11 ends a response of known length with no bytes: nothing to send
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + self._limits.write_timeout
            if isinstance(event, RawData):
                if not await self._write(event.data):
                    await self._protocol.handle(Closed())
            elif isinstance(event, Closed):
                await self._close()
                await self._protocol.handle(Closed())
        if scope.cancelled_caught:
            logger.info("connection from %s: the client did not take the response in time", self.peer)
            await self._close()

    async def _write(self, data: bytes) -> bool:
        async with self._send_lock:
            if self._closed:
                return False
            try:
                await self._stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return False
        return True

    async def _read_data(self) -> None:
        while True:
            try:
                with trio.fail_after(self._read_timeout()):
                    data = await self._stream.receive_some(MAX_RECV)
            except (trio.ClosedResourceError, trio.BrokenResourceError, trio.TooSlowError):
                break
            await self._protocol.handle(RawData(bytes(data)))
            if data == b"":
                break
        await self._protocol.handle(Closed())

    def _read_timeout(self) -> float:
        """While a request body arrives, reads are bounded; otherwise the keep-alive
        timer decides (idle connections, slow request heads) and websockets may idle."""
        protocol = self._protocol.protocol
        if (
            isinstance(protocol, H11Protocol)
            and isinstance(protocol.connection, h11.Connection)
            and protocol.connection.their_state is h11.SEND_BODY
        ):
            return self._limits.body_timeout
        return inf

    async def _close(self) -> None:
        """Close the socket once; waits for a write in progress (the send lock)."""
        if self._closed:
            return
        self._closed = True
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + self._limits.write_timeout
            async with self._send_lock:
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    await self._stream.send_eof()
        await self._stream.aclose()

    def _set_idle(self, idle: bool) -> None:
        """Between requests the connection may stay open for the keep-alive timeout
        (not at all once the server stops); while a request is served, for ever."""
        self._idle = idle
        if not idle:
            self._idle_scope.deadline = inf
        elif self._stopping:
            self._idle_scope.deadline = -inf
        else:
            self._idle_scope.deadline = trio.current_time() + self._limits.keep_alive_timeout

    async def _idle_watch(self) -> None:
        """Close the connection when it has been idle too long, or once it is idle
        after the server started stopping."""
        with self._idle_scope:
            await self._context.terminated.wait()
            self._stopping = True
            if not self._idle:
                await trio.sleep_forever()  # until the response is out: _set_idle(True)
        if self._read_done:
            return
        with trio.CancelScope(shield=True):
            await self._protocol.handle(Closed())
            await self._close()


class _H11Protocol(H11Protocol):
    """hypercorn's HTTP/1.1 machine, minus two traps:

    * an upgrade to websocket whose request carries a body cannot be switched cleanly
      (h11 waits for the body while the websocket side answers), so such a request is
      served as plain HTTP (a 400);
    * h11 suggests ``501`` for a request it cannot parse because of a feature it lacks
      (``Transfer-Encoding: gzip``); a request we cannot read is the client's problem,
      and clients never get a 5xx for their input, so it is a ``400``.

    And the head of a final response waits for what follows it (its body, its end), so
    that a small response leaves in one write instead of two.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deliver = self.send
        self.send = self._send_coalesced
        self._holding = False
        self._head: bytes | None = None

    async def stream_send(self, event: StreamEvent) -> None:
        self._holding = isinstance(event, Response) and event.status_code >= 200
        try:
            await super().stream_send(event)
        finally:
            self._holding = False

    async def _send_coalesced(self, event: Event) -> None:
        if self._holding and isinstance(event, RawData):
            self._head = event.data
            return
        if self._head is not None:
            head, self._head = self._head, None
            if isinstance(event, RawData):
                event = RawData(data=head + event.data)
            else:
                await self._deliver(RawData(data=head))
        await self._deliver(event)

    async def _send_error_response(self, status_code: int) -> None:
        await super()._send_error_response(status_code if status_code < 500 else 400)

    async def _create_stream(self, request: h11.Request) -> None:
        names = {name.lower() for name, _ in request.headers}
        if b"upgrade" in names and names & {b"content-length", b"transfer-encoding"}:
            request = h11.Request(
                method=request.method,
                target=request.target,
                headers=[(name, value) for name, value in request.headers if name.lower() != b"upgrade"],
                http_version=request.http_version,
            )
        await super()._create_stream(request)


class _ProtocolWrapper(ProtocolWrapper):
    """hypercorn's protocol switch, with :class:`_H11Protocol` for HTTP/1.1."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if isinstance(self.protocol, H11Protocol):
            self.protocol = _H11Protocol(
                self.app,
                self.config,
                self.context,
                self.task_group,
                self.state,
                self.ssl,
                self.client,
                self.server,
                self.send,
            )


def _only(exc: BaseException, kinds: tuple[type[BaseException], ...]) -> bool:
    """Whether ``exc`` (or every exception of a group) is one of ``kinds``."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_only(inner, kinds) for inner in exc.exceptions)
    return isinstance(exc, kinds)


def _first(exc: BaseException) -> BaseException:
    return _first(exc.exceptions[0]) if isinstance(exc, BaseExceptionGroup) else exc


class _Acceptor:
    """Counts connections and turns away those over the cap."""

    def __init__(self, limits: HttpLimits, handler: Callable[[trio.SocketStream], Awaitable[None]]):
        self._limits = limits
        self._handler = handler
        self.open = 0
        self.refused = 0

    async def __call__(self, stream: trio.SocketStream) -> None:
        if self.open >= self._limits.max_connections:
            self.refused += 1
            if self.refused == 1 or self.refused % 1000 == 0:
                logger.warning(
                    "%d connection(s) refused with 503: %d open (--max-connections)",
                    self.refused,
                    self.open,
                )
            await _turn_away(stream)
            return
        self.open += 1
        try:
            await self._handler(stream)
        finally:
            self.open -= 1


async def _turn_away(stream: trio.SocketStream) -> None:
    """Answer 503 and close without reading the request (bounded to one second)."""
    with trio.move_on_after(1.0):
        try:
            await stream.send_all(_BUSY_RESPONSE)
            await stream.send_eof()
            # Read what the client sent, so closing does not reset the connection
            # before the client has read the answer.
            while await stream.receive_some(MAX_RECV):
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
    await stream.aclose()


async def serve(
    app: QuartTrio,
    config: Config,
    limits: HttpLimits,
    *,
    shutdown_trigger: Callable[[], Awaitable[None]],
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``config.bind`` until ``shutdown_trigger`` returns; reports the
    bound URLs. On shutdown, in-flight requests get ``config.graceful_timeout``."""
    wrapped = wrap_app(app, config.wsgi_max_body_size, "asgi")
    lifespan_state: LifespanState = {}
    lifespan = Lifespan(wrapped, config, lifespan_state)
    context = WorkerContext(None)
    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        async with trio.open_nursery() as connections:
            listeners, urls = _listen(config)
            acceptor = _Acceptor(
                limits,
                lambda stream: _Connection(wrapped, config, context, lifespan_state, limits, stream).run(),
            )
            task_status.started(urls)
            try:
                async with trio.open_nursery() as accepting:
                    accepting.start_soon(
                        partial(trio.serve_listeners, acceptor, listeners, handler_nursery=connections)
                    )
                    await shutdown_trigger()
                    accepting.cancel_scope.cancel()
            finally:
                await context.terminated.set()  # idle keep-alive connections close now
                connections.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()


def _listen(config: Config) -> tuple[list[trio.SocketListener], list[str]]:
    sockets = config.create_sockets()
    listeners: list[trio.SocketListener] = []
    urls: list[str] = []
    for sock in sockets.insecure_sockets:
        sock.listen(config.backlog)
        listeners.append(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
        urls.append(f"http://{repr_socket_addr(sock.family, sock.getsockname())}")
    return listeners, urls


__all__ = ["connection_cap", "raise_fd_limit", "serve"]
