"""Drivers written in Python (omnibus.register_driver): the engine around them, their errors, and what a
driver that raises or blocks can and cannot do to the engine. The redis:// driver is one too: it runs
the conformance suite (conftest.TARGETS) and tests/test_redis.py."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any, Optional

import pytest

import omnibus
from omnibus import Option, Received, _core
from omnibus.testing import wait_until

CAPS = {"delivery_guarantee": "at-least-once", "keys": True, "headers": True, "nack": True}


class ToySender:
    """Appends each batch to its topic's subscriber queues; how it fails is set per test."""

    def __init__(self, driver: ToyDriver, topic: str) -> None:
        self.driver, self.topic = driver, topic
        self.batches: list[int] = []

    def capabilities(self) -> dict[str, Any]:
        return CAPS

    @property
    def connected(self) -> Optional[bool]:
        return self.driver.connected

    def send_batch(self, messages: list[tuple[bytes, Optional[bytes], list[tuple[str, bytes]], int]]) -> Any:
        self.driver.calls.append(("send_batch", threading.get_ident()))
        if self.driver.block is not None:
            self.driver.blocked.set()
            self.driver.block.wait()
        if self.driver.send_error is not None:
            raise self.driver.send_error
        self.batches.append(len(messages))
        results: list[Any] = []
        for payload, key, headers, ts in messages:
            if payload == b"refuse":
                results.append(omnibus.ResourceExhausted("the toy refuses 'refuse'"))
                continue
            for q in self.driver.queues.get(self.topic, []):
                q.put((payload, key, headers, ts))
            results.append(None)
        return self.driver.send_result if self.driver.send_result is not None else results

    def close(self) -> None:
        self.driver.closed.append("sender")


class ToyReceiver:
    def __init__(self, driver: ToyDriver, topic: str) -> None:
        self.driver, self.topic = driver, topic
        self.q: queue.Queue[Any] = queue.Queue()
        driver.queues.setdefault(topic, []).append(self.q)
        self.next_id = 0
        self.held: dict[str, Any] = {}
        self.acked: list[str] = []
        self.redeliver: list[Received] = []

    def capabilities(self) -> dict[str, Any]:
        return CAPS

    @property
    def connected(self) -> Optional[bool]:
        return self.driver.connected

    def receive_batch(self, max_messages: int, timeout: float) -> list[Received]:
        if self.driver.receive_error is not None:
            raise self.driver.receive_error
        if self.driver.block is not None:
            self.driver.blocked.set()
            self.driver.block.wait()
        out, self.redeliver = self.redeliver[:max_messages], self.redeliver[max_messages:]
        try:
            while len(out) < max_messages:
                payload, key, headers, ts = self.q.get(timeout=timeout if not out else 0)
                self.next_id += 1
                ack_id = f"id-{self.next_id}"  # any hashable: the engine hands it back to ack()/nack()
                out.append(Received(ack_id, payload, key, headers, ts, 1, self.topic))
                self.held[ack_id] = out[-1]
        except queue.Empty:
            pass
        return out

    def ack(self, ids: list[str]) -> None:
        self.acked += ids

    def nack(self, ids: list[str]) -> None:
        for i in ids:
            m = self.held[i]
            self.redeliver.append(m._replace(delivery_attempt=m.delivery_attempt + 1))

    def close(self) -> None:
        self.driver.queues[self.topic].remove(self.q)
        self.driver.closed.append("receiver")


class ToyDriver:
    description = "an in-process toy for the tests"
    sender_options = [Option("flavour", "choice", "plain", "a declared option", ("plain", "spicy"))]
    receiver_options = [Option("depth", "int", "3", "another one", min=1, max=10)]

    def __init__(self) -> None:
        self.queues: dict[str, list[queue.Queue[Any]]] = {}
        self.opened: list[dict[str, Any]] = []
        self.calls: list[tuple[str, int]] = []
        self.closed: list[str] = []
        self.send_error: Optional[BaseException] = None
        self.send_result: Any = None
        self.receive_error: Optional[BaseException] = None
        self.block: Optional[threading.Event] = None
        self.blocked = threading.Event()
        self.connected: Optional[bool] = True

    def open_sender(self, url: dict[str, Any], options: dict[str, Any]) -> ToySender:
        self.opened.append({"url": url, "options": options})
        return ToySender(self, url["path"])

    def open_receiver(self, url: dict[str, Any], options: dict[str, Any], settings: dict[str, Any]) -> ToyReceiver:
        self.opened.append({"url": url, "options": options, "settings": settings})
        return ToyReceiver(self, url["path"])


