"""pulsar:// beyond the conformance suite: the loopback broker itself, URL forms, the driver without its
wheel, dead-lettering, interop both ways with the pulsar-client Python package, and a broker SIGKILL."""

from __future__ import annotations


import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import omnibus
from omnibus.testing import wait_until

if "pulsar" in omnibus.unavailable_drivers():
    pytest.skip(f"pulsar:// is not in this build: {omnibus.unavailable_drivers()['pulsar']}", allow_module_level=True)


def name() -> str:
    return f"p-{uuid.uuid4().hex[:10]}"


def _listening(pid: int) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket process `pid` listens on, from /proc."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    out = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            f = line.split()
            if f[3] == "0A" and f[9] in inodes:  # LISTEN
                addr, port = f[1].split(":")
                if table == "tcp":
                    ip = ".".join(str(int(addr[i : i + 2], 16)) for i in (6, 4, 2, 0))
                else:
                    ip = addr  # shown raw: any IPv6 listener is a failure below
                out.append((ip, int(port, 16)))
    return out


def test_broker_listens_on_loopback_only(pulsar_broker: Any) -> None:
    sockets = _listening(pulsar_broker.pid)
    ports = {p for _, p in sockets}
    # The binary protocol, the HTTP admin (and WebSocket) port, and the in-process bookie's.
    assert {pulsar_broker.ports["port"], pulsar_broker.ports["web"]} <= ports
    assert len(sockets) >= 3, sockets
    assert all(ip == "127.0.0.1" for ip, _ in sockets), sockets


def test_url_forms(pulsar_url: str) -> None:
    topic = name()
    for url in (f"{pulsar_url}/{topic}", f"{pulsar_url}/public/default/{topic}",
                f"{pulsar_url}/persistent://public/default/{topic}"):
        with omnibus.subscriber(url) as sub, omnibus.publisher(f"{pulsar_url}/{topic}") as pub:
            pub.publish(b"x").result(timeout=10)
            assert bytes(sub.receive(timeout=10).payload) == b"x"
    for bad in (f"{pulsar_url}/a/b", f"{pulsar_url}/", f"{pulsar_url}/ftp://a/b/c"):
        with pytest.raises(omnibus.InvalidArgument, match="tenant/namespace"):
            omnibus.publisher(bad)
    with pytest.raises(omnibus.InvalidArgument, match="ack_timeout_ms"):
        omnibus.subscriber(f"{pulsar_url}/{topic}?ack_timeout_ms=200")
    with pytest.raises(omnibus.InvalidArgument, match="shared"):
        omnibus.subscriber(f"{pulsar_url}/{topic}?max_redeliver=2")  # no group: exclusive


