"""The conformance suite: every driver passes it (see conftest.TARGETS)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import omnibus
from conftest import Target, receive_n, require


def test_round_trip(target: Target) -> None:
    url = target.url()
    caps = target.capabilities()
    with omnibus.subscriber(url) as sub, omnibus.publisher(url) as pub:
        before = time.time() * 1000
        pub.publish(b"hello", key=b"k1" if caps["keys"] else None,
                    headers={"trace": b"abc"} if caps["headers"] else None).result(timeout=10)
        msg = sub.receive(timeout=10)
    assert bytes(msg.payload) == b"hello"
    assert msg.value == b"hello"
    assert msg.key == (b"k1" if caps["keys"] else None)
    assert msg.headers == ([("trace", b"abc")] if caps["headers"] else [])
    assert msg.delivery_attempt == 1
    assert msg.timestamp_ms >= before - 1000  # stamped at publish, same clock
    assert isinstance(msg.topic, str) and msg.topic


def test_connection_state_is_reported(target: Target) -> None:
    with omnibus.subscriber(target.url()) as sub, omnibus.publisher(target.url()) as pub:
        # True once open() returned (None would mean the driver cannot tell).
        assert pub.connected is True and sub.connected is True


def test_payload_is_a_read_only_zero_copy_buffer(target: Target) -> None:
    url = target.url()
    with omnibus.subscriber(url) as sub, omnibus.publisher(url) as pub:
        pub.publish(b"abc").result(timeout=10)
        msg = sub.receive(timeout=10)
    view = msg.payload
    assert view.readonly
    assert view.obj is msg  # the buffer is the message's own, not a copy
    with pytest.raises(TypeError):
        view[0] = 0  # type: ignore[index]
    assert bytes(memoryview(msg)) == b"abc" and len(msg) == 3


@pytest.mark.parametrize(
    "payload",
    [b"", b"\x00\x01\x00binary\x00", bytes(range(256)) * 4096],  # the last is 1 MiB
    ids=["empty", "nul-bytes", "1MiB"],
)
def test_payloads(target: Target, payload: bytes) -> None:
    caps = target.capabilities()
    if caps["max_message_bytes"] and len(payload) > caps["max_message_bytes"]:
        pytest.skip(f"{target.name}:// max_message_bytes is {caps['max_message_bytes']}")
    url = target.url()
    with omnibus.subscriber(url) as sub, omnibus.publisher(url) as pub:
        pub.publish(payload).result(timeout=10)
        assert bytes(sub.receive(timeout=10).payload) == payload


def test_unicode_text(target: Target) -> None:
    url = target.url()
    text = "Grüße, 世界! 🚀 \u0000 end"
    with omnibus.subscriber(url, codec="text") as sub, omnibus.publisher(url, codec="text") as pub:
        pub.publish(text).result(timeout=10)
        msg = sub.receive(timeout=10)
    assert msg.value == text
    assert bytes(msg.payload) == text.encode("utf-8")


def test_headers_round_trip(target: Target) -> None:
    require(target, "headers")
    url = target.url()
    headers = [("b", b"1"), ("a", b"\x00\xff"), ("b", b"2"), ("ключ", "значение")]
    with omnibus.subscriber(url) as sub, omnibus.publisher(url) as pub:
        pub.publish(b"x", headers=headers).result(timeout=10)
        msg = sub.receive(timeout=10)
    # Order and repeats are kept; str values travel as UTF-8.
    assert msg.headers == [("b", b"1"), ("a", b"\x00\xff"), ("b", b"2"), ("ключ", "значение".encode())]
    assert msg.header("b") == b"1"
    assert msg.header("missing") is None


def test_batch_publish(target: Target) -> None:
    url = target.url()
    n = target.volume(1000)
    values = [f"m{i}".encode() for i in range(n)]
    with omnibus.subscriber(url) as sub, omnibus.publisher(url) as pub:
        delivery = pub.publish_many(values)
        delivery.result(timeout=10)
        assert len(delivery) == n and delivery.done() and delivery.failures() == []
        got = receive_n(sub, n)
    assert sorted(bytes(m.payload) for m in got) == sorted(values)


def test_per_key_order(target: Target) -> None:
    require(target, "ordered_per_key")
    require(target, "keys")
    url = target.url()
    keys = [b"k0", b"k1", b"k2"]
    n = 300
    with omnibus.subscriber(url) as sub, omnibus.publisher(url, batch_messages=7) as pub:
        for i in range(n):
            pub.publish(str(i).encode(), key=keys[i % 3])
        assert pub.flush(timeout=10)
        got = receive_n(sub, n)
    for key in keys:
        seq = [int(bytes(m.payload)) for m in got if m.key == key]
        assert seq == sorted(seq) and len(seq) == n // 3


def test_per_key_order_with_competing_consumers(target: Target) -> None:
    require(target, "competing_consumers")
    require(target, "key_affinity")
    url = target.url(group="workers")
    keys = [f"device-{i}".encode() for i in range(10)]
    n = 1000
    with omnibus.subscriber(url) as a, omnibus.subscriber(url) as b, omnibus.publisher(url) as pub:
        pub.publish_many([str(i).encode() for i in range(n)], keys=[keys[i % 10] for i in range(n)]).result(timeout=10)
        got_a: list[omnibus.Message] = []
        got_b: list[omnibus.Message] = []
        deadline = time.monotonic() + 10
        while len(got_a) + len(got_b) < n and time.monotonic() < deadline:
            got_a += a.receive_batch(1000, timeout=0.05)
            got_b += b.receive_batch(1000, timeout=0.05)
    assert len(got_a) + len(got_b) == n
    for got in (got_a, got_b):
        for key in keys:
            seq = [int(bytes(m.payload)) for m in got if m.key == key]
            assert seq == sorted(seq)
    # Each key went to one consumer only.
    assert not ({m.key for m in got_a} & {m.key for m in got_b})


def test_fan_out_to_every_subscription(target: Target) -> None:
    require(target, "fan_out")
    url = target.url()
    with omnibus.subscriber(url) as s1, omnibus.subscriber(url) as s2, omnibus.publisher(url) as pub:
        pub.publish_many([b"a", b"b", b"c"]).result(timeout=10)
        for sub in (s1, s2):
            assert sorted(bytes(m.payload) for m in receive_n(sub, 3)) == [b"a", b"b", b"c"]


def test_competing_consumers_share_without_duplicates(target: Target) -> None:
    require(target, "competing_consumers")
    url = target.url(group="g")
    n = target.volume(2000)
    # Distinct keys spread the work where a protocol partitions by key (Kafka
    # sends a keyless batch to one partition, so to one consumer).
    keys = [str(i).encode() for i in range(n)] if target.capabilities()["keys"] else None
    with omnibus.subscriber(url) as a, omnibus.subscriber(url) as b, omnibus.publisher(url) as pub:
        pub.publish_many([str(i).encode() for i in range(n)], keys=keys).result(timeout=10)
        seen: list[bytes] = []
        deadline = time.monotonic() + 10
        counts = [0, 0]
        while len(seen) < n and time.monotonic() < deadline:
            for i, sub in enumerate((a, b)):
                got = sub.receive_batch(1000, timeout=0.05)
                counts[i] += len(got)
                seen += [bytes(m.payload) for m in got]
    assert sorted(seen) == sorted(str(i).encode() for i in range(n))
    assert counts[0] > 0 and counts[1] > 0, f"one consumer got everything: {counts}"


def test_ack_nack_redelivery(target: Target) -> None:
    require(target, "nack")
    url = target.url()
    with omnibus.subscriber(url, auto_ack=False) as sub, omnibus.publisher(url) as pub:
        pub.publish(b"job").result(timeout=10)
        first = sub.receive(timeout=10)
        assert first.delivery_attempt == 1 and not first.settled
        first.nack()
        again = sub.receive(timeout=10)
        assert bytes(again.payload) == b"job" and again.delivery_attempt == 2
        again.ack()
        again.ack()  # settling twice is harmless
        # An acked message does not come back: the next one is the sentinel.
        pub.publish(b"sentinel").result(timeout=10)
        assert bytes(sub.receive(timeout=10).payload) == b"sentinel"


def test_nack_of_an_auto_acked_message_raises_instead_of_doing_nothing(target: Target) -> None:
    """auto_ack=True acks on hand-over: a later nack() cannot bring the message back, so it says so
    (InvalidArgument, pointing at auto_ack=False) rather than returning as if it would. ack() holds
    already and is a no-op. Where the protocol has no nack at all, nack() is Unsupported as for any message."""
    nackable = bool(target.capabilities()["nack"])
    url = target.url()
    with omnibus.subscriber(url) as sub, omnibus.publisher(url) as pub:
        pub.publish(b"job").result(timeout=10)
        msg = sub.receive(timeout=10)
        assert msg.settled and sub.auto_ack
        if nackable:
            with pytest.raises(omnibus.InvalidArgument, match="auto_ack=True.*auto_ack=False"):
                msg.nack()
            with pytest.raises(omnibus.InvalidArgument, match="auto_ack"):
                sub.nack([msg])
        else:
            with pytest.raises(omnibus.Unsupported, match="nack"):
                msg.nack()
        msg.ack()
        sub.ack([msg])
        # Nothing was redelivered: the next message is the sentinel.
        pub.publish(b"sentinel").result(timeout=10)
        assert bytes(sub.receive(timeout=10).payload) == b"sentinel"


def test_batch_ack_and_nack(target: Target) -> None:
    require(target, "nack")
    url = target.url()
    with omnibus.subscriber(url, auto_ack=False) as sub, omnibus.publisher(url) as pub:
        pub.publish_many([b"1", b"2", b"3", b"4"]).result(timeout=10)
        got = receive_n(sub, 4)
        sub.ack(got[:2])
        sub.nack(got[2:])
        back = receive_n(sub, 2)
        assert sorted(bytes(m.payload) for m in back) == sorted(bytes(m.payload) for m in got[2:])
        assert all(m.delivery_attempt == 2 for m in back)
        sub.ack(back)


def test_ack_deadline_redelivers(target: Target) -> None:
    require(target, "ack_deadline")
    url = target.url(ack_deadline_ms=200)
    with omnibus.subscriber(url, auto_ack=False) as sub, omnibus.publisher(url) as pub:
        pub.publish(b"slow").result(timeout=10)
        first = sub.receive(timeout=10)
        again = sub.receive(timeout=10)  # never acked: comes back after the deadline
        assert bytes(again.payload) == bytes(first.payload) and again.delivery_attempt == 2
        again.ack()


def test_closed_subscriber_returns_unacked_to_its_group(target: Target) -> None:
    require(target, "competing_consumers")
    require(target, "requeue_on_close")
    counted = target.capabilities()["delivery_count"]
    url = target.url(group="durable-group")
    with omnibus.publisher(url) as pub:
        first = omnibus.subscriber(url, auto_ack=False)
        pub.publish(b"unfinished").result(timeout=10)
        assert bytes(first.receive(timeout=10).payload) == b"unfinished"
        first.close()
        with omnibus.subscriber(url, auto_ack=False) as second:
            msg = second.receive(timeout=10)
            assert bytes(msg.payload) == b"unfinished"
            assert msg.delivery_attempt == (2 if counted else msg.delivery_attempt)
            msg.ack()


def test_concurrent_publishers_lose_and_duplicate_nothing(target: Target) -> None:
    url = target.url()
    publishers = 8
    per = max(1, target.volume(publishers * 2000) // publishers)
    step = min(50, per)
    with omnibus.subscriber(url, prefetch=5000) as sub, omnibus.publisher(url, batch_messages=100) as pub:
        errors: list[BaseException] = []

        keyed = target.capabilities()["keys"]

        def run(p: int) -> None:
            try:
                for i in range(0, per, step):
                    keys = [str(p)] * step if keyed else None
                    pub.publish_many([f"{p}:{j}".encode() for j in range(i, i + step)], keys=keys)
            except BaseException as e:  # reported below; a thread must not swallow it
                errors.append(e)

        threads = [threading.Thread(target=run, args=(p,)) for p in range(publishers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert pub.flush(timeout=30)
        got = receive_n(sub, publishers * per, timeout=30)
        assert sub.receive_batch(10, timeout=0.2) == []  # nothing beyond the expected count
    payloads = [bytes(m.payload).decode() for m in got]
    assert len(payloads) == len(set(payloads)) == publishers * per
    for p in range(publishers):
        seq = [int(x.split(":")[1]) for x in payloads if x.startswith(f"{p}:")]
        if target.capabilities()["ordered_per_key"]:
            assert seq == list(range(per))  # each publisher's own order is kept (same key)
        else:
            assert sorted(seq) == list(range(per))


def test_publisher_close_flushes_and_then_refuses(target: Target) -> None:
    url = target.url()
    with omnibus.subscriber(url) as sub:
        pub = omnibus.publisher(url, batch_linger_ms=60000, batch_messages=10000)
        deliveries = [pub.publish(str(i).encode()) for i in range(10)]
        pub.close()  # linger would hold them for a minute; close sends them now
        assert all(d.done() for d in deliveries)
        for d in deliveries:
            d.result(timeout=0)
        assert len(receive_n(sub, 10)) == 10
        assert pub.closed
        pub.close()  # idempotent
        with pytest.raises(omnibus.Closed):
            pub.publish(b"late")
        with pytest.raises(omnibus.Closed):
            pub.publish_many([b"late"])


def test_subscriber_close_ends_iteration_and_refuses(target: Target) -> None:
    url = target.url()
    sub = omnibus.subscriber(url)
    seen: list[bytes] = []
    done = threading.Event()

    def iterate() -> None:
        for msg in sub:
            seen.append(bytes(msg.payload))
        done.set()

    t = threading.Thread(target=iterate)
    t.start()
    with omnibus.publisher(url) as pub:
        pub.publish(b"one").result(timeout=10)
    from conftest import wait_until

    assert wait_until(lambda: seen == [b"one"])
    sub.close()
    assert done.wait(timeout=10), "iteration did not stop after close()"
    t.join()
    with pytest.raises(omnibus.Closed):
        sub.receive(timeout=1)
    sub.close()  # idempotent


def test_receive_timeout(target: Target) -> None:
    with omnibus.subscriber(target.url()) as sub:
        with pytest.raises(omnibus.Timeout) as info:
            sub.receive(timeout=0.05)
        assert isinstance(info.value, TimeoutError)
        assert sub.receive_batch(10, timeout=0.05) == []


def test_oversized_message_fails_alone_in_its_batch(target: Target) -> None:
    caps = target.capabilities()
    if target.name != "mem" and not caps["max_message_bytes"]:
        pytest.skip(f"{target.name}:// reports no max_message_bytes")
    limit = 1000 if target.name == "mem" else caps["max_message_bytes"]
    sub_url = target.url()
    url = f"{sub_url}{'&' if '?' in sub_url else '?'}max_message_bytes={limit}" if target.name == "mem" else sub_url
    with omnibus.subscriber(sub_url) as sub, omnibus.publisher(url) as pub:
        delivery = pub.publish_many([b"small-0", b"x" * (limit + 1), b"small-2"])
        with pytest.raises(omnibus.ResourceExhausted) as info:
            delivery.result(timeout=10)
        failures = info.value.failures
        assert [i for i, _ in failures] == [1]
        assert isinstance(failures[0][1], omnibus.ResourceExhausted)
        assert "[1]" in str(info.value) and "1 of 3" in str(info.value)
        got = receive_n(sub, 2)
        assert sorted(bytes(m.payload) for m in got) == [b"small-0", b"small-2"]


class _Responder:
    """Answers every request on `sub` on a thread of its own: {"echo": value} plus the request's headers."""

    def __init__(self, sub: omnibus.Subscriber) -> None:
        self.sub = sub
        self.answered = 0
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for msg in self.sub.receive_batch(10, timeout=0.05):
                try:
                    if msg.reply_to is not None:
                        msg.reply({"echo": msg.value}, headers=msg.headers)
                        self.answered += 1
                except BaseException as e:  # surfaced by stop()
                    self.errors.append(e)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        assert not self._thread.is_alive()
        assert self.errors == []