@pytest.fixture
def toy() -> Iterator[ToyDriver]:
    driver = ToyDriver()
    omnibus.register_driver("toy", driver)
    try:
        yield driver
    finally:
        if driver.block is not None:
            driver.block.set()
        omnibus.unregister_driver("toy")


def test_round_trip_through_a_python_driver(toy: ToyDriver) -> None:
    with omnibus.subscriber("toy://h/orders?depth=5", codec="json", auto_ack=False) as sub, \
         omnibus.publisher("toy://h/orders?flavour=spicy", codec="json", batch_messages=100) as pub:
        pub.publish_many([{"n": i} for i in range(250)], keys=[b"k"] * 250,
                         headers=[{"h": b"v"}] * 250).result(timeout=10)
        got = [m for _ in range(3) for m in sub.receive_batch(250, timeout=5)]
        while len(got) < 250:
            got += sub.receive_batch(250, timeout=5)
        assert [m.value["n"] for m in got] == list(range(250))
        assert got[0].key == b"k" and got[0].headers == [("h", b"v")] and got[0].topic == "orders"
        assert pub.connected is True and sub.connected is True
        got[0].nack()
        again = sub.receive(timeout=5)
        assert again.value == {"n": 0} and again.delivery_attempt == 2
        sub.ack(got[1:] + [again])
    receiver = toy.opened[0]
    assert receiver["options"] == {"depth": 5} and receiver["settings"] == {"manual_ack": True}
    assert toy.opened[1]["options"] == {"flavour": "spicy"}
    assert toy.opened[1]["url"]["hosts"] == [("h", 0)]
    # One call per batch, never per message: 250 messages in batches of at most 100.
    assert sum(1 for name, _ in toy.calls if name == "send_batch") <= 3
    assert sorted(toy.closed) == ["receiver", "sender"]


def test_declared_options_are_validated_and_listed(toy: ToyDriver) -> None:
    with pytest.raises(omnibus.InvalidArgument, match="flavour"):
        omnibus.publisher("toy://h/t?flavour=sweet")
    with pytest.raises(omnibus.InvalidArgument, match="depth"):
        omnibus.subscriber("toy://h/t?depth=11")
    with pytest.raises(omnibus.InvalidArgument, match="flavour"):
        omnibus.publisher("toy://h/t", colour="red")
    row = next(d for d in omnibus.drivers() if d["scheme"] == "toy")
    assert row["description"] == ToyDriver.description
    assert any(o["name"] == "flavour" and o["choices"] == ["plain", "spicy"] for o in row["publisher_options"])


def test_the_cli_lists_python_drivers_beside_the_built_in_ones(toy: ToyDriver, capsys: pytest.CaptureFixture[str]) -> None:
    from omnibus.cli import main

    assert main(["drivers"]) == 0
    out = capsys.readouterr().out
    assert "toy://  an in-process toy for the tests" in out and "mem://" in out
    assert "redis://" in out  # omnibus' own Python driver, from its entry point


def test_redis_is_registered_from_the_entry_point_group() -> None:
    from importlib.metadata import entry_points

    from omnibus.redis_streams import RedisStreamsDriver

    names = {ep.name for ep in entry_points(group="omnibus.drivers")}
    assert "redis" in names
    assert isinstance(_core.python_driver("redis"), RedisStreamsDriver)
    assert _core.python_driver("mem") is None


