#!/usr/bin/env python3
"""omnibus.bridge MQTT (QoS 1) into Kafka (acks=1) beside the usual hand-glued Python bridge, in one run.

100-byte readings wait in a persistent MQTT session on a Mosquitto that omnibus starts on loopback
(with a Kafka broker), one session per contender; each contender then drains its session into a
Kafka topic of its own, and the figure is readings confirmed by Kafka per second, from start to the
last delivery report:

- omnibus.bridge, identity (no transform): the engine's threads only;
- omnibus.bridge with a Python transform (called once per batch) beside it;
- paho-mqtt + confluent-kafka glued together (on_message -> Producer.produce, delivery callbacks
  counted), the way such a bridge is usually written in Python.

Read the ratios, the machine is shared.

    python benchmarks/bench_bridge.py [--messages 100000]
"""

from __future__ import annotations

import argparse
import threading
import time
import uuid
import warnings
from typing import Any, Optional

import omnibus
from omnibus.bench import local_brokers

TARGET = 30_000  # issue 7: identity transform, MQTT QoS 1 into Kafka acks=1


def session(mqtt_url: str, topic: str, client_id: str) -> str:
    return f"{mqtt_url}/{topic}?qos=1&version=5&clean_session=false&client_id={client_id}&prefetch=50000"


def preload(mqtt_url: str, topic: str, n: int, size: int) -> None:
    with omnibus.publisher(f"{mqtt_url}/{topic}?qos=1&version=5&max_pending={n}") as pub:
        d = pub.publish_many([b"r" * size] * n)
        assert pub.flush(timeout=600)
    if d.failures():
        raise omnibus.InternalError(f"{len(d.failures())} readings failed to reach Mosquitto")


def run_omnibus(source: str, sink: str, n: int, transform: Optional[omnibus.Transform]) -> float:
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", omnibus.DeliveryGuaranteeWarning)  # MQTT acks on arrival; said in the README
        b = omnibus.bridge(source, sink, transform=transform, batch=2000, max_in_flight=50000)
    with b:
        while b.stats.published < n:
            if b.failed:
                raise omnibus.InternalError(b.last_error)
            time.sleep(0.001)
        elapsed = time.perf_counter() - t0
    return n / elapsed


def run_glue(mqtt_url: str, client_id: str, topic: str, kafka_url: str, kafka_topic: str, n: int) -> Optional[float]:
    try:
        import paho.mqtt.client as mqtt
        from confluent_kafka import Producer
    except ImportError:
        return None
    host, port = mqtt_url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)
    bootstrap = kafka_url.split("://", 1)[1].split("/", 1)[0]
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "1", "linger.ms": 5})
    delivered = [0]
    done = threading.Event()

    def on_delivery(err: Any, msg: Any) -> None:
        if err is None:
            delivered[0] += 1
            if delivered[0] >= n:
                done.set()

    def on_message(client: Any, userdata: Any, msg: Any) -> None:
        while True:
            try:
                producer.produce(kafka_topic, msg.payload, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.on_message = on_message
    t0 = time.perf_counter()
    client.connect(host, int(port), clean_start=False)
    client.subscribe(topic, qos=1)
    client.loop_start()
    while not done.is_set():
        producer.poll(0.05)
    elapsed = time.perf_counter() - t0
    client.loop_stop()
    client.disconnect()
    producer.flush(30)
    return n / elapsed


def python_identity(msgs: list[omnibus.Message]) -> list[omnibus.Message]:
    return msgs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=100)
    args = parser.parse_args()
    n, tag = args.messages, uuid.uuid4().hex[:8]
    topic = f"bench/{tag}/dev"
    with local_brokers(["mqtt", "kafka"]) as (urls, _):
        mqtt_url, kafka_url = urls["mqtt"], urls["kafka"]
        ids = {name: f"{name}-{tag}" for name in ("identity", "python", "glue")}
        # Register the three persistent sessions, then fill them.
        for cid in ids.values():
            with omnibus.subscriber(session(mqtt_url, topic, cid)):
                pass
        preload(mqtt_url, topic, n, args.size)
        print(f"{n:,} readings of {args.size} bytes queued for each contender; MQTT QoS 1 -> Kafka acks=1")
        identity = run_omnibus(session(mqtt_url, topic, ids["identity"]), f"{kafka_url}/b-id-{tag}?acks=1", n, None)
        python = run_omnibus(session(mqtt_url, topic, ids["python"]), f"{kafka_url}/b-py-{tag}?acks=1", n,
                             python_identity)
        glue = run_glue(mqtt_url, ids["glue"], topic, kafka_url, f"b-glue-{tag}", n)
    print(f"  omnibus.bridge (identity)          {identity:>10,.0f} msg/s  (target {TARGET:,})")
    print(f"  omnibus.bridge (Python transform)  {python:>10,.0f} msg/s")
    if glue is None:
        print("  paho-mqtt + confluent-kafka        not installed")
    else:
        print(f"  paho-mqtt + confluent-kafka glue   {glue:>10,.0f} msg/s")
        print(f"  omnibus identity vs glue: {identity / glue:.2f}x; with a Python transform: {python / glue:.2f}x")


if __name__ == "__main__":
    main()