def test_request_reply(target: Target) -> None:
    require(target, "request_reply")
    url = target.url()
    with omnibus.subscriber(url, codec="json") as sub, omnibus.publisher(url, codec="json") as pub:
        # A published message has no reply address and cannot be answered.
        pub.publish({"plain": True}).result(timeout=10)
        plain = sub.receive(timeout=10)
        assert plain.reply_to is None
        with pytest.raises(omnibus.InvalidArgument, match="no reply address"):
            plain.reply({"x": 1})

        responder = _Responder(sub)
        try:
            headers = [("trace", b"t-1"), ("n", "ü")] if target.capabilities()["headers"] else None
            reply = pub.request({"n": 1, "s": "ü"}, headers=headers, timeout=10)
            assert reply.value == {"echo": {"n": 1, "s": "ü"}}  # both sides through the json codec
            assert reply.headers == ([("trace", b"t-1"), ("n", "ü".encode())] if headers else [])
            assert reply.reply_to is None and reply.topic  # the reply address it came to
            # Sequential requests each get their own reply.
            for i in range(20):
                assert pub.request(i, timeout=10).value == {"echo": i}
        finally:
            responder.stop()
        assert responder.answered == 21


def test_request_reply_from_threads_beside_batching(target: Target) -> None:
    require(target, "request_reply")
    url = target.url(group="servers")
    with omnibus.subscriber(url, codec="json") as sub1, omnibus.subscriber(url, codec="json") as sub2, \
            omnibus.publisher(url, codec="json") as pub:
        responders = [_Responder(sub1), _Responder(sub2)]
        results: dict[int, Any] = {}
        try:
            def ask(t: int) -> None:
                for i in range(10):
                    results[t * 100 + i] = pub.request({"t": t, "i": i}, timeout=10).value

            threads = [threading.Thread(target=ask, args=(t,)) for t in range(4)]
            for th in threads:
                th.start()
            pub.publish_many([{"batch": i} for i in range(200)]).result(timeout=10)  # batching goes on meanwhile
            for th in threads:
                th.join(timeout=30)
        finally:
            for r in responders:
                r.stop()
        assert results == {t * 100 + i: {"echo": {"t": t, "i": i}} for t in range(4) for i in range(10)}
        # A queue group answers each request once.
        assert sum(r.answered for r in responders) == 40


def test_request_without_responder_times_out_naming_the_subject(target: Target) -> None:
    require(target, "request_reply")
    url = target.url()
    with omnibus.publisher(url) as pub:
        # Nothing subscribes: the broker says so, and the request fails at once
        # ("no responders") instead of waiting out its timeout.
        with pytest.raises(omnibus.Timeout, match="no responders") as exc:
            pub.request(b"anyone?", timeout=60)
        assert url.split("?")[0].rsplit("/", 1)[-1] in str(exc.value)  # the subject
        with omnibus.subscriber(url) as sub:  # receives, never replies
            with pytest.raises(omnibus.Timeout, match=r"within the timeout of 0\.3 s") as exc:
                pub.request(b"hello?", timeout=0.3)
            assert url in str(exc.value)
            assert isinstance(exc.value, TimeoutError)
            late = sub.receive(timeout=10)
            assert late.reply_to
            late.reply(b"too late")  # dropped: the requester gave up; no error
