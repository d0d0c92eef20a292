"""omnibus.aio: the same API with async/await."""

from __future__ import annotations

import asyncio
import os
import threading
import uuid

import pytest

import omnibus
import omnibus.aio
from omnibus.testing import wait_until


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_round_trip_and_async_iteration() -> None:
    async def main() -> list[object]:
        async with omnibus.aio.subscriber("mem://aio-1", codec="json") as sub, \
                omnibus.aio.publisher("mem://aio-1", codec="json") as pub:
            await pub.publish_and_wait({"n": 0})
            fut = await pub.publish_many([{"n": 1}, {"n": 2}])
            await fut
            got = []
            async for msg in sub:
                got.append(msg.value)
                if len(got) == 3:
                    break
            return got

    assert run(main()) == [{"n": 0}, {"n": 1}, {"n": 2}]


def test_receive_waits_without_blocking_the_loop() -> None:
    async def main() -> tuple[bytes, int]:
        async with omnibus.aio.subscriber("mem://aio-2") as sub, omnibus.aio.publisher("mem://aio-2") as pub:
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0.01)

            tick = asyncio.create_task(ticker())
            waiting = asyncio.create_task(sub.receive(timeout=10))
            while ticks < 5:  # the loop keeps running while receive() waits
                await asyncio.sleep(0.01)
            await pub.publish_and_wait(b"late")
            msg = await waiting
            tick.cancel()
            return bytes(msg.payload), ticks

    payload, ticks = run(main())
    assert payload == b"late" and ticks >= 5


def test_receive_timeout() -> None:
    async def main() -> None:
        async with omnibus.aio.subscriber("mem://aio-3") as sub:
            with pytest.raises(omnibus.Timeout):
                await sub.receive(timeout=0.05)
            assert await sub.receive_batch(5, timeout=0.05) == []

    run(main())


def test_cancelled_receive_loses_nothing() -> None:
    async def main() -> list[bytes]:
        async with omnibus.aio.subscriber("mem://aio-4") as sub, omnibus.aio.publisher("mem://aio-4") as pub:
            waiting = asyncio.create_task(sub.receive())
            await asyncio.sleep(0.05)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            await pub.publish_and_wait(b"kept")
            return [bytes((await sub.receive(timeout=10)).payload)]

    assert run(main()) == [b"kept"]


def test_delivery_error_reaches_the_awaiting_task() -> None:
    async def main() -> None:
        async with omnibus.aio.publisher("mem://aio-5?max_message_bytes=10") as pub:
            with pytest.raises(omnibus.ResourceExhausted):
                await pub.publish_and_wait(b"x" * 11)

    run(main())


def test_full_queue_waits_off_the_loop() -> None:
    async def main() -> None:
        pub = omnibus.aio.publisher("mem://aio-6", max_pending=1, batch_linger_ms=60000)
        first = await pub.publish(b"1")
        second = asyncio.create_task(pub.publish(b"2"))  # waits for room on the worker thread
        await asyncio.sleep(0.05)
        assert not second.done()
        assert await pub.flush(timeout=10)
        await first
        await asyncio.wait_for(second, 10)
        await pub.close()

    run(main())


def test_request_is_answered_by_a_task_on_the_same_loop() -> None:
    # The responder runs on the loop that awaits the request: a request that
    # blocked the loop would never get its reply and would time out instead.
    async def main() -> list[object]:
        async with omnibus.aio.subscriber("mem://aio-rpc", codec="json") as sub, \
                omnibus.aio.publisher("mem://aio-rpc", codec="json") as pub:

            async def serve() -> None:
                async for msg in sub:
                    msg.reply({"sum": sum(msg.value)}, headers={"by": "task"})

            server = asyncio.create_task(serve())
            try:
                replies = await asyncio.gather(*(pub.request([i, 1], timeout=10) for i in range(5)))
            finally:
                server.cancel()
            assert all(r.header("by") == b"task" for r in replies)
            return [r.value for r in replies]

    assert run(main()) == [{"sum": i + 1} for i in range(5)]


def test_request_timeout_reaches_the_awaiting_task() -> None:
    async def main() -> None:
        async with omnibus.aio.subscriber("mem://aio-rpc-2"), omnibus.aio.publisher("mem://aio-rpc-2") as pub:
            with pytest.raises(omnibus.Timeout, match="mem://aio-rpc-2"):
                await pub.request(b"silence", timeout=0.2)

    run(main())


def test_nack_of_an_auto_acked_message_raises() -> None:
    """The asyncio API settles through the same messages: nack() of an auto-acked one is an error there too."""

    async def main() -> None:
        async with omnibus.aio.subscriber("mem://aio-autoack") as sub, \
                omnibus.aio.publisher("mem://aio-autoack") as pub:
            await pub.publish_and_wait(b"job")
            msg = await sub.receive(timeout=5)
            with pytest.raises(omnibus.InvalidArgument, match="auto_ack=False"):
                await sub.nack(msg)
            with pytest.raises(omnibus.InvalidArgument, match="auto_ack=False"):
                msg.nack()
            await sub.ack(msg)  # already acked on hand-over: a no-op
            msg.ack()
            await pub.publish_and_wait(b"sentinel")
            assert bytes((await sub.receive(timeout=5)).payload) == b"sentinel"

    run(main())


