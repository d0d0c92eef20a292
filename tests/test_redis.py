"""redis:// (omnibus.redis_streams, a driver written in Python) beyond the conformance suite: interop both
ways with redis-py used directly, MAXLEN, a dead consumer's pending entries, and a broker SIGKILL."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import omnibus
from omnibus.testing import wait_until

redis = pytest.importorskip("redis")


def name() -> str:
    return f"s-{uuid.uuid4().hex[:10]}"


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].rstrip("/"))


@pytest.fixture
def client(redis_url: str) -> Iterator[Any]:
    c = redis.Redis(host="127.0.0.1", port=port_of(redis_url))
    try:
        yield c
    finally:
        c.close()


def test_omnibus_publishes_what_redis_py_reads(redis_url: str, client: Any) -> None:
    stream = name()
    with omnibus.publisher(f"{redis_url}/{stream}") as pub:
        pub.publish(b"hello", key=b"k1", headers=[("trace", b"abc"), ("trace", b"def")]).result(timeout=10)
    [(entry_id, fields)] = client.xrange(stream)
    assert fields[b"payload"] == b"hello" and fields[b"key"] == b"k1"
    assert int(fields[b"ts"]) > 0
    # The entry's fields as Redis keeps them: in order, a repeated header name kept.
    raw = redis.Redis(host="127.0.0.1", port=port_of(redis_url), protocol=2)
    try:
        raw.set_response_callback("XRANGE", lambda r, **_: r)
        [(_, flat)] = raw.xrange(stream)
    finally:
        raw.close()
    assert flat == [b"payload", b"hello", b"ts", fields[b"ts"], b"key", b"k1",
                    b"h:trace", b"abc", b"h:trace", b"def"]


def test_omnibus_reads_what_redis_py_writes(redis_url: str, client: Any) -> None:
    stream = name()
    with omnibus.subscriber(f"{redis_url}/{stream}?group=g") as sub:
        client.xadd(stream, {"payload": b"from redis-py", "key": b"dev-1", "h:site": b"p1"})
        client.xadd(stream, {"temperature": b"21.5"})  # not written by omnibus: its fields become headers
        first, second = sub.receive(timeout=10), sub.receive(timeout=10)
    assert bytes(first.payload) == b"from redis-py" and first.key == b"dev-1"
    assert first.headers == [("site", b"p1")] and first.topic == stream and first.timestamp_ms > 0
    assert bytes(second.payload) == b"" and second.headers == [("temperature", b"21.5")]
    # auto_ack: both were XACKed on hand-over, nothing is pending in the group.
    assert wait_until(lambda: client.xpending(stream, "g")["pending"] == 0, timeout=10)


def test_maxlen_trims_the_stream(redis_url: str, client: Any) -> None:
    stream = name()
    with omnibus.publisher(f"{redis_url}/{stream}?maxlen=10&maxlen_approximate=false") as pub:
        pub.publish_many([str(i).encode() for i in range(100)]).result(timeout=10)
    assert client.xlen(stream) == 10
    assert [f[b"payload"] for _, f in client.xrange(stream)] == [str(i).encode() for i in range(90, 100)]


def test_a_dead_consumers_pending_entries_are_claimed_with_their_delivery_count(redis_url: str, client: Any) -> None:
    """A consumer read and never acked (it died: no close, no XACK); after ack_deadline_ms another
    consumer of the group takes its entries over (XAUTOCLAIM), delivery_attempt = Redis' count."""
    stream = name()
    client.xgroup_create(stream, "workers", id="0", mkstream=True)
    with omnibus.publisher(f"{redis_url}/{stream}") as pub:
        pub.publish_many([b"a", b"b", b"c"]).result(timeout=10)
    client.xreadgroup("workers", "dead-one", {stream: ">"}, count=10)  # delivered once, never acked
    with omnibus.subscriber(f"{redis_url}/{stream}?group=workers&consumer=alive&ack_deadline_ms=300",
                            auto_ack=False) as sub:
        got = [sub.receive(timeout=10) for _ in range(3)]
        assert sorted(bytes(m.payload) for m in got) == [b"a", b"b", b"c"]
        assert {m.delivery_attempt for m in got} == {2}
        sub.ack(got)
    assert client.xpending(stream, "workers")["pending"] == 0


def test_unknown_options_and_bad_urls_say_what_is_right(redis_url: str) -> None:
    with pytest.raises(omnibus.InvalidArgument, match="maxlen"):
        omnibus.publisher(f"{redis_url}/s?maxlength=5")
    with pytest.raises(omnibus.InvalidArgument, match="stream name as the URL path"):
        omnibus.publisher(redis_url)
    with pytest.raises(omnibus.InvalidArgument, match="earliest"):
        omnibus.subscriber(f"{redis_url}/s?start=middle")


def test_an_unreachable_redis_is_unavailable() -> None:
    from omnibus.testing.brokers import free_port

    with pytest.raises(omnibus.Unavailable, match="cannot reach redis://127.0.0.1"):
        omnibus.publisher(f"redis://127.0.0.1:{free_port()}/s?connect_timeout_ms=500")


