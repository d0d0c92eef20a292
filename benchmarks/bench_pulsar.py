#!/usr/bin/env python3
"""pulsar:// beside the pulsar-client Python package (the same libpulsar underneath), in one run.

100-byte messages on a Pulsar standalone that omnibus starts on loopback (or
OMNIBUS_PULSAR_URL), each figure the median of --rounds:

- publish: omnibus publish_many (batches of --batch) against pulsar-client's
  send_async with batching on, one call and one callback per message, then
  flush(); a message counts when its send result came (the issue asks for
  omnibus >= 2x);
- receive: --messages already on a topic (one topic per reader, the same
  messages), read by a new subscription from the earliest: omnibus
  receive_batch (auto_ack) against pulsar-client's receive() loop with
  acknowledge() per message (the issue asks for omnibus >= 2x). omnibus runs
  twice: with its default batch_index_ack=true (a nack redelivers just that
  message) and with false, pulsar-client's default, which costs about half.

Which client goes first alternates by round.

Read the ratios: the machine is shared and the broker runs on it too.

    python benchmarks/bench_pulsar.py [--messages 200000] [--rounds 3] [--batch 1000]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
import uuid
from collections.abc import Iterator
from typing import Any

import omnibus


@contextlib.contextmanager
def pulsar_url() -> Iterator[str]:
    if os.environ.get("OMNIBUS_PULSAR_URL"):
        yield os.environ["OMNIBUS_PULSAR_URL"].rstrip("/")
        return
    from omnibus.testing.brokers import Pulsar

    with Pulsar() as broker:
        yield broker.url


def _topic() -> str:
    return f"bench-{uuid.uuid4().hex[:8]}"


def omnibus_publish(base: str, n: int, size: int, batch: int) -> float:
    values = [b"x" * size] * batch
    with omnibus.publisher(f"{base}/{_topic()}", batch_messages=batch, max_pending=n) as pub:
        pub.publish(b"warm-up").result(timeout=30)
        t0 = time.perf_counter()
        deliveries = [pub.publish_many(values) for _ in range(n // batch)]
        pub.flush(timeout=300)
        elapsed = time.perf_counter() - t0
    failed = sum(len(d.failures()) for d in deliveries)
    if failed:
        raise omnibus.InternalError(f"{failed} messages failed in the benchmark")
    return (n // batch) * batch / elapsed


def _client(base: str) -> Any:
    import pulsar

    return pulsar.Client(base, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))


def peer_publish(base: str, n: int, size: int) -> float:
    import pulsar

    client = _client(base)
    try:
        producer = client.create_producer(f"persistent://public/default/{_topic()}", batching_enabled=True,
                                          batching_max_publish_delay_ms=1, block_if_queue_full=True,
                                          max_pending_messages=10000)
        producer.send(b"warm-up")
        results: list[Any] = []
        payload = b"x" * size
        t0 = time.perf_counter()
        for _ in range(n):
            producer.send_async(payload, lambda res, _id: results.append(res))
        producer.flush()
        while len(results) < n:
            time.sleep(0.001)
        elapsed = time.perf_counter() - t0
        producer.close()
        bad = sum(r != pulsar.Result.Ok for r in results)
        if bad:
            raise RuntimeError(f"{bad} pulsar-client sends failed")
        return n / elapsed
    finally:
        client.close()


def fill(base: str, n: int, size: int, batch: int) -> str:
    topic = _topic()
    with omnibus.publisher(f"{base}/{topic}", batch_messages=batch, max_pending=n) as pub:
        values = [b"x" * size] * batch
        for _ in range(n // batch):
            pub.publish_many(values)
        if not pub.flush(timeout=300):
            raise omnibus.Timeout("filling the topic did not finish")
    return topic


def omnibus_receive(base: str, topic: str, n: int, batch_index_ack: bool = True) -> float:
    got = 0
    with omnibus.subscriber(f"{base}/{topic}?group=g-{uuid.uuid4().hex[:6]}&offset_reset=earliest",
                            prefetch=10000, batch_index_ack=batch_index_ack) as sub:
        t0 = time.perf_counter()
        while got < n:
            got += len(sub.receive_batch(5000, timeout=10))
        elapsed = time.perf_counter() - t0
    return got / elapsed


def peer_receive(base: str, topic: str, n: int) -> float:
    import pulsar

    client = _client(base)
    try:
        consumer = client.subscribe(f"persistent://public/default/{topic}", f"peer-{uuid.uuid4().hex[:6]}",
                                    consumer_type=pulsar.ConsumerType.Shared,
                                    initial_position=pulsar.InitialPosition.Earliest)
        got = 0
        t0 = time.perf_counter()
        while got < n:
            msg = consumer.receive(timeout_millis=10000)
            consumer.acknowledge(msg)
            got += 1
        elapsed = time.perf_counter() - t0
        consumer.close()
        return got / elapsed
    finally:
        client.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=1000)
    args = ap.parse_args()
    n = (args.messages // args.batch) * args.batch
    with pulsar_url() as base:
        pub_ours, pub_peer, recv_ours, recv_peer, recv_plain = [], [], [], [], []
        for r in range(args.rounds):  # interleaved, so that a busy spell of the machine hits both
            # Each reader its own topic of the same messages, the first reader alternating by round:
            # a topic read a second time comes from the broker's cache, the first time from the bookie.
            ours_topic, plain_topic, peer_topic = (fill(base, n, args.size, args.batch) for _ in range(3))
            runs = [lambda: pub_ours.append(omnibus_publish(base, n, args.size, args.batch)),
                    lambda: pub_peer.append(peer_publish(base, n, args.size)),
                    lambda: recv_ours.append(omnibus_receive(base, ours_topic, n)),
                    lambda: recv_plain.append(omnibus_receive(base, plain_topic, n, batch_index_ack=False)),
                    lambda: recv_peer.append(peer_receive(base, peer_topic, n))]
            for run in (runs if r % 2 == 0 else [runs[1], runs[0], runs[4], runs[3], runs[2]]):
                run()
    po, pp, ro, rn, rp = (statistics.median(x) for x in (pub_ours, pub_peer, recv_ours, recv_plain, recv_peer))
    print(f"pulsar:// {n:,} x {args.size} B, median of {args.rounds}")
    print(f"  publish  omnibus publish_many (batches of {args.batch:,})  {po:>12,.0f} msg/s")
    print(f"  publish  pulsar-client send_async, batching on      {pp:>12,.0f} msg/s")
    print(f"  receive  omnibus receive_batch                      {ro:>12,.0f} msg/s")
    print(f"  receive  omnibus, batch_index_ack=false (as peer)   {rn:>12,.0f} msg/s")
    print(f"  receive  pulsar-client receive() + acknowledge()    {rp:>12,.0f} msg/s")
    print(f"  publish  omnibus / pulsar-client                    {po / pp:>12.2f}x  (issue: >= 2x)")
    print(f"  receive  omnibus / pulsar-client                    {ro / rp:>12.2f}x  (issue: >= 2x)")
    print(f"  receive  omnibus batch_index_ack=false / client     {rn / rp:>12.2f}x  (same ack mode as the peer)")


if __name__ == "__main__":
    main()
