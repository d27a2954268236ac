"""Several server processes behind one port, connections handed to the least-loaded one (``distill serve --workers N``).

Why not uvicorn's own workers: they share one listening socket and each accepts whatever the kernel wakes it for,
draining the accept queue in one go. A burst of keep-alive connections then lands unevenly (9/23, 6/26, 1/31 of
32, docs/results.md 15) and stays so for the connections' lives; the worker holding most of them sets the tail.

Here the supervisor owns the listening socket and accepts every connection itself, then passes it (``SCM_RIGHTS``
over a Unix socket pair, one per worker) to the live worker with the fewest open connections. Each worker is a
uvicorn server with no listener of its own (:class:`ChannelServer`): it adopts the sockets it is handed and tells
the supervisor when one closes. The hop costs one ``accept`` and one ``sendmsg`` per connection, not per request.

Lifecycle: a worker that dies after it was ready is replaced; one that dies before it ever got ready stops the
whole server (a boot failure would only repeat). SIGTERM/SIGINT stop accepting, pass the signal to the workers
(each drains its in-flight requests) and exit 0; a worker whose supervisor is gone (killed) shuts itself down.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import uvicorn

log = logging.getLogger("serve.workers")

# What travels on a worker's channel, besides the passed sockets (supervisor -> worker: b"c" + one fd).
MSG_CONN = b"c"
MSG_READY = b"r"  # worker -> supervisor: started, taking connections
MSG_CLOSED = b"x"  # worker -> supervisor: one connection it was handed has closed


class WorkerBootError(RuntimeError):
    """A worker exited before it was ready: restarting it would fail the same way."""


def pick_worker(open_counts: Sequence[int], alive: Sequence[bool], start: int = 0) -> Optional[int]:
    """The live worker with the fewest open connections; ties go to the first at or after ``start``, so that a
    caller advancing ``start`` spreads short-lived connections round-robin. None when no worker is alive."""
    n = len(open_counts)
    best: Optional[int] = None
    for k in range(n):
        i = (start + k) % n
        if alive[i] and (best is None or open_counts[i] < open_counts[best]):
            best = i
    return best


@dataclass
class _Worker:
    """The supervisor's view of one worker slot: its process, its end of the channel and its connection count."""

    index: int
    process: Any = None
    channel: Optional[socket.socket] = None
    ready: bool = False
    sent: int = 0  # connections handed over
    closed: int = 0  # connections it reported closed

    @property
    def open(self) -> int:
        return self.sent - self.closed

    @property
    def alive(self) -> bool:
        return self.channel is not None


def worker_main(config_kwargs: dict[str, Any], channel: socket.socket) -> None:
    """A worker process: the app from ``DISTILL_SERVE_*`` (``serve.app:app_from_env``), served on ``channel``."""
    config = uvicorn.Config("serve.app:app_from_env", factory=True, **config_kwargs)
    ChannelServer(config, channel).run()