@pytest.mark.fault
def test_acknowledged_xadds_survive_a_broker_sigkill(redis_broker: Any) -> None:  # type: ignore[no-untyped-def]
    """appendonly with fsync always: every XADD whose reply came is in the stream after a SIGKILL and restart."""
    stream = name()
    url = f"{redis_broker.url}/{stream}"
    n, batch = 20000, 500
    killed = threading.Event()
    errors: list[BaseException] = []

    # delivery_timeout_ms=1: a send that fails while the broker is down fails at
    # once, so that this test sees which XADDs were acknowledged before the
    # crash (the next test shows the default: sent again once it is back).
    with omnibus.publisher(url, batch_messages=batch, delivery_timeout_ms=1) as pub:
        deliveries: list[Any] = []

        def crash() -> None:
            try:
                if wait_until(lambda: sum(d.done() for d in deliveries) >= 5, timeout=60, interval=0.001):
                    redis_broker.kill()
                    killed.set()
            except BaseException as e:  # reported below
                errors.append(e)

        crasher = threading.Thread(target=crash)
        crasher.start()
        try:
            # One batch at a time, so that the broker dies while one is on its way, and a few go on after.
            after = 0
            for start in range(0, n, batch):
                deliveries.append(pub.publish_many([str(i).encode() for i in range(start, start + batch)]))
                assert wait_until(deliveries[-1].done, timeout=60, interval=0.001)
                after += killed.is_set()
                if after >= 3:
                    break
            assert killed.wait(timeout=60), "the broker was not killed"
        finally:
            crasher.join()
        # Started from this thread: a broker process dies with the thread that spawned it.
        redis_broker.restart(kill=True)
        pub.flush(timeout=60)
    assert not errors
    assert any(d.failures() for d in deliveries), "no publish failed while the broker was down"
    acked = {str(start + i).encode() for start, d in zip(range(0, n, batch), deliveries)
             for i in range(batch) if i not in {j for j, _ in d.failures()}}
    assert acked, "nothing was confirmed before the crash"
    c = redis.Redis(host="127.0.0.1", port=port_of(redis_broker.url))
    try:
        stored = {f[b"payload"] for _, f in c.xrange(stream)}
    finally:
        c.close()
    lost = acked - stored
    assert not lost, f"{len(lost)} acknowledged XADDs lost in the crash (of {len(acked)} acknowledged)"
    print(f"\n{len(acked)} of {n} acknowledged, all {len(stored)} stored entries read back after the restart")


@pytest.mark.fault
def test_a_stream_across_a_broker_restart_fails_no_send(redis_broker: Any) -> None:  # type: ignore[no-untyped-def]
    """The portable rule: what fails while the broker is away goes again once it is back
    (within delivery_timeout_ms), so a restart fails no publish and loses no message."""
    for _ in range(int(os.environ.get("OMNIBUS_FAULT_LOOPS", "1"))):
        stream = name()
        with omnibus.publisher(f"{redis_broker.url}/{stream}", batch_messages=100) as pub:
            before = pub.publish_many([str(i).encode() for i in range(1000)])
            before.result(timeout=60)
            redis_broker.kill()
            during = pub.publish_many([str(i).encode() for i in range(1000, 2000)])
            assert wait_until(lambda: pub.stats()["messages_resent"] > 0, timeout=30), "nothing failed while down"
            assert not during.done()
            redis_broker.restart()
            during.result(timeout=60)
            pub.publish_many([str(i).encode() for i in range(2000, 3000)]).result(timeout=60)
            stats = pub.stats()
        assert stats["messages_failed"] == 0 and stats["messages_delivered"] == 3000, stats
        c = redis.Redis(host="127.0.0.1", port=port_of(redis_broker.url))
        try:
            stored = [f[b"payload"] for _, f in c.xrange(stream)]
        finally:
            c.close()
        assert set(stored) == {str(i).encode() for i in range(3000)}
        print(f"\n3000 of 3000 stored across a SIGKILL and restart; {stats['messages_resent']} sends repeated, "
              f"{len(stored) - 3000} duplicates")


def test_bridges_mqtt_into_redis_and_redis_into_kafka(mqtt_url: str, redis_url: str, kafka_url: str) -> None:
    """Readings over MQTT reach Kafka through a Redis stream: two bridges, a driver written in Python in each."""
    for kind in ("mqtt", "kafka"):
        missing = omnibus.unavailable_drivers().get(kind)
        if missing:
            pytest.skip(f"{kind}:// is not in this build: {missing}")
    tag, n = uuid.uuid4().hex[:8], 500
    mqtt = f"{mqtt_url}/plant-{tag}/temp?qos=1&version=5"
    stream = f"{redis_url}/readings-{tag}"
    kafka = f"{kafka_url}/readings-{tag}"
    with pytest.warns(omnibus.DeliveryGuaranteeWarning, match="at-most-once"):  # MQTT acks on arrival
        into_redis = omnibus.bridge(mqtt, stream)
    with into_redis, omnibus.bridge(f"{stream}?group=to-kafka", kafka) as into_kafka, \
         omnibus.subscriber(f"{kafka}?group=audit-{tag}&offset_reset=earliest") as audit:
        with omnibus.publisher(mqtt) as pub:
            pub.publish_many([str(i).encode() for i in range(n)], keys=[b"dev-1"] * n).result(timeout=30)
        seen: set[bytes] = set()

        def all_arrived() -> bool:
            msgs = audit.receive_batch(1000, timeout=0.2)
            seen.update(bytes(m.payload) for m in msgs)
            return len(seen) >= n

        assert wait_until(all_arrived, timeout=120, interval=0), \
            f"{len(seen)} of {n} reached Kafka; {into_redis.stats.line()}; {into_kafka.stats.line()}"
        assert seen == {str(i).encode() for i in range(n)}
        assert into_kafka.stats.failed == 0 and into_redis.stats.failed == 0
