#!/usr/bin/env python3
"""amqp:// publish throughput beside pika, the usual Python client, in one run.

100-byte transient messages (delivery mode 1) to a topic exchange with one
bound classic queue (declared by the publisher, queue=), on a RabbitMQ that
omnibus starts on loopback (or OMNIBUS_AMQP_URL). Two modes:

- no confirms: done when every message is written to the socket;
- confirms: done when the broker confirmed every message. omnibus pipelines
  confirms (confirm_window, default 10,000 unconfirmed); pika's
  BlockingConnection waits for each confirm (one round trip per message), so
  it gets fewer messages (a fifth; a fortieth with confirms) and is the per-message-confirm cost
  a pika user pays without going asynchronous.

Each figure is the median of --rounds; the ratio is what to read, the machine
is shared. Queues are purged by deletion after each round.

    python benchmarks/bench_amqp.py [--messages 100000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import statistics
import time
import uuid
from collections.abc import Iterator

import omnibus

TARGET_NO_CONFIRM = 50_000  # the issue: publish_many, 100-byte messages, loopback
TARGET_CONFIRM = 20_000


@contextlib.contextmanager
def amqp_url() -> Iterator[str]:
    if os.environ.get("OMNIBUS_AMQP_URL"):
        yield os.environ["OMNIBUS_AMQP_URL"].rstrip("/")
        return
    from omnibus.testing.brokers import RabbitMQ

    with RabbitMQ() as broker:
        yield broker.url


def _delete(base: str, queue: str, exchange: str) -> None:
    import pika

    conn = pika.BlockingConnection(pika.URLParameters(base + "/%2F"))
    try:
        ch = conn.channel()
        ch.queue_delete(queue)
        ch.exchange_delete(exchange)
    finally:
        conn.close()


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)  # this process only: the broker is a child
    return r.ru_utime + r.ru_stime


def omnibus_publish_many(base: str, n: int, size: int, confirm: bool) -> tuple[float, float]:
    """(msg/s, client CPU microseconds per message)."""
    ex, q = f"bench-{uuid.uuid4().hex[:8]}", f"bench-q-{uuid.uuid4().hex[:8]}"
    url = (f"{base}/{ex}?queue={q}&durable=false&persistent=false&confirm={'true' if confirm else 'false'}"
           f"&max_pending={n}")
    values = [b"x" * size] * 1000
    try:
        with omnibus.publisher(url) as pub:
            pub.publish(b"warm-up").result(timeout=30)  # connection, exchange and queue ready before timing
            t0, c0 = time.perf_counter(), _cpu()
            deliveries = [pub.publish_many(values) for _ in range(n // 1000)]
            pub.flush(timeout=120)
            elapsed, cpu = time.perf_counter() - t0, _cpu() - c0
        failed = sum(len(d.failures()) for d in deliveries)
        if failed:
            raise omnibus.InternalError(f"{failed} messages failed in the benchmark")
        sent = (n // 1000) * 1000
        return sent / elapsed, cpu / sent * 1e6
    finally:
        _delete(base, q, ex)


def pika_publish(base: str, n: int, size: int, confirm: bool) -> float | None:
    try:
        import pika
    except ImportError:
        return None
    ex, q = f"bench-peer-{uuid.uuid4().hex[:8]}", f"bench-peer-q-{uuid.uuid4().hex[:8]}"
    conn = pika.BlockingConnection(pika.URLParameters(base + "/%2F"))
    try:
        ch = conn.channel()
        ch.exchange_declare(ex, exchange_type="topic", durable=False)
        ch.queue_declare(q, durable=False)
        ch.queue_bind(q, ex, routing_key="#")
        if confirm:
            ch.confirm_delivery()
        props = pika.BasicProperties(delivery_mode=1)
        payload = b"x" * size
        t0 = time.perf_counter()
        for _ in range(n):
            ch.basic_publish(ex, "", payload, props)
        if not confirm:
            conn.process_data_events(0)
            ch.queue_declare(q, passive=True)  # one round trip: everything before it was read by the broker
        elapsed = time.perf_counter() - t0
        ch.queue_delete(q)
        ch.exchange_delete(ex)
        return n / elapsed
    finally:
        conn.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    # pika is far slower: fewer messages for it keep the run short (a rate is a rate).
    n, peer_n_plain, peer_n_confirm = args.messages, max(1000, args.messages // 5), max(1000, args.messages // 40)
    with amqp_url() as base:
        rows = []
        for confirm, target in ((False, TARGET_NO_CONFIRM), (True, TARGET_CONFIRM)):
            runs = [omnibus_publish_many(base, n, args.size, confirm) for _ in range(args.rounds)]
            ours, cpu = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
            peer_n = peer_n_confirm if confirm else peer_n_plain
            peer = [pika_publish(base, peer_n, args.size, confirm) for _ in range(args.rounds)]
            rows.append((confirm, target, ours, cpu, peer_n, None if peer[0] is None else statistics.median(peer)))
    print(f"amqp:// {n:,} x {args.size} B transient, topic exchange + 1 classic queue, median of {args.rounds}")
    for confirm, target, ours, cpu, peer_n, peer in rows:
        mode = "confirms (pipelined)" if confirm else "no confirms"
        print(f"  {mode}")
        print(f"    omnibus publish_many x1000    {ours:>12,.0f} msg/s  (target {target:,}: {'ok' if ours >= target else 'BELOW'})")
        # When this is far below 1e6 / msg/s, the broker (not the client) sets the pace.
        print(f"    omnibus client CPU            {cpu:>12.1f} us/msg (a ceiling of {1e6 / cpu:,.0f} msg/s on one core)")
        if peer is None:
            print("    pika                          not installed (pip install pika): no peer figure")
            continue
        what = f"pika basic_publish, {peer_n:,}" if not confirm else f"pika confirm_delivery, {peer_n:,}"
        print(f"    {what:<29} {peer:>12,.0f} msg/s")
        print(f"    omnibus / pika                {ours / peer:>12.2f}x")


if __name__ == "__main__":
    main()
