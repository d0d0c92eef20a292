"""omnibus.aio: the same API with async/await."""

from __future__ import annotations

import asyncio

import pytest

import omnibus
import omnibus.aio


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