def test_without_libpulsar_the_driver_is_unavailable_with_the_reason() -> None:
    code = ("import omnibus, sys\n"
            "why = omnibus.unavailable_drivers()['pulsar']\n"
            "try:\n    omnibus.publisher('pulsar://127.0.0.1:1/t')\nexcept omnibus.Unsupported as e:\n"
            "    print(why); print(e)\n")
    env = {**os.environ, "OMNIBUS_LIBPULSAR": "/nonexistent/libpulsar.so"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    why, err = out.stdout.splitlines()[:2]
    assert "dlopen of libpulsar failed" in why and "/nonexistent/libpulsar.so" in why
    assert "pulsar://" in err and "dlopen" in err


def test_key_and_headers_round_trip_with_repeats_and_bytes(pulsar_url: str) -> None:
    url = f"{pulsar_url}/{name()}"
    headers = [("z", b"1"), ("a", b"2"), ("a", b"3"), ("bin", b"\x00\xff")]
    with omnibus.subscriber(url) as sub, omnibus.publisher(url) as pub:
        pub.publish(b"p", key=b"\x00key", headers=headers, timestamp_ms=1234567).result(timeout=10)
        msg = sub.receive(timeout=10)
    assert msg.key == b"\x00key" and msg.headers == headers and msg.timestamp_ms == 1234567


def test_dead_letter_after_max_redeliver(pulsar_url: str) -> None:
    topic, dlq = name(), name()
    url = f"{pulsar_url}/{topic}?group=workers&nack_redelivery_delay_ms=100&max_redeliver=2&dead_letter_topic={dlq}"
    with omnibus.subscriber(f"{pulsar_url}/{dlq}?group=audit") as dead, \
            omnibus.subscriber(url, auto_ack=False) as sub, omnibus.publisher(f"{pulsar_url}/{topic}") as pub:
        assert sub.capabilities()["dead_letter"]
        pub.publish(b"poison", headers=[("h", b"v")]).result(timeout=10)
        attempts = []
        for _ in range(3):  # the first delivery and max_redeliver=2 redeliveries
            msg = sub.receive(timeout=10)
            attempts.append(msg.delivery_attempt)
            msg.nack()
        assert attempts == [1, 2, 3]
        gone = dead.receive(timeout=20)
        assert bytes(gone.payload) == b"poison" and ("h", b"v") in gone.headers
        assert sub.receive_batch(10, timeout=0.5) == []


def test_partitioned_topic_and_key_shared_subscription(pulsar_broker: Any) -> None:
    """A topic of 4 partitions (made through the admin API): keys route to partitions, and with
    subscription_type=key_shared each key goes to one of the two consumers."""
    import urllib.request

    topic = name()
    req = urllib.request.Request(f"{pulsar_broker.web_url}/admin/v2/persistent/public/default/{topic}/partitions",
                                 data=b"4", method="PUT", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310 - loopback only
        assert r.status in (200, 204)
    url = f"{pulsar_broker.url}/{topic}"
    n = 400
    keys = [f"k{i % 20}".encode() for i in range(n)]
    sub_url = f"{url}?group=ks&subscription_type=key_shared"
    # Without batching: libpulsar's default batches mix keys, and the broker hands a whole batch to
    # the consumer of its first key (so under ASan, where batches fill up, keys reached both).
    with omnibus.subscriber(sub_url) as a, omnibus.subscriber(sub_url) as b, \
            omnibus.publisher(f"{url}?batching=false") as pub:
        pub.publish_many([str(i).encode() for i in range(n)], keys=keys).result(timeout=10)
        got: list[list[Any]] = [[], []]

        def step() -> bool:
            for i, sub in enumerate((a, b)):
                got[i].extend(sub.receive_batch(1000, timeout=0.05))
            return len(got[0]) + len(got[1]) >= n

        assert wait_until(step, timeout=30, interval=0)
    assert sorted(int(bytes(m.payload)) for m in got[0] + got[1]) == list(range(n))
    keys_a, keys_b = ({m.key for m in g} for g in got)
    assert not keys_a & keys_b, f"keys at both consumers: {sorted(keys_a & keys_b)}"
    for g in got:  # per key, in publish order
        for k in {m.key for m in g}:
            seq = [int(bytes(m.payload)) for m in g if m.key == k]
            assert seq == sorted(seq)


# ---- interop with the pulsar-client package ----------------------------------------

@pytest.fixture
def client(pulsar_url: str) -> Iterator[Any]:
    pulsar = pytest.importorskip("pulsar")
    c = pulsar.Client(pulsar_url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
    try:
        yield c
    finally:
        c.close()


def test_pulsar_client_reads_what_omnibus_writes(pulsar_url: str, client: Any) -> None:
    topic = name()
    consumer = client.subscribe(f"persistent://public/default/{topic}", "peer")
    try:
        with omnibus.publisher(f"{pulsar_url}/{topic}") as pub:
            pub.publish(b"from omnibus", key=b"dev-1", headers=[("site", b"p1"), ("unit", b"C")],
                        timestamp_ms=1700000000123).result(timeout=10)
        msg = consumer.receive(timeout_millis=10000)
        consumer.acknowledge(msg)
    finally:
        consumer.close()
    assert msg.data() == b"from omnibus" and msg.partition_key() == "dev-1"
    assert msg.properties() == {"site": "p1", "unit": "C"}
    assert msg.event_timestamp() == 1700000000123


def test_omnibus_reads_what_pulsar_client_writes(pulsar_url: str, client: Any) -> None:
    topic = name()
    with omnibus.subscriber(f"{pulsar_url}/{topic}") as sub:
        producer = client.create_producer(f"persistent://public/default/{topic}")
        try:
            producer.send(b"from pulsar-client", partition_key="dev-2", properties={"b": "2", "a": "1"},
                          event_timestamp=1700000000456)
        finally:
            producer.close()
        msg = sub.receive(timeout=10)
    assert bytes(msg.payload) == b"from pulsar-client" and msg.key == b"dev-2"
    assert msg.headers == [("a", b"1"), ("b", b"2")]  # a property map: name order
    assert msg.timestamp_ms == 1700000000456


def test_bridge_with_pulsar_on_either_side(pulsar_url: str) -> None:
    """pulsar:// -> mem:// and mem:// -> pulsar://, keys and headers carried, at-least-once both ways."""
    src, dst = name(), name()
    n = 200
    values = [str(i).encode() for i in range(n)]
    keys = [f"k{i % 7}".encode() for i in range(n)]
    with omnibus.subscriber(f"mem://out-{src}") as out, omnibus.subscriber(f"{pulsar_url}/{dst}") as back, \
            omnibus.bridge(f"{pulsar_url}/{src}?group=bridge", f"mem://out-{src}") as there, \
            omnibus.bridge(f"mem://in-{dst}", f"{pulsar_url}/{dst}") as home:
        assert there.delivery_guarantee == home.delivery_guarantee == "at-least-once"
        with omnibus.publisher(f"{pulsar_url}/{src}") as pub:
            pub.publish_many(values, keys=keys, headers=[[("h", b"v")]] * n).result(timeout=10)
        got = []
        assert wait_until(lambda: got.extend(out.receive_batch(1000, timeout=0.1)) or len(got) >= n, timeout=30)
        assert sorted(bytes(m.payload) for m in got) == sorted(values)
        assert all(m.key == f"k{int(bytes(m.payload)) % 7}".encode() for m in got)
        assert all(("h", b"v") in m.headers for m in got)
        with omnibus.publisher(f"mem://in-{dst}") as pub:
            pub.publish_many(values, keys=keys).result(timeout=10)
        home_got = []
        assert wait_until(lambda: home_got.extend(back.receive_batch(1000, timeout=0.1)) or len(home_got) >= n,
                          timeout=30)
        assert sorted(bytes(m.payload) for m in home_got) == sorted(values)
        assert all(m.key == f"k{int(bytes(m.payload)) % 7}".encode() for m in home_got)


# ---- broker SIGKILL -----------------------------------------------------------------

@pytest.mark.fault
def test_every_confirmed_message_survives_a_broker_sigkill(pulsar_broker: Any) -> None:
    """libpulsar resends what the crash left unconfirmed once the broker is back; whatever was
    confirmed is in the bookie's journal. The group subscription, made before, receives all of it."""
    topic = name()
    url = f"{pulsar_broker.url}/{topic}"
    n, batch = 20000, 500
    deliveries: list[Any] = []
    with omnibus.subscriber(f"{url}?group=g", prefetch=20000) as sub, \
            omnibus.publisher(url, batch_messages=batch, send_timeout_ms=120000) as pub:
        killed_at = None
        for start in range(0, n, batch):
            deliveries.append(pub.publish_many([str(i).encode() for i in range(start, start + batch)]))
            if start // batch == 5:
                assert wait_until(deliveries[0].done, timeout=30)
                pulsar_broker.kill()
                killed_at = start
            if killed_at is not None and start // batch == 8:
                pulsar_broker.restart(kill=True)  # from this thread: the broker dies with its spawning thread
        assert killed_at is not None
        assert pub.flush(timeout=120)
        confirmed = {str(start + i).encode() for start, d in zip(range(0, n, batch), deliveries)
                     for i in range(batch) if i not in {j for j, _ in d.failures()}}
        assert len(confirmed) > n // 2, f"only {len(confirmed)} of {n} confirmed"
        got: set[bytes] = set()

        def step() -> bool:
            got.update(bytes(m.payload) for m in sub.receive_batch(5000, timeout=0.2))
            return confirmed <= got

        assert wait_until(step, timeout=120, interval=0), f"{len(confirmed - got)} confirmed messages never arrived"