class ChannelServer(uvicorn.Server):
    """A uvicorn server without a listener: it serves the connected sockets its supervisor passes on ``channel``,
    and reports each one's close, so the supervisor can count what every worker holds."""

    def __init__(self, config: uvicorn.Config, channel: socket.socket) -> None:
        super().__init__(config)
        self.channel = channel

    async def startup(self, sockets: Optional[list[socket.socket]] = None) -> None:
        await super().startup(sockets=[])  # the lifespan (model, batcher) and no listening socket
        loop = asyncio.get_running_loop()
        base = self.config.http_protocol_class
        report = self._report_closed

        class Counted(base):  # type: ignore[misc, valid-type]
            def connection_lost(self, exc: Optional[Exception]) -> None:
                try:
                    super().connection_lost(exc)
                finally:
                    report()

        def protocol() -> asyncio.Protocol:
            return Counted(config=self.config, server_state=self.server_state, app_state=self.lifespan.state,
                           _loop=loop)

        self._protocol = protocol
        self.channel.setblocking(False)
        loop.add_reader(self.channel.fileno(), self._receive)
        self._send(MSG_READY)

    def _receive(self) -> None:
        """Adopt every socket waiting on the channel; an end of file means the supervisor is gone: shut down."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                msg, fds, _flags, _addr = socket.recv_fds(self.channel, 16, 8)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                msg, fds = b"", []
            if not msg and not fds:
                loop.remove_reader(self.channel.fileno())
                self.should_exit = True
                return
            for fd in fds:
                loop.create_task(self._adopt(socket.socket(fileno=fd)))

    async def _adopt(self, sock: socket.socket) -> None:
        try:
            await asyncio.get_running_loop().connect_accepted_socket(self._protocol, sock)
        except Exception:  # noqa: BLE001 - the client went away before it was adopted: count it closed
            sock.close()
            self._report_closed()

    def _report_closed(self) -> None:
        self._send(MSG_CLOSED)

    def _send(self, msg: bytes) -> None:
        try:
            self.channel.send(msg)
        except OSError:  # the supervisor is gone; _receive sees the end of file and shuts down
            pass

    async def shutdown(self, sockets: Optional[list[socket.socket]] = None) -> None:
        try:
            asyncio.get_running_loop().remove_reader(self.channel.fileno())
        except (ValueError, OSError):  # already removed, or the channel closed
            pass
        await super().shutdown(sockets=None)


class Supervisor:
    """Accepts on ``sock`` and hands every connection to the least-loaded of ``workers`` processes, each started
    as ``target(config_kwargs, channel)`` in a fresh interpreter (spawn: nothing of this process's threads or
    loaded libraries is forked). ``run()`` returns the exit code."""

    def __init__(self, sock: socket.socket, workers: int, config_kwargs: dict[str, Any],
                 target: Callable[[dict[str, Any], socket.socket], None] = worker_main,
                 stop_timeout_s: float = 40.0, on_worker_exit: Optional[Callable[[int], None]] = None,
                 backlog: int = 2048) -> None:
        self.sock = sock
        self.backlog = backlog
        self.config_kwargs = config_kwargs
        self.target = target
        self.stop_timeout_s = stop_timeout_s
        self.on_worker_exit = on_worker_exit  # gets the dead worker's pid (metrics clean-up)
        self.slots = [_Worker(i) for i in range(workers)]
        self._ctx = multiprocessing.get_context("spawn")
        self._next = 0  # round-robin start for ties
        self._stopping = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

    # -- lifecycle ------------------------------------------------------------------------------------------
    def run(self) -> int:
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        self.sock.listen(self.backlog)  # uvicorn's bind_socket() binds; listening was its create_server's job
        self.sock.setblocking(False)
        try:
            for w in self.slots:
                self._start(w)
            while not self._stopping:
                self._step(timeout=1.0)
            return 0
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
            self._stop_all()

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._stopping = True
        try:
            self._wake_w.send(b"s")
        except OSError:
            pass

    def _start(self, w: _Worker) -> None:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        w.process = self._ctx.Process(target=self.target, args=(self.config_kwargs, theirs), daemon=False,
                                      name=f"distill-serve-worker-{w.index}")
        w.process.start()
        theirs.close()  # the child has its copy; ours would hide the child's end of file from us
        mine.setblocking(False)
        w.channel, w.ready, w.sent, w.closed = mine, False, 0, 0

    def _step(self, timeout: float) -> None:
        """Wait for a connection, a worker's message or a worker's exit, and deal with each."""
        waitables: list[Any] = [self.sock, self._wake_r]
        waitables += [w.channel for w in self.slots if w.channel is not None]
        waitables += [w.process.sentinel for w in self.slots if w.process is not None]
        ready = multiprocessing.connection.wait(waitables, timeout)
        if self._wake_r in ready:
            try:
                self._wake_r.recv(64)
            except OSError:
                pass
        for w in self.slots:
            if w.channel is not None and w.channel in ready:
                self._read(w)
        for w in self.slots:
            if w.process is not None and w.process.sentinel in ready:
                self._reap(w)
        if self.sock in ready and not self._stopping:
            self._accept_all()

    def _read(self, w: _Worker) -> None:
        assert w.channel is not None
        while True:
            try:
                msg = w.channel.recv(16)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                msg = b""
            if not msg:  # the worker closed its end: it is exiting; _reap restarts or stops
                w.channel.close()
                w.channel = None
                return
            if msg == MSG_READY:
                w.ready = True
                log.info("server worker %d (pid %s) ready", w.index, getattr(w.process, "pid", "?"))
            elif msg == MSG_CLOSED:
                w.closed += 1

    def _reap(self, w: _Worker) -> None:
        w.process.join(timeout=0)
        if w.process.exitcode is None:
            return
        code, pid, was_ready = w.process.exitcode, w.process.pid, w.ready
        if w.channel is not None:
            self._read(w)  # a READY it sent just before dying still counts
            was_ready = was_ready or w.ready
            if w.channel is not None:
                w.channel.close()
                w.channel = None
        w.process = None
        if self.on_worker_exit is not None:
            self.on_worker_exit(pid)
        if self._stopping:
            return
        if not was_ready:
            raise WorkerBootError(f"server worker {w.index} exited with code {code} before it was ready")
        log.warning("server worker %d (pid %d) exited with code %s; starting a new one", w.index, pid, code)
        self._start(w)

    def _accept_all(self) -> None:
        while True:
            try:
                conn, _addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # out of fds, a reset in the queue: drop this one, keep serving
                log.warning("accept failed: %s", e)
                return
            self._dispatch(conn)

    def _dispatch(self, conn: socket.socket) -> None:
        """Hand ``conn`` to the least-loaded live worker (ready ones first); close it if none can take it."""
        try:
            skip: set[int] = set()  # workers whose channel is full this time
            while True:
                usable = [w.alive and w.index not in skip for w in self.slots]
                ready = [u and w.ready for u, w in zip(usable, self.slots)]
                i = pick_worker([w.open for w in self.slots], ready if any(ready) else usable, self._next)
                if i is None:
                    log.warning("no server worker could take a connection; it is closed")
                    return
                w = self.slots[i]
                try:
                    socket.send_fds(w.channel, [MSG_CONN], [conn.fileno()])  # type: ignore[arg-type]
                except (BlockingIOError, InterruptedError):
                    skip.add(i)
                    continue
                except OSError:  # the worker is gone; _reap restarts it
                    w.channel.close()  # type: ignore[union-attr]
                    w.channel = None
                    continue
                w.sent += 1
                self._next = (i + 1) % len(self.slots)
                return
        finally:
            conn.close()  # the worker holds its own copy now (or nobody could take it)

    def _stop_all(self) -> None:
        """Stop accepting, SIGTERM every worker (each drains), wait up to ``stop_timeout_s``, then SIGKILL."""
        self._stopping = True
        self.sock.close()
        procs = [w.process for w in self.slots if w.process is not None]
        for p in procs:
            if p.is_alive():
                os.kill(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout_s
        for p in procs:
            p.join(timeout=max(0.0, deadline - time.monotonic()))
        for p in procs:
            if p.is_alive():
                log.error("server worker pid %d did not stop within %.0f s; killing it", p.pid, self.stop_timeout_s)
                p.kill()
                p.join()
            if self.on_worker_exit is not None:
                self.on_worker_exit(p.pid)
        for w in self.slots:
            if w.channel is not None:
                w.channel.close()
                w.channel = None
            w.process = None
        self._wake_r.close()
        self._wake_w.close()
