#!/usr/bin/env python3
"""awssqs:// publish and receive throughput beside boto3, in one run, on moto's server.

moto (started on loopback with signatures checked, or OMNIBUS_SQS_URL) is a test server, and the
ceiling here: it is Python, and each of its sends scans the whole queue, so its cost per message
grows with the queue's depth. Both clients therefore get a fresh queue of the same depth per round.

Publish: omnibus publish_many (SendMessageBatch requests of 10, up to max_in_flight concurrently)
against boto3 send_message_batch of 10 in a loop. Receive: the queue filled beforehand, then an
omnibus subscriber (auto_ack: long-polling pollers, DeleteMessageBatch on hand-over) against boto3
receive_message(MaxNumberOfMessages=10) + delete_message_batch in a loop. 100-byte bodies. Each
figure is the median of --rounds; the ratio is what to read, the machine is shared.

    python benchmarks/bench_sqs.py [--messages 400] [--rounds 3]
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

import boto3

import omnibus
from omnibus.testing.brokers import aws_endpoint, queue_url


@contextlib.contextmanager
def sqs_url() -> Iterator[str]:
    if os.environ.get("OMNIBUS_SQS_URL"):
        yield os.environ["OMNIBUS_SQS_URL"]
        return
    from omnibus.testing.brokers import Moto

    with Moto() as broker:
        yield broker.url


def fresh_queue(client: Any) -> tuple[str, str]:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    return name, client.create_queue(QueueName=name)["QueueUrl"]


def fill(client: Any, qurl: str, n: int, body: str) -> None:
    for i in range(0, n, 10):
        client.send_message_batch(QueueUrl=qurl, Entries=[{"Id": str(j), "MessageBody": body}
                                                          for j in range(min(10, n - i))])


def omnibus_publish(base: str, client: Any, n: int, body: bytes) -> float:
    name, _ = fresh_queue(client)
    with omnibus.publisher(queue_url(base, name)) as pub:
        t0 = time.perf_counter()
        pub.publish_many([body] * n).result(timeout=600)
        return n / (time.perf_counter() - t0)


def boto3_publish(client: Any, n: int, body: bytes) -> float:
    _, qurl = fresh_queue(client)
    t0 = time.perf_counter()
    fill(client, qurl, n, body.decode())
    return n / (time.perf_counter() - t0)


def omnibus_receive(base: str, client: Any, n: int, body: bytes) -> float:
    name, qurl = fresh_queue(client)
    fill(client, qurl, n, body.decode())
    got = 0
    t0 = time.perf_counter()
    with omnibus.subscriber(queue_url(base, name)) as sub:
        while got < n:
            batch = sub.receive_batch(1000, timeout=60)
            if not batch:
                raise omnibus.Timeout(f"omnibus received {got} of {n}")
            got += len(batch)
        sub.ack(batch)  # the last batch's delete is done before the clock stops (auto_ack sent it)
        return n / (time.perf_counter() - t0)


def boto3_receive(client: Any, n: int, body: bytes) -> float:
    _, qurl = fresh_queue(client)
    fill(client, qurl, n, body.decode())
    got = 0
    t0 = time.perf_counter()
    while got < n:
        msgs = client.receive_message(QueueUrl=qurl, MaxNumberOfMessages=10, WaitTimeSeconds=20).get("Messages", [])
        if msgs:
            client.delete_message_batch(QueueUrl=qurl, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                                                                for i, m in enumerate(msgs)])
        got += len(msgs)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    body = b"x" * 100
    with sqs_url() as base:
        client = boto3.client("sqs", **aws_endpoint(base).boto3())
        try:
            rows = []
            for label, ours, theirs in (
                ("publish", lambda: omnibus_publish(base, client, args.messages, body),
                 lambda: boto3_publish(client, args.messages, body)),
                ("receive", lambda: omnibus_receive(base, client, args.messages, body),
                 lambda: boto3_receive(client, args.messages, body)),
            ):
                o = statistics.median(ours() for _ in range(args.rounds))
                b = statistics.median(theirs() for _ in range(args.rounds))
                rows.append((label, o, b))
        finally:
            client.close()
    print(f"awssqs:// vs boto3 on moto, {args.messages} x 100 B per round, median of {args.rounds}")
    print(f"{'':<10}{'omnibus msg/s':>15}{'boto3 msg/s':>15}{'ratio':>8}")
    for label, o, b in rows:
        print(f"{label:<10}{o:>15,.0f}{b:>15,.0f}{o / b:>7.2f}x")
    print("moto is the ceiling: Python, and each send scans the whole queue (cost grows with depth).")


if __name__ == "__main__":
    main()
