#!/usr/bin/env python3
"""mqtt:// subscribe throughput beside paho-mqtt's callback loop, in one run.

Each round first fills a persistent session (QoS 1, MQTT 5, a fixed client id) with N messages
of 100 bytes while its subscriber is away, then times how fast a subscriber drains it: omnibus
receive_batch() with auto_ack, omnibus with auto_ack=False and ack() per batch (the at-least-once
way to consume once the subscriber holds PUBACKs back until ack), and paho-mqtt's on_message
callback (its loop acks on arrival). Timing starts before connecting, for both clients. The same
Mosquitto (omnibus starts one on loopback, or OMNIBUS_MQTT_URL), the same messages. Each figure
is the median of --rounds; read the ratios, the machine is shared.

    python benchmarks/bench_mqtt_subscribe.py [--messages 100000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import threading
import time
import uuid
from collections.abc import Iterator

import omnibus


@contextlib.contextmanager
def mqtt_url() -> Iterator[str]:
    if os.environ.get("OMNIBUS_MQTT_URL"):
        yield os.environ["OMNIBUS_MQTT_URL"]
        return
    from omnibus.testing.brokers import Mosquitto

    with Mosquitto() as broker:
        yield broker.url


def fill(base: str, topic: str, n: int, size: int) -> None:
    with omnibus.publisher(f"{base}/{topic}?qos=1&max_pending={n}") as pub:
        values = [b"x" * size] * 1000
        deliveries = [pub.publish_many(values) for _ in range(n // 1000)]
        pub.flush()
    failed = sum(len(d.failures()) for d in deliveries)
    if failed:
        raise omnibus.InternalError(f"{failed} messages failed while filling the session")


def omnibus_drain(base: str, n: int, size: int, manual: bool) -> float:
    topic = f"bench/sub-{uuid.uuid4().hex[:8]}"
    client_id = f"bench-{uuid.uuid4().hex[:8]}"
    url = f"{base}/{topic}?qos=1&client_id={client_id}&clean_session=false"
    with omnibus.subscriber(url):
        pass  # the session and its subscription exist from here on
    fill(base, topic, n, size)
    got = 0
    t0 = time.perf_counter()  # from connecting, as for paho-mqtt below
    with omnibus.subscriber(url, auto_ack=not manual) as sub:
        while got < n:
            batch = sub.receive_batch(5000, timeout=30)
            if not batch:
                raise omnibus.Timeout(f"omnibus received {got:,} of {n:,}")
            got += len(batch)
            if manual:
                sub.ack(batch)
        elapsed = time.perf_counter() - t0
    with omnibus.subscriber(url.replace("clean_session=false", "clean_session=true")):
        pass  # ends the session
    return n / elapsed


def paho_drain(base: str, n: int, size: int) -> float | None:
    try:
        import paho.mqtt.client as mqtt
    except ImportError:
        return None
    host, port = base.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)
    topic = f"bench/peer-{uuid.uuid4().hex[:8]}"
    client_id = f"peer-{uuid.uuid4().hex[:8]}"

    def client() -> mqtt.Client:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        return c

    props = mqtt.Properties(mqtt.PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    first = client()
    first.connect(host, int(port), clean_start=True, properties=props)
    first.subscribe(topic, qos=1)
    first.loop(2.0)  # CONNACK, SUBACK
    first.disconnect()
    fill(base, topic, n, size)

    done = threading.Event()
    count = 0

    def on_message(c: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        nonlocal count
        count += 1
        if count == n:
            done.set()

    c = client()
    c.on_message = on_message
    start = time.perf_counter()
    c.connect(host, int(port), clean_start=False, properties=props)
    c.loop_start()
    try:
        if not done.wait(300):
            raise RuntimeError(f"paho-mqtt received {count:,} of {n:,}")
        elapsed = time.perf_counter() - start
    finally:
        c.loop_stop()
        c.disconnect()
    end = client()
    end.connect(host, int(port), clean_start=True)
    end.disconnect()
    return n / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    n = args.messages // 1000 * 1000
    with mqtt_url() as base:
        print(f"mqtt:// subscribe: drain {n:,} x {args.size} B from a persistent QoS 1 session, MQTT 5, "
              f"median of {args.rounds}")
        auto = statistics.median(omnibus_drain(base, n, args.size, False) for _ in range(args.rounds))
        manual = statistics.median(omnibus_drain(base, n, args.size, True) for _ in range(args.rounds))
        peer_runs = [paho_drain(base, n, args.size) for _ in range(args.rounds)]
        print(f"  omnibus receive_batch, auto_ack        {auto:>12,.0f} msg/s")
        print(f"  omnibus receive_batch + ack() (manual) {manual:>12,.0f} msg/s")
        if peer_runs[0] is None:
            print("  paho-mqtt not installed (pip install paho-mqtt): no peer figure")
            return
        peer = statistics.median(p for p in peer_runs if p is not None)
        print(f"  paho-mqtt on_message                   {peer:>12,.0f} msg/s")
        print(f"  omnibus auto_ack / paho-mqtt           {auto / peer:>12.2f}x")
        print(f"  omnibus manual ack / paho-mqtt         {manual / peer:>12.2f}x")


if __name__ == "__main__":
    main()
