#!/usr/bin/env python3
"""kafka:// publish and consume throughput beside confluent-kafka, the usual Python client, in one run.

Publish: 100-byte messages into a 1-partition topic, acks=1, linger 5 ms;
publishing counts as done when every delivery report is in (flush).
Consume: a backlog of --messages 100-byte messages in a 1-partition topic,
read from the start by a consumer group: omnibus receive_batch(1000) with
auto_ack on (acked at hand-over) and off (each batch acked by the loop) beside
confluent-kafka consume(num_messages=1000) with its default auto commit, and
again with queued.min.messages=1000000 (what omnibus sets: librdkafka idles up
to a second each time 100,000 messages are queued); the clock runs from the
first message to the last (the group join is not timed), and CPU is the whole
process's per message. Live: the same readers reading what another process
publishes while they read (so the figure is bounded by that producer).
On a Kafka broker that omnibus starts on loopback (or OMNIBUS_KAFKA_URL). Each
figure is the median of --rounds; the ratio is what to read, the machine is
shared.

    python benchmarks/bench_kafka.py [--messages 500000] [--rounds 3] [--only publish|consume]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

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


def backlog(base: str, n: int, size: int) -> str:
    topic = f"bench-backlog-{uuid.uuid4().hex[:8]}"
    with omnibus.publisher(f"{base}/{topic}?acks=1&linger_ms=5&max_pending={n}") as pub:
        deliveries = [pub.publish_many([b"x" * size] * 1000) for _ in range(n // 1000)]
        pub.flush()
    if sum(len(d.failures()) for d in deliveries):
        raise omnibus.InternalError("the backlog was not written")
    return topic


Figure = tuple[float, float]  # (msg/s, process CPU µs per message)


def omnibus_consume(base: str, topic: str, n: int, auto_ack: bool) -> Figure:
    url = f"{base}/{topic}?group=g-{uuid.uuid4().hex[:8]}"
    got = 0
    t0 = c0 = 0.0
    with omnibus.subscriber(url, auto_ack=auto_ack, prefetch=10000) as sub:
        while got < n:
            batch = sub.receive_batch(1000, timeout=30)
            if not batch:
                raise omnibus.Timeout(f"omnibus read {got} of {n} messages")
            if not got:
                t0, c0 = time.perf_counter(), time.process_time()
            if not auto_ack:
                sub.ack(batch)
            got += len(batch)
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    return got / elapsed, cpu / got * 1e6


def confluent_consume(base: str, topic: str, n: int, tuned: bool = False) -> Figure | None:
    try:
        from confluent_kafka import Consumer
    except ImportError:
        return None
    bootstrap = base.split("://", 1)[1]
    got = 0
    t0 = c0 = 0.0
    conf = {"bootstrap.servers": bootstrap, "group.id": f"g-{uuid.uuid4().hex[:8]}", "auto.offset.reset": "earliest"}
    if tuned:
        conf["queued.min.messages"] = 1_000_000
    c = Consumer(conf)
    try:
        c.subscribe([topic])
        while got < n:
            msgs = c.consume(num_messages=1000, timeout=30)
            if not msgs:
                raise TimeoutError(f"confluent-kafka read {got} of {n} messages")
            if not got:
                t0, c0 = time.perf_counter(), time.process_time()
            got += sum(1 for m in msgs if m.error() is None)
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        c.close()
    return got / elapsed, cpu / got * 1e6


def produce_in_child(base: str, topic: str, n: int, size: int) -> subprocess.Popen[bytes]:
    """Publishes n messages from another process (its own GIL and core), as a live stream."""
    code = (
        "import sys, omnibus\n"
        "url, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])\n"
        "with omnibus.publisher(url + '?acks=1&linger_ms=5&max_pending=' + str(n)) as pub:\n"
        "    ds = [pub.publish_many([b'x' * size] * 1000) for _ in range(n // 1000)]\n"
        "    pub.flush()\n"
        "sys.exit(1 if sum(len(d.failures()) for d in ds) else 0)\n"
    )
    return subprocess.Popen([sys.executable, "-c", code, f"{base}/{topic}", str(n), str(size)])


def live_topic(base: str) -> str:
    topic = f"bench-live-{uuid.uuid4().hex[:8]}"
    with omnibus.publisher(f"{base}/{topic}") as pub:  # created (1 partition) before anyone subscribes
        pub.publish(b"warm-up").result(timeout=30)
    return topic


def omnibus_live(base: str, n: int, size: int, auto_ack: bool) -> float:
    """A live stream: subscribed first, then n messages are published by another process;
    the clock runs from the first message to the last."""
    topic = live_topic(base)
    url = f"{base}/{topic}?group=g-{uuid.uuid4().hex[:8]}&offset_reset=latest"
    got = 0
    with omnibus.subscriber(url, auto_ack=auto_ack, prefetch=10000) as sub:
        child = produce_in_child(base, topic, n, size)
        try:
            t0 = None
            while got < n:
                batch = sub.receive_batch(1000, timeout=30)
                if not batch:
                    raise omnibus.Timeout(f"omnibus read {got} of {n} live messages")
                if t0 is None:
                    t0 = time.perf_counter()
                if not auto_ack:
                    sub.ack(batch)
                got += len(batch)
            elapsed = time.perf_counter() - t0
        finally:
            if child.wait(timeout=60):
                raise omnibus.InternalError("the live producer failed")
    return got / elapsed


def confluent_live(base: str, n: int, size: int) -> float | None:
    try:
        from confluent_kafka import Consumer
    except ImportError:
        return None
    topic = live_topic(base)
    bootstrap = base.split("://", 1)[1]
    assigned = []
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g-{uuid.uuid4().hex[:8]}",
                  "auto.offset.reset": "latest"})
    try:
        c.subscribe([topic], on_assign=lambda _c, parts: assigned.extend(parts))
        deadline = time.monotonic() + 30
        while not assigned and time.monotonic() < deadline:  # as omnibus's open() does
            c.consume(num_messages=1, timeout=0.1)
        child = produce_in_child(base, topic, n, size)
        got = 0
        t0 = None
        try:
            while got < n:
                msgs = c.consume(num_messages=1000, timeout=30)
                if not msgs:
                    raise TimeoutError(f"confluent-kafka read {got} of {n} live messages")
                if t0 is None:
                    t0 = time.perf_counter()
                got += sum(1 for m in msgs if m.error() is None)
            elapsed = time.perf_counter() - t0
        finally:
            if child.wait(timeout=60):
                raise RuntimeError("the live producer failed")
    finally:
        c.close()
    return got / elapsed


def print_rows(title: str, rows: dict[str, list[Any]]) -> None:
    """Medians and ratios to the first confluent-kafka row; a figure is msg/s or (msg/s, CPU µs/msg)."""
    print(title)
    peer = next((statistics.median(_rate(f) for f in v) for k, v in rows.items() if k.startswith("confluent") and v),
                None)
    for name, figures in rows.items():
        if not figures:
            print(f"  {name:<40}  not installed (pip install confluent-kafka): no peer figure")
            continue
        med = statistics.median(_rate(f) for f in figures)
        cpu = f"{statistics.median(f[1] for f in figures):>7.2f} µs CPU/msg" if isinstance(figures[0], tuple) else ""
        ratio = f"  {med / peer:.2f}x confluent-kafka" if peer and not name.startswith("confluent") else ""
        print(f"  {name:<40}{med:>12,.0f} msg/s{cpu}{ratio}")


def _rate(figure: Any) -> float:
    return float(figure[0] if isinstance(figure, tuple) else figure)


def live_section(base: str, args: argparse.Namespace) -> None:
    n = args.messages
    rows: dict[str, list[Any]] = {"omnibus auto_ack": [], "omnibus ack per batch": [], "confluent-kafka": []}
    for _ in range(args.rounds):
        rows["omnibus auto_ack"].append(omnibus_live(base, n, args.size, True))
        rows["omnibus ack per batch"].append(omnibus_live(base, n, args.size, False))
        peer = confluent_live(base, n, args.size)
        if peer is not None:
            rows["confluent-kafka"].append(peer)
    print_rows(f"kafka:// consume a live stream of {n:,} x {args.size} B published by another process, "
               f"1 partition, group, batches of 1000, median of {args.rounds} (bounded by the producer)", rows)


def consume_section(base: str, args: argparse.Namespace) -> None:
    n = args.messages
    topic = backlog(base, n, args.size)
    tuned = "confluent-kafka queued.min.messages=1M"
    rows: dict[str, list[Any]] = {"omnibus auto_ack": [], "omnibus ack per batch": [], "confluent-kafka": [],
                                  tuned: []}
    for _ in range(args.rounds):  # interleaved, so that a noisy moment hits all of them
        rows["omnibus auto_ack"].append(omnibus_consume(base, topic, n, True))
        rows["omnibus ack per batch"].append(omnibus_consume(base, topic, n, False))
        for name, tune in (("confluent-kafka", False), (tuned, True)):
            peer = confluent_consume(base, topic, n, tune)
            if peer is not None:
                rows[name].append(peer)
    print_rows(f"kafka:// consume a backlog of {n:,} x {args.size} B, 1 partition, group from earliest, "
               f"batches of 1000, median of {args.rounds}", rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=500_000)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", choices=["publish", "consume"])
    args = ap.parse_args()
    with kafka_url() as base:
        if args.only != "publish":
            consume_section(base, args)
            live_section(base, args)
        if args.only == "consume":
            return
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
