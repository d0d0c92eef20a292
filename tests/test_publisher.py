"""Portable publisher behaviour: batching, back-pressure, delivery results, stats."""

from __future__ import annotations

import sys
import threading

import pytest

import omnibus
from conftest import receive_n, wait_until


def test_batches_by_count() -> None:
    with omnibus.publisher("mem://b-count", batch_messages=10, batch_linger_ms=60000) as pub:
        pub.publish_many([b"x"] * 30)
        # Full batches go at once, linger or not.
        assert wait_until(lambda: pub.stats()["messages_delivered"] == 30)
        stats = pub.stats()
    assert stats["batches_sent"] == 3 and stats["largest_batch"] == 10


def test_batches_by_bytes() -> None:
    with omnibus.publisher("mem://b-bytes", batch_bytes=1000, batch_linger_ms=60000) as pub:
        pub.publish_many([b"x" * 100] * 20)  # 2000 bytes: two full 1000-byte batches
        assert wait_until(lambda: pub.stats()["messages_delivered"] == 20)
        assert pub.stats()["largest_batch"] == 10


def test_linger_gathers_one_batch() -> None:
    with omnibus.publisher("mem://b-linger", batch_linger_ms=300) as pub:
        deliveries = [pub.publish(b"x") for _ in range(3)]
        assert all(d.wait(timeout=10) for d in deliveries)
        assert pub.stats()["batches_sent"] == 1


def test_flush_ignores_linger() -> None:
    with omnibus.publisher("mem://b-flush", batch_linger_ms=60000) as pub:
        d = pub.publish_many([b"x"] * 5)
        assert not d.done()  # held back by linger
        assert pub.flush(timeout=10)
        d.result(timeout=0)
        assert pub.stats() == dict(pub.stats(), batches_sent=1, messages_delivered=5, pending=0)


def test_back_pressure_blocks_then_raises_resource_exhausted() -> None:
    with omnibus.publisher("mem://bp", max_pending=10, batch_linger_ms=60000) as pub:
        first = pub.publish_many([b"x"] * 10)  # fills the queue; linger keeps it there
        with pytest.raises(omnibus.ResourceExhausted) as info:
            pub.publish(b"one too many", block_timeout=0.2)
        assert "max_pending=10" in str(info.value)
        # A batch that only partly fits: the error says which part was queued.
        with pytest.raises(omnibus.ResourceExhausted, match="messages 0..4 of this call were not enqueued"):
            pub.publish_many([b"y"] * 5, block_timeout=0)
        assert pub.flush(timeout=10)
        first.result(timeout=0)
        room = pub.publish(b"room again", block_timeout=0)
        assert pub.flush(timeout=10)
        room.result(timeout=0)


def test_blocked_publisher_resumes_when_room_appears() -> None:
    with omnibus.publisher("mem://bp2", max_pending=5, batch_linger_ms=60000) as pub:
        pub.publish_many([b"x"] * 5)
        done = threading.Event()

        def blocked() -> None:
            pub.publish(b"waits")
            done.set()

        t = threading.Thread(target=blocked)
        t.start()
        assert not done.wait(0.2)  # still blocked: the queue is full
        assert pub.flush(timeout=10)
        assert done.wait(10)
        t.join()
        assert pub.flush(timeout=10) and pub.stats()["messages_delivered"] == 6


def test_delivery_callbacks_and_results() -> None:
    seen: list[omnibus.Delivery] = []
    lock = threading.Lock()

    def on_delivery(d: omnibus.Delivery) -> None:
        with lock:
            seen.append(d)

    with omnibus.subscriber("mem://cb") as sub, omnibus.publisher("mem://cb") as pub:
        d1 = pub.publish(b"a", on_delivery=on_delivery)
        d2 = pub.publish_many([b"b", b"c"], on_delivery=on_delivery)
        assert wait_until(lambda: len(seen) == 2)
        assert {id(x) for x in seen} <= {id(d1), id(d2)} or len(seen) == 2
        assert d1.exception() is None and d2.result() is None and len(d2) == 2
        late: list[omnibus.Delivery] = []
        d1.add_done_callback(late.append)  # already done: runs at once
        assert late == [d1]
        receive_n(sub, 3)


def test_callback_exception_does_not_break_the_publisher(monkeypatch: pytest.MonkeyPatch) -> None:
    reported: list[BaseException | None] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: reported.append(u.exc_value))

    def bad(_: omnibus.Delivery) -> None:
        raise ValueError("callback bug")

    with omnibus.subscriber("mem://cbx") as sub, omnibus.publisher("mem://cbx") as pub:
        pub.publish(b"1", on_delivery=bad).wait(timeout=10)
        assert wait_until(lambda: len(reported) == 1)
        assert isinstance(reported[0], ValueError)
        pub.publish(b"2").result(timeout=10)
        assert len(receive_n(sub, 2)) == 2


def test_close_refuses_new_publishes_from_blocked_threads() -> None:
    pub = omnibus.publisher("mem://bp3", max_pending=1, batch_linger_ms=60000)
    pub.publish(b"fills")
    errors: list[BaseException] = []

    def blocked() -> None:
        try:
            pub.publish(b"waits", block_timeout=30)
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=blocked)
    t.start()
    assert wait_until(lambda: t.is_alive())
    pub.close()
    t.join(timeout=10)
    assert not t.is_alive()
    # Either it got room when close flushed, or it was refused as Closed: never lost silently.
    assert errors == [] or isinstance(errors[0], omnibus.Closed)
