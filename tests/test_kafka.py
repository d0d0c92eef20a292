"""kafka:// specifics beyond the conformance suite, against a real broker on loopback."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import uuid
from typing import Any

import pytest

import omnibus
from conftest import receive_from
from omnibus.testing import wait_until

pytestmark = pytest.mark.skipif("kafka" in omnibus.unavailable_drivers(), reason="kafka:// is not in this build")


def topic_url(kafka_url: str, **options: object) -> str:
    query = "&".join(f"{k}={v}" for k, v in options.items())
    return f"{kafka_url}/kt-{uuid.uuid4().hex[:10]}" + (f"?{query}" if query else "")


def bootstrap(kafka_url: str) -> str:
    return kafka_url.split("://", 1)[1].split("/", 1)[0]


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat (Debian package kcat) is not installed")
def test_interoperates_with_kcat_both_ways(kafka_url: str) -> None:
    url = topic_url(kafka_url)
    topic = url.rsplit("/", 1)[1]
    with omnibus.publisher(url) as pub:
        pub.publish(b"from omnibus", key=b"k1", headers={"h1": b"v1"}).result(timeout=30)
    out = subprocess.run(
        ["kcat", "-b", bootstrap(kafka_url), "-C", "-t", topic, "-o", "beginning", "-c", "1", "-e",
         "-f", "%k|%s|%h\\n"], capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    assert out.strip() == "k1|from omnibus|h1=v1"

    with omnibus.subscriber(url, group="kcat-reader", auto_ack=False) as sub:
        subprocess.run(["kcat", "-b", bootstrap(kafka_url), "-P", "-t", topic, "-k", "k2", "-H", "h2=v2"],
                       input="from kcat", text=True, timeout=60, check=True)
        got = {bytes(m.payload): m for m in [sub.receive(timeout=30), sub.receive(timeout=30)]}
        msg = got[b"from kcat"]
        assert msg.key == b"k2" and msg.headers == [("h2", b"v2")]
        sub.ack(list(got.values()))


def test_an_unacked_message_holds_the_commit_back(kafka_url: str) -> None:
    """With manual ack, a crash (close without ack) redelivers from the first unacked message."""
    url = topic_url(kafka_url, group="inorder")
    with omnibus.publisher(url) as pub:
        pub.publish_many([b"m0", b"m1", b"m2"]).result(timeout=30)
    with omnibus.subscriber(url, auto_ack=False) as first:
        got = [first.receive(timeout=30) for _ in range(3)]
        assert [bytes(m.payload) for m in got] == [b"m0", b"m1", b"m2"]
        got[1].ack()
        got[2].ack()  # m0 stays unacked: the committed offset must stay before it
    with omnibus.subscriber(url, auto_ack=False) as second:
        again = [second.receive(timeout=30) for _ in range(3)]
        assert [bytes(m.payload) for m in again] == [b"m0", b"m1", b"m2"]
        second.ack(again)
    with omnibus.subscriber(url, auto_ack=False) as third, omnibus.publisher(url) as pub:
        pub.publish(b"m3").result(timeout=30)
        assert bytes(third.receive(timeout=30).payload) == b"m3"  # all acked: nothing comes back


def test_nack_seeks_back(kafka_url: str) -> None:
    url = topic_url(kafka_url)
    with omnibus.subscriber(url, auto_ack=False) as sub, omnibus.publisher(url) as pub:
        pub.publish_many([b"a", b"b"]).result(timeout=30)
        a, b = sub.receive(timeout=30), sub.receive(timeout=30)
        a.nack()
        again = [sub.receive(timeout=30), sub.receive(timeout=30)]
        # a comes again, and so does b, which followed it in the partition.
        assert [bytes(m.payload) for m in again] == [b"a", b"b"]
        assert [m.delivery_attempt for m in again] == [2, 2]
        b.ack()
        sub.ack(again)


def test_several_partitions_spread_over_a_group_keeping_each_partition_ordered(kafka_url: str) -> None:
    url = topic_url(kafka_url, partitions=6, group="spread")
    n = 3000
    with omnibus.subscriber(url) as a, omnibus.subscriber(url) as b, omnibus.subscriber(url) as c, \
            omnibus.publisher(url) as pub:
        keys = [f"dev-{i % 30}".encode() for i in range(n)]
        pub.publish_many([str(i).encode() for i in range(n)], keys=keys).result(timeout=30)
        got = receive_from([a, b, c], n)
    assert sum(map(len, got)) == n
    assert sum(1 for v in got if v) >= 2, "the partitions did not spread over the group"
    for msgs in got:
        for key in {m.key for m in msgs}:
            seq = [int(bytes(m.payload)) for m in msgs if m.key == key]
            assert seq == sorted(seq)


def test_bad_input(kafka_url: str) -> None:
    with pytest.raises(omnibus.InvalidArgument, match="contains '\\$'.*a-z A-Z 0-9"):
        omnibus.publisher(f"{kafka_url}/bad$topic")
    with pytest.raises(omnibus.InvalidArgument, match="is missing"):
        omnibus.publisher(kafka_url)
    with pytest.raises(omnibus.InvalidArgument, match="acks.*one of 0, 1, all"):
        omnibus.publisher(topic_url(kafka_url, acks=2))
    with pytest.raises(omnibus.InvalidArgument, match="rdkafka.no.such.property.*rejected by librdkafka"):
        omnibus.publisher(topic_url(kafka_url) + "?rdkafka.no.such.property=1")


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_scram_logs_in_or_says_why_this_librdkafka_cannot(kafka_broker: Any, mechanism: str) -> None:
    """The broker has the SCRAM credentials (written at format time; confluent-kafka's newer
    librdkafka logs in with them). librdkafka before 2.6.1 repeats the client nonce in its proof,
    which Kafka 4 refuses as invalid credentials: then the error says exactly that."""
    version = next(d["description"] for d in omnibus.drivers() if d["scheme"] == "kafka").split()[4].rstrip(":")
    url = f"{kafka_broker.sasl_url()}/scram-{uuid.uuid4().hex[:8]}?sasl_mechanism={mechanism}&connect_timeout_ms=5000"
    if tuple(int(x) for x in version.split(".")[:3]) >= (2, 6, 1):
        with omnibus.subscriber(url) as sub, omnibus.publisher(url) as pub:
            pub.publish(b"scram").result(timeout=30)
            assert bytes(sub.receive(timeout=30).payload) == b"scram"
        return
    confluent_kafka = pytest.importorskip("confluent_kafka", reason="the peer client shows the credentials are right")
    if tuple(int(x) for x in confluent_kafka.libversion()[0].split(".")[:3]) >= (2, 6, 1):
        peer = confluent_kafka.Producer({
            "bootstrap.servers": f"127.0.0.1:{kafka_broker.ports['sasl']}", "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": mechanism, "sasl.username": "omnibus",
            "sasl.password": kafka_broker.sasl_users["omnibus"], "message.timeout.ms": 20000})
        peer.produce(f"scram-peer-{uuid.uuid4().hex[:8]}", b"x")
        remaining = peer.flush(30)
        del peer  # its sockets and threads go with it (Producer has no close())
        assert remaining == 0, "the broker refused the right password to a fixed librdkafka too"
    with pytest.raises(omnibus.Unavailable) as info:
        omnibus.publisher(url)
    text = str(info.value)
    assert f"({mechanism})" in text and "invalid credentials" in text
    assert f"this librdkafka ({version}, before 2.6.1) sends SCRAM proofs that Kafka 4 brokers refuse" in text
    assert kafka_broker.sasl_users["omnibus"] not in text


def test_sasl_plain_login_round_trip_and_refusals(kafka_broker: Any) -> None:
    """The harness broker's SASL_PLAINTEXT listener: a PLAIN login from the URL works; a wrong
    password is Unavailable naming the user, never the password; the option mistakes are named."""
    base = kafka_broker.sasl_url()
    password = kafka_broker.sasl_users["omnibus"]
    topic = f"sasl-{uuid.uuid4().hex[:8]}"
    with omnibus.subscriber(f"{base}/{topic}?group=g") as sub, omnibus.publisher(f"{base}/{topic}") as pub:
        assert password not in repr(pub) and password not in repr(sub) and "omnibus:***@" in repr(pub)
        pub.publish(b"over SASL", key="k").result(timeout=30)
        got = sub.receive_batch(10, timeout=30)
        assert [(bytes(m.payload), m.key) for m in got] == [(b"over SASL", b"k")]
    wrong = base.replace(password, "not-the-password")
    with pytest.raises(omnibus.Unavailable) as info:
        omnibus.publisher(f"{wrong}/{topic}?connect_timeout_ms=3000")
    text = str(info.value)
    assert "SASL user 'omnibus' (PLAIN)" in text and "check the user, the password" in text
    assert "not-the-password" not in text and password not in text
    with pytest.raises(omnibus.InvalidArgument, match="security_protocol=plaintext sends none"):
        omnibus.publisher(f"{base}/{topic}?security_protocol=plaintext")
    with pytest.raises(omnibus.InvalidArgument, match="needs a user and password in the URL"):
        omnibus.publisher(f"kafka://127.0.0.1:{kafka_broker.ports['sasl']}/{topic}?security_protocol=sasl_plaintext")
    with pytest.raises(omnibus.InvalidArgument, match="tls_ca/tls_cert are given but security_protocol=sasl_plaintext"):
        omnibus.publisher(f"{base}/{topic}?security_protocol=sasl_plaintext&tls_ca=/nonexistent.pem")


def test_unknown_broker_is_unavailable_not_a_hang() -> None:
    # Port 1 on loopback: nothing listens there, and nothing leaves the machine.
    with pytest.raises(omnibus.Unavailable, match="no Kafka broker at 127.0.0.1:1"):
        omnibus.publisher("kafka://127.0.0.1:1/t?connect_timeout_ms=1500")
    with pytest.raises(omnibus.Unavailable):
        omnibus.subscriber("kafka://127.0.0.1:1/t?connect_timeout_ms=1500")


@pytest.mark.fault
def test_broker_killed_mid_stream_loses_no_acknowledged_message(kafka_broker: object, kafka_url: str) -> None:
    """acks=all + idempotence, broker SIGKILLed and restarted while publishing:
    every message whose delivery was confirmed is in the topic, none twice."""
    url = topic_url(kafka_url, acks="all", idempotence="true", delivery_timeout_ms=120000)
    confirmed: list[int] = []
    failed: list[int] = []
    stop = threading.Event()

    def produce() -> None:
        with omnibus.publisher(url) as pub:
            i = 0
            while not stop.is_set():
                batch = list(range(i, i + 100))
                d = pub.publish_many([str(x).encode() for x in batch])
                d.wait(timeout=180)
                bad = {idx for idx, _ in d.failures()}
                confirmed.extend(x for k, x in enumerate(batch) if k not in bad)
                failed.extend(x for k, x in enumerate(batch) if k in bad)
                i += 100

    t = threading.Thread(target=produce)
    t.start()
    try:
        assert wait_until(lambda: len(confirmed) >= 2000, timeout=60)
        kafka_broker.restart(kill=True)  # type: ignore[attr-defined]
        mark = len(confirmed)
        assert wait_until(lambda: len(confirmed) >= mark + 2000, timeout=180), "publishing did not resume"
    finally:
        stop.set()
        t.join(300)
    print(f"confirmed {len(confirmed)}, failed {len(failed)} across a SIGKILL restart")
    want = set(confirmed)
    with omnibus.subscriber(url, group="after-crash") as sub:
        seen = [int(bytes(m.payload)) for m in receive_from([sub], len(want), timeout=120)[0]]
        seen += [int(bytes(m.payload)) for m in sub.receive_batch(10000, timeout=1)]  # anything beyond
    assert want <= set(seen), f"{len(want - set(seen))} confirmed messages are missing"
    assert len(seen) == len(set(seen)), "idempotent publishing wrote duplicates"


def test_connection_state_follows_the_broker(kafka_broker: Any, kafka_url: str) -> None:
    """connected reads librdkafka's statistics (once a second): False while the broker is down."""
    url = topic_url(kafka_url)
    with omnibus.subscriber(url) as sub, omnibus.publisher(url) as pub:
        assert pub.connected is True and sub.connected is True
        kafka_broker.stop()
        try:
            assert wait_until(lambda: pub.connected is False and sub.connected is False, timeout=60)
        finally:
            kafka_broker.start()
        assert wait_until(lambda: pub.connected is True and sub.connected is True, timeout=120)
        pub.publish(b"back").result(timeout=60)
        assert bytes(sub.receive(timeout=60).payload) == b"back"
    with omnibus.publisher(url, **{"rdkafka.statistics.interval.ms": 0}) as quiet:
        assert quiet.connected is None  # statistics off: the driver cannot tell


