#!/usr/bin/env python3
"""kafka:// publish throughput beside confluent-kafka, the usual Python client, in one run.

100-byte messages into a 1-partition topic, acks=1, linger 5 ms, on a Kafka
broker that omnibus starts on loopback (or OMNIBUS_KAFKA_URL). Each figure is
the median of --rounds; the ratio is what to read, the machine is shared.
Publishing counts as done when every delivery report is in (flush).

    python benchmarks/bench_kafka.py [--messages 500000] [--rounds 3]
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

TARGET = 300_000  # issue #4: publish_many, 1 partition, acks=1, linger 5 ms


@contextlib.contextmanager
def kafka_url() -> Iterator[str]:
    if os.environ.get("OMNIBUS_KAFKA_URL"):
        yield os.environ["OMNIBUS_KAFKA_URL"]
        return
    from omnibus.testing.brokers import Kafka

    with Kafka() as broker:
        yield broker.url


def omnibus_publish_many(base: str, n: int, size: int) -> float:
    url = f"{base}/bench-{uuid.uuid4().hex[:8]}?acks=1&linger_ms=5&max_pending={n}"
    values = [b"x" * size] * 1000
    with omnibus.publisher(url) as pub:
        pub.publish(b"warm-up").result(timeout=30)  # connection and topic ready before timing
        t0 = time.perf_counter()
        deliveries = [pub.publish_many(values) for _ in range(n // 1000)]
        pub.flush()
        elapsed = time.perf_counter() - t0
    failed = sum(len(d.failures()) for d in deliveries)
    if failed:
        raise omnibus.InternalError(f"{failed} messages failed in the benchmark")
    return (n // 1000) * 1000 / elapsed


def confluent_produce(base: str, n: int, size: int) -> float | None:
    try:
        from confluent_kafka import Producer
    except ImportError:
        return None
    topic = f"bench-peer-{uuid.uuid4().hex[:8]}"
    with omnibus.publisher(f"{base}/{topic}") as pub:  # creates the topic, 1 partition, like ours
        pub.publish(b"warm-up").result(timeout=30)
    bootstrap = base.split("://", 1)[1]
    p = Producer({"bootstrap.servers": bootstrap, "acks": "1", "linger.ms": 5,
                  "queue.buffering.max.messages": max(n, 100000)})
    payload = b"x" * size
    errors = 0

    def report(err: object, _msg: object) -> None:
        nonlocal errors
        errors += err is not None

    t0 = time.perf_counter()
    for _ in range(n):
        p.produce(topic, payload, on_delivery=report)
        p.poll(0)
    p.flush()
    elapsed = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{errors} peer messages failed")
    return n / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=500_000)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with kafka_url() as base:
        ours = [omnibus_publish_many(base, args.messages, args.size) for _ in range(args.rounds)]
        peer = [confluent_produce(base, args.messages, args.size) for _ in range(args.rounds)]
    med = statistics.median(ours)
    print(f"kafka:// {args.messages:,} x {args.size} B, 1 partition, acks=1, linger 5 ms, median of {args.rounds}")
    print(f"  omnibus publish_many x1000      {med:>12,.0f} msg/s  (target {TARGET:,}: {'ok' if med >= TARGET else 'BELOW'})")
    if peer[0] is None:
        print("  confluent-kafka                 not installed (pip install confluent-kafka): no peer figure")
    else:
        pmed = statistics.median(p for p in peer if p is not None)
        print(f"  confluent-kafka produce()+poll  {pmed:>12,.0f} msg/s")
        print(f"  omnibus / confluent-kafka       {med / pmed:>12.2f}x")


if __name__ == "__main__":
    main()
