#!/usr/bin/env python3
"""mqtt:// publish throughput beside paho-mqtt, the usual Python client, in one run.

100-byte messages to one topic on a Mosquitto that omnibus starts on loopback (or
OMNIBUS_MQTT_URL), MQTT 5, QoS 0 and QoS 1. Publishing counts as done when every message's
result is in: for QoS 1 the broker's PUBACK, for QoS 0 the write to the socket (omnibus flush();
for paho-mqtt, wait_for_publish() of the last message). Each figure is the median of --rounds;
read the ratio, the machine is shared.

    python benchmarks/bench_mqtt.py [--messages 200000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
import uuid
from collections.abc import Iterator

import omnibus

TARGETS = {0: 80_000, 1: 30_000}  # issue #4: publish_many, QoS 0 and QoS 1


@contextlib.contextmanager
def mqtt_url() -> Iterator[str]:
    if os.environ.get("OMNIBUS_MQTT_URL"):
        yield os.environ["OMNIBUS_MQTT_URL"]
        return
    from omnibus.testing.brokers import Mosquitto

    with Mosquitto() as broker:
        yield broker.url


def omnibus_publish_many(base: str, n: int, size: int, qos: int) -> float:
    url = f"{base}/bench/{uuid.uuid4().hex[:8]}?qos={qos}&max_pending={n}"
    values = [b"x" * size] * 1000
    with omnibus.publisher(url) as pub:
        pub.publish(b"warm-up").result(timeout=30)  # connected before timing
        t0 = time.perf_counter()
        deliveries = [pub.publish_many(values) for _ in range(n // 1000)]
        pub.flush()
        elapsed = time.perf_counter() - t0
    failed = sum(len(d.failures()) for d in deliveries)
    if failed:
        raise omnibus.InternalError(f"{failed} messages failed in the benchmark")
    return (n // 1000) * 1000 / elapsed


def paho_publish(base: str, n: int, size: int, qos: int) -> float | None:
    try:
        import paho.mqtt.client as mqtt
    except ImportError:
        return None
    host, port = base.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(1000)  # paho's default of 20 would measure round trips, not the client
    client.max_queued_messages_set(0)
    client.connect(host, int(port))
    client.loop_start()
    try:
        topic = f"bench/peer-{uuid.uuid4().hex[:8]}"
        client.publish(topic, b"warm-up", qos=1).wait_for_publish(30)
        payload = b"x" * size
        # paho numbers outstanding messages with 16-bit ids: keep at most 10,000 queued at once.
        failed = 0
        t0 = time.perf_counter()
        for start in range(0, n, 10_000):
            infos = [client.publish(topic, payload, qos=qos) for _ in range(min(10_000, n - start))]
            for info in infos if qos else infos[-1:]:
                info.wait_for_publish(60)
            failed += sum(1 for i in infos if i.rc != mqtt.MQTT_ERR_SUCCESS)
        elapsed = time.perf_counter() - t0
        if failed:
            raise RuntimeError(f"{failed} peer messages failed")
        return n / elapsed
    finally:
        client.loop_stop()
        client.disconnect()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with mqtt_url() as base:
        print(f"mqtt:// {args.messages:,} x {args.size} B, MQTT 5, one topic, median of {args.rounds}")
        for qos in (0, 1):
            ours = [omnibus_publish_many(base, args.messages, args.size, qos) for _ in range(args.rounds)]
            peer = [paho_publish(base, args.messages, args.size, qos) for _ in range(args.rounds)]
            med = statistics.median(ours)
            target = TARGETS[qos]
            print(f"  QoS {qos} omnibus publish_many x1000  {med:>12,.0f} msg/s  "
                  f"(target {target:,}: {'ok' if med >= target else 'BELOW'})")
            if peer[0] is None:
                print("  paho-mqtt not installed (pip install paho-mqtt): no peer figure")
                continue
            pmed = statistics.median(p for p in peer if p is not None)
            print(f"  QoS {qos} paho-mqtt publish()          {pmed:>12,.0f} msg/s")
            print(f"  QoS {qos} omnibus / paho-mqtt          {med / pmed:>12.2f}x")


if __name__ == "__main__":
    main()