def test_three_node_cluster_spreads_a_group_and_keeps_partition_order(kafka_cluster_url: str) -> None:
    """Against 3 brokers: a replicated topic, leaders on several nodes, a group of two sharing it."""
    url = topic_url(kafka_cluster_url, partitions=6, replication_factor=3, acks="all", group="cluster-group")
    n = 3000
    with omnibus.subscriber(url) as a, omnibus.subscriber(url) as b, omnibus.publisher(url) as pub:
        keys = [f"dev-{i % 40}".encode() for i in range(n)]
        pub.publish_many([str(i).encode() for i in range(n)], keys=keys).result(timeout=60)
        got = receive_from([a, b], n, timeout=120)
    assert sum(map(len, got)) == n and all(got), [len(g) for g in got]
    assert not ({m.key for m in got[0]} & {m.key for m in got[1]})  # a key lives on one member
    for msgs in got:
        for key in {m.key for m in msgs}:
            seq = [int(bytes(m.payload)) for m in msgs if m.key == key]
            assert seq == sorted(seq)


def test_close_wakes_receivers_on_other_threads_and_buffered_counts_the_queue(kafka_url: str) -> None:
    """receive_batch runs on the caller's thread (librdkafka's queue is the buffer): several threads
    take turns at it, close() from yet another thread ends their waits with Closed, and messages
    published while nobody receives are counted by `buffered` and handed out in order."""
    url = topic_url(kafka_url, group="turns")
    loops = int(os.environ.get("OMNIBUS_FAULT_LOOPS", "3"))
    for _ in range(loops):
        with omnibus.publisher(url) as pub:
            sub = omnibus.subscriber(url, auto_ack=False)
            try:
                pub.publish_many([f"m{i}".encode() for i in range(50)]).result(timeout=30)
                assert wait_until(lambda: sub.buffered >= 1, timeout=30)
                got = [m for _ in range(50) for m in [sub.receive(timeout=30)]]
                sub.ack(got)
                assert [bytes(m.payload) for m in got] == [f"m{i}".encode() for i in range(50)]
            except BaseException:
                sub.close()
                raise
            outcomes: list[str] = []

            def wait_for_more() -> None:
                try:
                    sub.receive(timeout=None)
                    outcomes.append("message")
                except omnibus.Closed:
                    outcomes.append("closed")

            waiters = [threading.Thread(target=wait_for_more) for _ in range(3)]
            for t in waiters:
                t.start()
            sub.close()
            for t in waiters:
                t.join(timeout=60)  # a guard against a hang, not a speed check
            assert not any(t.is_alive() for t in waiters)
            assert outcomes == ["closed"] * 3
            assert sub.buffered == 0
