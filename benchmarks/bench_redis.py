#!/usr/bin/env python3
"""redis:// publish throughput: the cost of the engine around a driver written in Python.

100-byte messages XADDed to one stream of a Redis that omnibus starts on
loopback without persistence (or OMNIBUS_REDIS_URL), three ways in one run:

- omnibus publish_many through redis:// (batches of --batch, the engine's
  batching, delivery tracking and one Python call per batch);
- the same driver's own RedisSender.send_batch called in a loop with the same
  batches, no engine around it (the floor the engine adds to: the issue asks
  for omnibus >= 0.8x of it);
- redis-py used directly, one XADD per call (what a script without batching
  does: the issue asks for omnibus >= 2x of it).

A publish counts when its XADD reply came. Each figure is the median of
--rounds; read the ratios, the machine is shared.

    python benchmarks/bench_redis.py [--messages 200000] [--rounds 3] [--batch 1000]
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
from omnibus.redis_streams import RedisStreamsDriver


@contextlib.contextmanager
def redis_url() -> Iterator[str]:
    if os.environ.get("OMNIBUS_REDIS_URL"):
        yield os.environ["OMNIBUS_REDIS_URL"].rstrip("/")
        return
    from omnibus.testing.brokers import Redis

    with Redis(appendonly=False) as broker:
        yield broker.url


def _client(base: str):  # type: ignore[no-untyped-def]
    import redis

    host, port = base.split("://", 1)[1].rsplit(":", 1)
    return redis.Redis(host=host, port=int(port))


def _drop(base: str, stream: str) -> None:
    c = _client(base)
    try:
        c.delete(stream)
    finally:
        c.close()


def omnibus_publish_many(base: str, n: int, size: int, batch: int) -> float:
    stream = f"bench-{uuid.uuid4().hex[:8]}"
    values = [b"x" * size] * batch
    try:
        with omnibus.publisher(f"{base}/{stream}", batch_messages=batch, max_pending=n) as pub:
            pub.publish(b"warm-up").result(timeout=30)
            t0 = time.perf_counter()
            deliveries = [pub.publish_many(values) for _ in range(n // batch)]
            pub.flush(timeout=300)
            elapsed = time.perf_counter() - t0
        failed = sum(len(d.failures()) for d in deliveries)
        if failed:
            raise omnibus.InternalError(f"{failed} messages failed in the benchmark")
        return (n // batch) * batch / elapsed
    finally:
        _drop(base, stream)


def driver_send_batch_loop(base: str, n: int, size: int, batch: int) -> float:
    """The driver alone: its sender, called the way the engine calls it, with the engine's tuples."""
    stream = f"bench-driver-{uuid.uuid4().hex[:8]}"
    url = omnibus._core.parse_url(f"{base}/{stream}")
    url["text"] = f"{base}/{stream}"
    driver = RedisStreamsDriver()
    options = {o.name: _parse(o.type, o.default) for o in driver.sender_options}
    sender = driver.open_sender(url, options)
    try:
        messages = [(b"x" * size, None, [], int(time.time() * 1000))] * batch
        t0 = time.perf_counter()
        for _ in range(n // batch):
            if any(r is not None for r in sender.send_batch(messages)):
                raise omnibus.InternalError("a message failed in the benchmark")
        elapsed = time.perf_counter() - t0
        return (n // batch) * batch / elapsed
    finally:
        sender.close()
        _drop(base, stream)


def _parse(kind: str, text: str) -> object:
    return {"int": int, "bool": lambda t: t == "true", "float": float}.get(kind, str)(text)


def redis_py_xadd(base: str, n: int, size: int) -> float:
    stream = f"bench-peer-{uuid.uuid4().hex[:8]}"
    c = _client(base)
    try:
        payload = b"x" * size
        t0 = time.perf_counter()
        for _ in range(n):
            c.xadd(stream, {"payload": payload})
        elapsed = time.perf_counter() - t0
        c.delete(stream)
        return n / elapsed
    finally:
        c.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=1000)
    args = ap.parse_args()
    n = args.messages
    peer_n = max(1000, n // 10)  # one round trip per XADD: fewer messages keep the run short (a rate is a rate)
    with redis_url() as base:
        ours = statistics.median(omnibus_publish_many(base, n, args.size, args.batch) for _ in range(args.rounds))
        floor = statistics.median(driver_send_batch_loop(base, n, args.size, args.batch) for _ in range(args.rounds))
        peer = statistics.median(redis_py_xadd(base, peer_n, args.size) for _ in range(args.rounds))
    print(f"redis:// {n:,} x {args.size} B XADD to one stream, batches of {args.batch}, median of {args.rounds}")
    print(f"  omnibus publish_many through redis://      {ours:>12,.0f} msg/s")
    print(f"  the driver's own send_batch in a loop      {floor:>12,.0f} msg/s")
    print(f"  redis-py xadd() one per call, {peer_n:>9,}  {peer:>12,.0f} msg/s")
    print(f"  omnibus / send_batch loop                  {ours / floor:>12.2f}x  (issue: >= 0.8x)")
    print(f"  omnibus / redis-py one XADD per call       {ours / peer:>12.2f}x  (issue: >= 2x)")


if __name__ == "__main__":
    main()