def test_a_driver_missing_a_package_is_listed_as_unavailable(toy: ToyDriver,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A driver's missing() puts its scheme in unavailable_drivers() (the comparison leaves such a
    protocol out with that reason instead of failing every run), and only while it says so."""
    reason = "toy:// needs the toy package (pip install toy)"
    why: list[str | None] = [reason]
    toy.missing = lambda: why[0]  # type: ignore[attr-defined]
    omnibus.register_driver("toy", toy, replace=True)  # missing() is read at registration
    assert omnibus.unavailable_drivers()["toy"] == reason
    why[0] = None
    assert "toy" not in omnibus.unavailable_drivers()
    why[0] = reason
    omnibus.unregister_driver("toy")
    assert "toy" not in omnibus.unavailable_drivers()
    omnibus.register_driver("toy", toy)
    # redis:// says so when redis-py is not importable.
    from omnibus import redis_streams

    monkeypatch.setattr(redis_streams.importlib.util, "find_spec", lambda name: None)
    assert "pip install" in omnibus.unavailable_drivers()["redis"]
    from omnibus import bench

    assert [t.name for t in bench.default_targets({"redis": "redis://127.0.0.1:1"})] == ["mem"]


def test_registration_errors_name_what_is_wrong() -> None:
    with pytest.raises(omnibus.InvalidArgument, match="built-in"):
        omnibus.register_driver("mem", ToyDriver(), replace=True)
    with pytest.raises(omnibus.InvalidArgument, match="already registered"):
        omnibus.register_driver("redis", ToyDriver())
    with pytest.raises(TypeError, match="open_sender"):
        omnibus.register_driver("nope", object())
    bad = ToyDriver()
    bad.sender_options = [Option("x", "number", "1", "")]  # type: ignore[misc]
    with pytest.raises(omnibus.InvalidArgument, match="number.*bool, int, float, str, choice"):
        omnibus.register_driver("nope", bad)
    with pytest.raises(omnibus.InvalidArgument, match="lower case"):
        omnibus.register_driver("Toy", ToyDriver())
    assert not omnibus.unregister_driver("never-registered")
    with pytest.raises(omnibus.InvalidArgument, match="built-in"):
        omnibus.unregister_driver("mem")


def test_an_omnibus_error_keeps_its_class(toy: ToyDriver) -> None:
    err = omnibus.Unavailable("the toy broker is away")
    err.native_code = 42  # type: ignore[attr-defined]
    toy.send_error = err
    # delivery_timeout_ms=1: fail at once instead of sending again while the broker is away.
    with omnibus.publisher("toy://h/t?delivery_timeout_ms=1") as pub:
        with pytest.raises(omnibus.Unavailable, match="the toy broker is away") as info:
            pub.publish(b"x").result(timeout=10)
        assert info.value.retryable and info.value.native_code == 42
        toy.send_error = None
        pub.publish(b"x").result(timeout=10)  # the next batch goes through


def test_a_message_is_sent_again_while_the_broker_is_away(toy: ToyDriver) -> None:
    toy.send_error = omnibus.Unavailable("the toy broker is away")
    with omnibus.subscriber("toy://h/t") as sub, omnibus.publisher("toy://h/t") as pub:
        delivery = pub.publish_many([b"a", b"b"])
        assert wait_until(lambda: pub.stats()["messages_resent"] >= 4, timeout=30)
        assert not delivery.done()  # still the publisher's, not failed
        toy.send_error = None
        delivery.result(timeout=30)
        assert sorted(bytes(m.payload) for m in sub.receive_batch(10, timeout=5)) == [b"a", b"b"]
        assert pub.stats()["messages_failed"] == 0


def test_any_other_exception_is_internal_naming_the_driver_with_its_traceback(toy: ToyDriver) -> None:
    toy.send_error = KeyError("no such thing")
    with omnibus.publisher("toy://h/t") as pub:
        with pytest.raises(omnibus.InternalError) as info:
            pub.publish(b"x").result(timeout=10)
    text = str(info.value)
    assert "toy:// driver's send_batch (Python) raised KeyError" in text
    assert "Traceback" in text and "in send_batch" in text  # the frame that raised


def test_per_message_errors_fail_those_messages_alone(toy: ToyDriver) -> None:
    with omnibus.subscriber("toy://h/t") as sub, omnibus.publisher("toy://h/t") as pub:
        with pytest.raises(omnibus.ResourceExhausted) as info:
            pub.publish_many([b"a", b"refuse", b"c"]).result(timeout=10)
        assert [i for i, _ in info.value.failures] == [1]
        assert sorted(bytes(m.payload) for m in sub.receive_batch(10, timeout=5)) == [b"a", b"c"]


@pytest.mark.parametrize("result", [42, [None]], ids=["not-a-list", "wrong-length"])
def test_a_malformed_result_fails_the_batch_saying_why(toy: ToyDriver, result: Any) -> None:
    toy.send_result = result
    with omnibus.publisher("toy://h/t") as pub:
        with pytest.raises(omnibus.InternalError, match="send_batch"):
            pub.publish_many([b"a", b"b"]).result(timeout=10)


def test_a_receiver_that_raises_fails_the_subscriber_not_the_engine(toy: ToyDriver) -> None:
    toy.receive_error = ZeroDivisionError("boom")
    with omnibus.subscriber("toy://h/t") as sub:
        with pytest.raises(omnibus.InternalError, match="receive_batch.*ZeroDivisionError: boom"):
            sub.receive(timeout=10)
    toy.receive_error = None
    with omnibus.subscriber("toy://h/t") as sub, omnibus.publisher("toy://h/t") as pub:
        pub.publish(b"still works").result(timeout=10)
        assert bytes(sub.receive(timeout=10).payload) == b"still works"


def test_a_receiver_that_is_unavailable_is_waited_out(toy: ToyDriver) -> None:
    with omnibus.subscriber("toy://h/t") as sub, omnibus.publisher("toy://h/t") as pub:
        toy.connected = False
        toy.receive_error = omnibus.Unavailable("away for a while")
        assert sub.receive_batch(1, timeout=0.3) == []  # no error: the subscriber keeps polling
        assert sub.connected is False
        toy.receive_error, toy.connected = None, True
        pub.publish(b"back").result(timeout=10)
        assert bytes(sub.receive(timeout=10).payload) == b"back"
        assert sub.connected is True


def test_a_blocked_send_batch_holds_up_its_publisher_only(toy: ToyDriver) -> None:
    """The GIL is free while the driver waits; publish, flush and the queue bound keep their timeouts."""
    toy.block = threading.Event()
    ticks = 0

    def tick() -> None:
        nonlocal ticks
        while not toy.block.is_set():  # type: ignore[union-attr]
            ticks += 1
            time.sleep(0.001)

    ticker = threading.Thread(target=tick)
    ticker.start()
    try:
        pub = omnibus.publisher("toy://h/t", max_pending=10, block_timeout_ms=200, batch_messages=5)
        first = pub.publish_many([b"x"] * 5)
        assert toy.blocked.wait(timeout=10)
        before = ticks
        assert wait_until(lambda: ticks > before + 10, timeout=10), "another Python thread did not run"
        assert pub.flush(timeout=0.2) is False
        pub.publish_many([b"y"] * 5)  # fills the queue to max_pending
        with pytest.raises(omnibus.ResourceExhausted, match="max_pending=10"):
            pub.publish(b"z")  # waits block_timeout_ms, then says so
        with omnibus.publisher("mem://elsewhere") as other:  # the rest of the engine is not held up
            other.publish(b"ok").result(timeout=10)
        assert not first.done()
    finally:
        toy.block.set()
        ticker.join()
    first.result(timeout=10)
    pub.close(timeout=10)


def test_a_blocked_receive_batch_holds_up_its_subscriber_only(toy: ToyDriver) -> None:
    toy.block = threading.Event()
    sub = omnibus.subscriber("toy://h/t")
    try:
        assert toy.blocked.wait(timeout=10)
        with pytest.raises(omnibus.Timeout):
            sub.receive(timeout=0.2)
        with omnibus.subscriber("mem://t2") as other, omnibus.publisher("mem://t2") as pub:
            pub.publish(b"ok").result(timeout=10)
            assert bytes(other.receive(timeout=10).payload) == b"ok"
    finally:
        toy.block.set()
        sub.close()


EXIT_WITHOUT_CLOSE = r"""
import queue, omnibus
from omnibus import Received

