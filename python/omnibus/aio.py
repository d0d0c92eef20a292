"""asyncio API: the same publishers and subscribers, awaitable.

::

    import omnibus.aio

    async with omnibus.aio.subscriber("mem://t", codec="json") as sub, \\
               omnibus.aio.publisher("mem://t", codec="json") as pub:
        await pub.publish_and_wait({"n": 1})
        msg = await sub.receive(timeout=5)
        async for msg in sub: ...

No thread waits per receive or request: the engine posts to an eventfd that
the event loop watches (loop.add_reader), so ``await sub.receive()``,
``async for`` and ``await pub.request()`` wake the loop directly, and any
number of requests may be in flight at once. Delivery results complete asyncio
futures through loop.call_soon_threadsafe. Waits that would block otherwise
(a full publish queue, flush, close, and receiving from a receiver that
fetches on the caller's thread, as Kafka's does) run on a worker thread owned
by the object and released by close(); the event loop never blocks. Opening
connects synchronously.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import itertools
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

from . import _core, publisher as _open_publisher, subscriber as _open_subscriber
from ._core import Delivery, Message, ResourceExhausted
from .codecs import CodecLike

class _Wakeup:
    """The eventfd (a _core.Notifier) an object's engine threads post to, watched by one event loop at a time."""

    def __init__(self, on_tokens: Any) -> None:
        self.notifier = _core.Notifier()
        self._on_tokens = on_tokens
        self._loop: asyncio.AbstractEventLoop | None = None

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is loop:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self.notifier.fd)
        loop.add_reader(self.notifier.fd, self._ready)
        self._loop = loop

    def _ready(self) -> None:
        self._on_tokens(self.notifier.drain())

    def close(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self.notifier.fd)
        self._loop = None
        self.notifier.close()


__all__ = ["Publisher", "Subscriber", "delivery_future", "publisher", "subscriber"]

# Waits on the worker thread run in short slices, so that close() and
# cancellation are noticed promptly.
_SLICE = 0.1