def _threads() -> tuple[int, int]:
    return threading.active_count(), len(os.listdir("/proc/self/task"))


def _no_more_threads(than: tuple[int, int]) -> bool:
    # At most as many: a thread an earlier test left behind may end meanwhile (seen in the full suite).
    now = _threads()
    return now[0] <= than[0] and now[1] <= than[1]


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _concurrent_requests(url: str, n: int) -> None:
    """n requests in flight at once, none answered until all were received: no thread may wait per request."""

    async def main() -> None:
        async with omnibus.aio.subscriber(url, codec="json") as sub, \
                omnibus.aio.publisher(url, codec="json") as pub:
            # The first request opens the publisher's reply subscription (its threads, if any).
            async def answer_one() -> None:
                msg = await sub.receive(timeout=10)
                msg.reply({"warm": True})

            warm = asyncio.create_task(answer_one())
            assert (await pub.request({"i": -1}, timeout=10)).value == {"warm": True}
            await warm
            before = _threads()

            async def serve() -> tuple[int, int]:
                held = []
                while len(held) < n:
                    held.extend(await sub.receive_batch(n - len(held), timeout=10))
                during = _threads()  # every request sent, none answered
                for msg in held:
                    msg.reply({"i": msg.value["i"], "by": "server"})
                return during

            server = asyncio.create_task(serve())
            replies = await asyncio.gather(*(pub.request({"i": i}, timeout=30) for i in range(n)))
            during = await server
            assert sorted(r.value["i"] for r in replies) == list(range(n))
            assert during[0] <= before[0] and during[1] <= before[1], \
                f"threads (threading, /proc/self/task) grew from {before} to {during}"
            assert _no_more_threads(before), f"threads grew from {before} to {_threads()}"

    # A first pass starts the native library's process-wide threads (cnats' timer and callback threads).
    run(main())
    fds, threads = _fds(), _threads()
    run(main())
    assert wait_until(lambda: _no_more_threads(threads)), \
        f"a thread outlived the publisher/subscriber: {threads} -> {_threads()} {threading.enumerate()}"
    assert wait_until(lambda: not _fds() - fds), "a file descriptor outlived the publisher/subscriber"


def test_1000_concurrent_requests_mem_without_threads() -> None:
    _concurrent_requests("mem://aio-many", 1000)


def test_1000_concurrent_requests_nats_without_threads(nats_url: str) -> None:
    _concurrent_requests(f"{nats_url.rstrip('/')}/aio-many-{uuid.uuid4().hex[:8]}", 1000)


def test_receive_and_iteration_use_no_thread() -> None:
    async def main() -> None:
        async with omnibus.aio.subscriber("mem://aio-nothread") as sub, \
                omnibus.aio.publisher("mem://aio-nothread") as pub:
            before = _threads()
            waiting = asyncio.create_task(sub.receive(timeout=10))
            await asyncio.sleep(0)  # the receive is now waiting on the loop's poller
            assert _no_more_threads(before)
            await pub.publish_and_wait(b"one")
            assert (await waiting).payload == b"one"
            for i in range(3):
                await pub.publish(str(i).encode())
            got = []
            async for msg in sub:
                got.append(msg.payload)
                if len(got) == 3:
                    break
            assert got == [b"0", b"1", b"2"]
            assert _no_more_threads(before)

    fds = _fds()
    run(main())
    assert wait_until(lambda: not _fds() - fds)


def test_close_ends_a_waiting_receive_and_request() -> None:
    async def main() -> None:
        sub = omnibus.aio.subscriber("mem://aio-close")
        responder = omnibus.aio.subscriber("mem://aio-close-rpc")  # takes the request, never answers
        pub = omnibus.aio.publisher("mem://aio-close-rpc")
        receiving = asyncio.create_task(sub.receive(timeout=30))
        requesting = asyncio.create_task(pub.request(b"q", timeout=30))
        await asyncio.sleep(0.05)
        await pub.close()
        with pytest.raises(omnibus.Closed):
            await asyncio.wait_for(requesting, 10)
        await sub.close()
        with pytest.raises(omnibus.Closed):
            await asyncio.wait_for(receiving, 10)
        await responder.close()

    run(main())


def test_cancelled_request_drops_its_late_reply() -> None:
    async def main() -> None:
        async with omnibus.aio.subscriber("mem://aio-cancel", codec="json") as sub, \
                omnibus.aio.publisher("mem://aio-cancel", codec="json") as pub:
            task = asyncio.create_task(pub.request({"n": 1}, timeout=30))
            msg = await sub.receive(timeout=10)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            msg.reply({"late": True})  # dropped: nobody waits for it
            answer = asyncio.create_task(pub.request({"n": 2}, timeout=10))
            (await sub.receive(timeout=10)).reply({"n": 2})
            assert (await answer).value == {"n": 2}

    run(main())