class Receiver:
    def __init__(self): self.q = Q
    def capabilities(self): return {"delivery_guarantee": "at-least-once"}
    def receive_batch(self, n, timeout):
        try:
            return [Received(1, self.q.get(timeout=timeout))]
        except queue.Empty:
            return []
    def ack(self, ids): pass
    def nack(self, ids): pass
    def close(self): pass

class Sender:
    def capabilities(self): return {"delivery_guarantee": "at-least-once"}
    def send_batch(self, msgs):
        for m in msgs: Q.put(m[0])
    def close(self): pass

class Driver:
    def open_sender(self, url, options): return Sender()
    def open_receiver(self, url, options, settings): return Receiver()

Q = queue.Queue()
omnibus.register_driver("exiting", Driver)
pub = omnibus.publisher("exiting://h/t")
sub = omnibus.subscriber("exiting://h/t")
pub.publish_many([b"x"] * 100)
assert bytes(sub.receive(timeout=10).payload) == b"x"
print("leaving", flush=True)
# No close(): the engine's threads are still calling into Python when the interpreter shuts down.
"""


def test_the_interpreter_exits_cleanly_while_engine_threads_call_a_python_driver() -> None:
    import subprocess
    import sys

    for _ in range(3):
        done = subprocess.run([sys.executable, "-c", EXIT_WITHOUT_CLOSE], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and done.stdout == "leaving\n", done.stderr[-2000:]


class AsyncToy:
    """A driver built on asyncio: every method a coroutine, run by the engine on an event loop of its own."""

    description = "an asyncio toy"

    def __init__(self) -> None:
        self.stored: list[bytes] = []
        self.loops: set[int] = set()

    async def open_sender(self, url: dict[str, Any], options: dict[str, Any]) -> Any:
        toy = self

        class Sender:
            connected = True

            def capabilities(self) -> dict[str, Any]:
                return {"delivery_guarantee": "at-least-once"}

            async def send_batch(self, messages: list[Any]) -> None:
                toy.loops.add(id(asyncio.get_running_loop()))
                await asyncio.sleep(0)
                toy.stored += [m[0] for m in messages]

            async def close(self) -> None:
                await asyncio.sleep(0)

        return Sender()

    async def open_receiver(self, url: dict[str, Any], options: dict[str, Any], settings: dict[str, Any]) -> Any:
        toy = self

        class Receiver:
            def capabilities(self) -> dict[str, Any]:
                return {"delivery_guarantee": "at-least-once"}

            async def receive_batch(self, max_messages: int, timeout: float) -> list[Received]:
                toy.loops.add(id(asyncio.get_running_loop()))
                if not toy.stored:
                    await asyncio.sleep(min(timeout, 0.01))
                out, toy.stored[:] = toy.stored[:max_messages], toy.stored[max_messages:]
                return [Received(i, p) for i, p in enumerate(out)]

            async def ack(self, ids: list[int]) -> None:
                pass

            async def nack(self, ids: list[int]) -> None:
                pass

            async def close(self) -> None:
                pass

        return Receiver()


def test_async_def_methods_run_on_an_event_loop_of_the_engines() -> None:
    toy = AsyncToy()
    omnibus.register_driver("atoy", toy)
    try:
        with omnibus.subscriber("atoy://h/t") as sub, omnibus.publisher("atoy://h/t") as pub:
            pub.publish_many([b"a", b"b", b"c"]).result(timeout=10)
            got = [bytes(m.payload) for m in sub.receive_batch(3, timeout=10)]
            while len(got) < 3:
                got += [bytes(m.payload) for m in sub.receive_batch(3, timeout=10)]
            assert got == [b"a", b"b", b"c"] and pub.connected is True
        assert len(toy.loops) == 1  # one loop for the driver, the same for both ends
        # The loop's thread ended with the last sender or receiver (the leak check would say otherwise).
        assert not [t for t in threading.enumerate() if t.name == "omnibus-atoy-driver-loop"]
    finally:
        omnibus.unregister_driver("atoy")


def test_a_malformed_received_message_is_internal_naming_the_driver(toy: ToyDriver) -> None:
    class Odd(ToyReceiver):
        def receive_batch(self, max_messages: int, timeout: float) -> list[Any]:
            return [("id-1", 12345)]  # a payload that is not bytes

    toy.open_receiver = lambda url, options, settings: Odd(toy, url["path"])  # type: ignore[method-assign]
    with omnibus.subscriber("toy://h/t") as sub:
        with pytest.raises(omnibus.InternalError, match=r"toy:// driver's receive_batch \(Python\): message 0: payload"):
            sub.receive(timeout=10)