def delivery_future(delivery: Delivery, loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Future[None]:
    """An asyncio future resolved with the delivery's result (None or its exception)."""
    loop = loop or asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()

    def settle(d: Delivery) -> None:
        if fut.cancelled():
            return
        exc = d.exception(0)
        if exc is None:
            fut.set_result(None)
        else:
            fut.set_exception(exc)

    def done(d: Delivery) -> None:  # runs on an engine thread
        loop.call_soon_threadsafe(settle, d)

    delivery.add_done_callback(done)
    return fut


class Publisher:
    """Async wrapper of omnibus.Publisher; create with omnibus.aio.publisher()."""

    def __init__(self, sync: _core.Publisher) -> None:
        self.sync = sync
        # Several workers: a flush() must not queue behind a publish blocked on a full queue.
        self._worker = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="omnibus-aio-pub")
        self._wakeup = _Wakeup(self._replies_ready)
        self._tokens = itertools.count(1)
        # token -> (future, request) for each request awaiting its reply
        self._requests: dict[int, list[Any]] = {}
        self._to_send: list[tuple[Any, Any, Any, int]] = []  # requests of this loop iteration, not yet sent

    async def publish(
        self, value: Any, *, key: bytes | str | None = None, headers: Any = None, timestamp_ms: int | None = None
    ) -> asyncio.Future[None]:
        """Queue one message; returns a future of its delivery (await it, or not)."""
        try:
            d = self.sync.publish(value, key=key, headers=headers, timestamp_ms=timestamp_ms, block_timeout=0)
        except ResourceExhausted:
            # The queue is full: wait for room on the worker, not on the loop.
            d = await self._run(
                lambda: self.sync.publish(value, key=key, headers=headers, timestamp_ms=timestamp_ms)
            )
        return delivery_future(d)

    async def publish_and_wait(self, value: Any, **kwargs: Any) -> None:
        """Publish and wait for the broker's confirmation; raises the delivery error."""
        await (await self.publish(value, **kwargs))

    async def publish_many(
        self, values: Sequence[Any], *, keys: Sequence[Any] | None = None, headers: Sequence[Any] | None = None
    ) -> asyncio.Future[None]:
        """Queue a batch in one call; returns one future for the whole batch."""
        d = await self._run(lambda: self.sync.publish_many(values, keys=keys, headers=headers))
        return delivery_future(d)

    async def request(
        self,
        value: Any,
        *,
        key: bytes | str | None = None,
        headers: Any = None,
        timeout: float | None = 5.0,
    ) -> Message:
        """Send a request and await the first reply (see omnibus.Publisher.request).

        No thread waits for the reply: the engine wakes the event loop when it
        comes, so any number of requests may be in flight at once. Cancelling
        the awaiting task abandons the request; a later reply is dropped.
        """
        loop = asyncio.get_running_loop()
        self._wakeup.attach(loop)
        token = next(self._tokens)
        fut: asyncio.Future[Message] = loop.create_future()
        entry: list[Any] = [fut, None]  # the future, and the request once sent
        self._requests[token] = entry
        # Requests made in one loop iteration are sent together (pipelined: one
        # write for the batch on a network driver), at the end of the iteration.
        if not self._to_send:
            loop.call_soon(self._send_requests)
        self._to_send.append((value, key, headers, token))
        timer = None if timeout is None else loop.call_later(timeout, self._expire, entry, timeout)
        try:
            return await fut
        finally:
            if timer is not None:
                timer.cancel()
            del self._requests[token]
            if entry[1] is not None:
                entry[1].abandon()

    def _send_requests(self) -> None:
        batch = [item for item in self._to_send if item[3] in self._requests]  # not cancelled meanwhile
        self._to_send = []
        if not batch:
            return
        try:
            results = self.sync._request_start_many(batch, self._wakeup.notifier)
        except BaseException as exc:  # noqa: BLE001 - handed to every awaiting task
            for item in batch:
                _fail(self._requests[item[3]][0], exc)
            return
        for item, res in zip(batch, results):
            entry = self._requests[item[3]]
            if isinstance(res, BaseException):
                _fail(entry[0], res)
            else:
                entry[1] = res
                self._settle(entry)  # a reply may be in already (mem://), or the request failed at once

    @staticmethod
    def _settle(entry: list[Any]) -> None:
        fut, req = entry
        if fut.done() or req is None:
            return
        try:
            reply = req.poll()
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            fut.set_exception(exc)
            return
        if reply is not None:
            fut.set_result(reply)

    def _expire(self, entry: list[Any], timeout: float) -> None:
        self._settle(entry)  # a reply that came with the deadline still counts
        fut, req = entry
        if not fut.done():
            fut.set_exception(req.timeout_error(timeout) if req is not None else
                              _core.Timeout(f"no reply to the request on {self.sync.url} within {timeout} s"))

    def _replies_ready(self, tokens: list[int]) -> None:
        for token in tokens:
            entry = self._requests.get(token)
            if entry is not None:
                self._settle(entry)

    async def flush(self, timeout: float | None = None) -> bool:
        return bool(await self._run(lambda: self.sync.flush(timeout)))

    async def close(self, timeout: float | None = 30.0) -> None:
        try:
            await self._run(lambda: self.sync.close(timeout))
        finally:
            self._worker.shutdown(wait=True)
            # close() failed the requests still waiting (Closed): hand that on now.
            for entry in list(self._requests.values()):
                self._settle(entry)
            self._wakeup.close()

    def capabilities(self) -> dict[str, Any]:
        return dict(self.sync.capabilities())

    @property
    def connected(self) -> bool | None:
        """True while connected, False while reconnecting, None when the driver cannot tell."""
        return self.sync.connected

    async def _run(self, fn: Any) -> Any:
        return await asyncio.wrap_future(self._worker.submit(fn))

    async def __aenter__(self) -> Publisher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class Subscriber:
    """Async wrapper of omnibus.Subscriber; create with omnibus.aio.subscriber()."""

    def __init__(self, sync: _core.Subscriber) -> None:
        self.sync = sync
        # Only for receivers that fetch on the caller's thread (Kafka); made on first use.
        self._worker: concurrent.futures.ThreadPoolExecutor | None = None
        self._wakeup = _Wakeup(self._data_ready)
        self._notified = sync._on_data(self._wakeup.notifier, 0)
        # Receives waiting for data, woken together when the engine posts.
        self._waiters: set[asyncio.Future[None]] = set()
        # Messages fetched by the worker for a receive() that was cancelled
        # meanwhile; handed out first, so that none is lost.
        self._stash: collections.deque[Message] = collections.deque()

    async def receive_batch(self, max_messages: int = 1000, timeout: float | None = None) -> list[Message]:
        """Up to max_messages; waits up to timeout (None: forever) for the first; [] on timeout."""
        if not self._notified:
            return await self._receive_on_worker(max_messages, timeout)
        loop = asyncio.get_running_loop()
        self._wakeup.attach(loop)
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            # Messages a cancelled receive left behind are older: they go first.
            got = self._stash_first(self.sync.receive_batch(max_messages, 0), max_messages)
            if got:
                return got
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return []
            fut: asyncio.Future[None] = loop.create_future()
            self._waiters.add(fut)
            timer = None if remaining is None else loop.call_later(remaining, _wake, fut)
            try:
                await fut
            finally:
                self._waiters.discard(fut)
                if timer is not None:
                    timer.cancel()

    def _data_ready(self, tokens: list[int]) -> None:
        for fut in self._waiters:
            _wake(fut)

    async def _receive_on_worker(self, max_messages: int, timeout: float | None) -> list[Message]:
        loop = asyncio.get_running_loop()
        if self._worker is None:
            self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="omnibus-aio-sub")
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            got = self._stash_first(self.sync.receive_batch(max_messages, 0), max_messages)
            if got:
                return got
            remaining = _SLICE if deadline is None else min(_SLICE, max(0.0, deadline - loop.time()))
            cf = self._worker.submit(self.sync.receive_batch, max_messages, remaining)
            try:
                got = await asyncio.wrap_future(cf)
            except asyncio.CancelledError:
                cf.add_done_callback(self._keep)
                raise
            got = self._stash_first(got, max_messages)
            if got or (deadline is not None and loop.time() >= deadline):
                return got

    def _stash_first(self, got: list[Message], max_messages: int) -> list[Message]:
        if not self._stash:
            return list(got)
        self._stash.extend(got)
        return [self._stash.popleft() for _ in range(min(max_messages, len(self._stash)))]

    async def receive(self, timeout: float | None = None) -> Message:
        """Next message; raises omnibus.Timeout when none came within timeout seconds."""
        got = await self.receive_batch(1, timeout)
        if not got:
            raise _core.Timeout(f"no message on {self.sync.url} within {timeout} s")
        return got[0]

    def _keep(self, cf: concurrent.futures.Future[list[Message]]) -> None:
        if not cf.cancelled() and cf.exception() is None:
            self._stash.extend(cf.result())

    async def ack(self, messages: Message | Iterable[Message]) -> None:
        """Acknowledge; a no-op for messages already settled, as every message of an auto_ack subscriber is."""
        self.sync.ack(messages)

    async def nack(self, messages: Message | Iterable[Message]) -> None:
        """Redeliver. Raises omnibus.Unsupported where the protocol cannot, omnibus.InvalidArgument when the
        subscriber has auto_ack=True (its messages were acked on hand-over; use auto_ack=False)."""
        self.sync.nack(messages)

    async def close(self) -> None:
        worker = self._worker or concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="omnibus-aio-sub")
        try:
            await asyncio.wrap_future(worker.submit(self.sync.close))
        finally:
            worker.shutdown(wait=True)
            self._worker = None
            if self._notified:
                self.sync._on_data(None)
            self._data_ready([])  # waiting receives see Closed
            self._wakeup.close()
            self._stash.clear()

    def capabilities(self) -> dict[str, Any]:
        return dict(self.sync.capabilities())

    @property
    def connected(self) -> bool | None:
        """True while connected, False while reconnecting, None when the driver cannot tell."""
        return self.sync.connected

    def __aiter__(self) -> AsyncIterator[Message]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Message]:
        while True:
            try:
                yield await self.receive()
            except _core.Closed:
                return

    async def __aenter__(self) -> Subscriber:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _fail(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def publisher(url: str, *, codec: CodecLike = "raw", **options: Any) -> Publisher:
    """Like omnibus.publisher(), for asyncio."""
    return Publisher(_open_publisher(url, codec=codec, **options))


def subscriber(url: str, *, codec: CodecLike = "raw", **options: Any) -> Subscriber:
    """Like omnibus.subscriber(), for asyncio."""
    return Subscriber(_open_subscriber(url, codec=codec, **options))
