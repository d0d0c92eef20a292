#!/usr/bin/env python3
"""nats:// publish throughput beside nats-py, the usual Python client, in one run.

100-byte messages on a nats-server that omnibus starts on loopback (or
OMNIBUS_NATS_URL). Core NATS: omnibus publish_many with flush=true (each batch
confirmed by a PING/PONG) against nats-py publish() + one flush() at the end.
JetStream: omnibus publish_many (every message's PubAck awaited) into a
file-storage stream against nats-py's js.publish() (one PubAck round trip per
message; nats-py has no async JetStream publish), with a no-subscriber core
subject and a fresh stream per round. Request-reply: --requests sequential
core NATS requests (each waits for its reply) from omnibus Publisher.request
against nats-py nc.request, both answered by the same omnibus subscriber
replying on a thread of its own. Each figure is the median of --rounds;
the ratio is what to read, the machine is shared.

    python benchmarks/bench_nats.py [--messages 1000000] [--js-messages 200000] [--rounds 3]
                                    [--requests 2000] [--requests-only]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import time
import uuid
from collections.abc import Iterator

import omnibus

CORE_TARGET = 1_000_000  # issue: core NATS publish_many, 100 B, loopback
JS_TARGET = 50_000  # issue: JetStream publish_many


@contextlib.contextmanager
def nats_url() -> Iterator[str]:
    if os.environ.get("OMNIBUS_NATS_URL"):
        yield os.environ["OMNIBUS_NATS_URL"].rstrip("/")
        return
    from omnibus.testing.brokers import NatsServer

    with NatsServer() as broker:
        yield broker.url


def omnibus_publish_many(base: str, n: int, size: int, stream: bool) -> float:
    subject = f"bench-{uuid.uuid4().hex[:8]}"
    url = f"{base}/{subject}?max_pending={max(n, 100000)}" + (f"&stream={subject}" if stream else "")
    values = [b"x" * size] * 1000
    with omnibus.publisher(url) as pub:
        pub.publish(b"warm-up").result(timeout=30)  # connection (and stream) ready before timing
        t0 = time.perf_counter()
        deliveries = [pub.publish_many(values) for _ in range(n // 1000)]
        pub.flush()
        elapsed = time.perf_counter() - t0
    failed = sum(len(d.failures()) for d in deliveries)
    if failed:
        raise omnibus.InternalError(f"{failed} messages failed in the benchmark")
    return (n // 1000) * 1000 / elapsed


def nats_py_publish(base: str, n: int, size: int, stream: bool) -> float | None:
    try:
        import nats
    except ImportError:
        return None
    subject = f"bench-peer-{uuid.uuid4().hex[:8]}"
    if stream:
        with omnibus.publisher(f"{base}/{subject}?stream={subject}") as pub:  # the same kind of stream as ours
            pub.publish(b"warm-up").result(timeout=30)
    payload = b"x" * size

    async def main() -> float:
        nc = await nats.connect(base, pending_size=64 * 1024 * 1024)
        try:
            js = nc.jetstream()
            t0 = time.perf_counter()
            if stream:
                for _ in range(n):
                    await js.publish(subject, payload)
            else:
                for _ in range(n):
                    await nc.publish(subject, payload)
                await nc.flush(timeout=60)
            return time.perf_counter() - t0
        finally:
            await nc.close()

    return n / asyncio.run(main())


@contextlib.contextmanager
def responder(base: str, subject: str) -> Iterator[None]:
    """An omnibus subscriber on `subject` that answers every request with its payload."""
    import threading

    stop = threading.Event()
    sub = omnibus.subscriber(f"{base}/{subject}")

    def serve() -> None:
        while not stop.is_set():
            for msg in sub.receive_batch(100, timeout=0.05):
                if msg.reply_to is not None:
                    msg.reply(msg.payload)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        sub.close()


def omnibus_requests(base: str, n: int, size: int) -> float:
    subject = f"bench-rpc-{uuid.uuid4().hex[:8]}"
    payload = b"x" * size
    with responder(base, subject), omnibus.publisher(f"{base}/{subject}") as pub:
        pub.request(b"warm-up", timeout=30)  # connection and reply inbox ready before timing
        t0 = time.perf_counter()
        for _ in range(n):
            pub.request(payload, timeout=30)
        return n / (time.perf_counter() - t0)


def nats_py_requests(base: str, n: int, size: int) -> float | None:
    try:
        import nats
    except ImportError:
        return None
    subject = f"bench-rpc-peer-{uuid.uuid4().hex[:8]}"
    payload = b"x" * size

    async def main() -> float:
        nc = await nats.connect(base)
        try:
            await nc.request(subject, b"warm-up", timeout=30)
            t0 = time.perf_counter()
            for _ in range(n):
                await nc.request(subject, payload, timeout=30)
            return n / (time.perf_counter() - t0)
        finally:
            await nc.close()

    with responder(base, subject):
        return asyncio.run(main())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=1_000_000, help="core NATS messages per round")
    ap.add_argument("--js-messages", type=int, default=200_000, help="JetStream messages per round (omnibus)")
    ap.add_argument("--peer-js-messages", type=int, default=20_000,
                    help="JetStream messages per round for nats-py (one round trip each: slow)")
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=2000, help="sequential request-reply round trips per round")
    ap.add_argument("--requests-only", action="store_true", help="run the request-reply section only")
    args = ap.parse_args()
    with nats_url() as base:
        rpc = [omnibus_requests(base, args.requests, args.size) for _ in range(args.rounds)]
        rpc_peer = [nats_py_requests(base, args.requests, args.size) for _ in range(args.rounds)]
        if args.requests_only:
            print_requests(args, rpc, rpc_peer)
            return
        core = [omnibus_publish_many(base, args.messages, args.size, False) for _ in range(args.rounds)]
        core_peer = [nats_py_publish(base, args.messages, args.size, False) for _ in range(args.rounds)]
        js = [omnibus_publish_many(base, args.js_messages, args.size, True) for _ in range(args.rounds)]
        js_peer = [nats_py_publish(base, args.peer_js_messages, args.size, True) for _ in range(args.rounds)]
    for title, ours, peer, target, n, peer_what in (
        ("core NATS", core, core_peer, CORE_TARGET, args.messages, "nats-py publish() + flush()"),
        ("JetStream (file storage)", js, js_peer, JS_TARGET, args.js_messages, "nats-py js.publish()"),
    ):
        med = statistics.median(ours)
        print(f"nats:// {title}: {n:,} x {args.size} B, loopback, median of {args.rounds}")
        print(f"  omnibus publish_many x1000      {med:>12,.0f} msg/s  (target {target:,}: {'ok' if med >= target else 'BELOW'})")
        if peer[0] is None:
            print("  nats-py                         not installed (pip install nats-py): no peer figure")
            continue
        pmed = statistics.median(p for p in peer if p is not None)
        print(f"  {peer_what:<31} {pmed:>12,.0f} msg/s")
        print(f"  omnibus / nats-py               {med / pmed:>12.2f}x")
    print_requests(args, rpc, rpc_peer)


def print_requests(args: argparse.Namespace, ours: list[float], peer: list[float | None]) -> None:
    med = statistics.median(ours)
    print(f"nats:// core request-reply: {args.requests:,} sequential requests x {args.size} B, loopback, "
          f"median of {args.rounds} (replies from one omnibus subscriber)")
    print(f"  omnibus Publisher.request       {med:>12,.0f} req/s")
    if peer[0] is None:
        print("  nats-py                         not installed (pip install nats-py): no peer figure")
        return
    pmed = statistics.median(p for p in peer if p is not None)
    print(f"  nats-py nc.request              {pmed:>12,.0f} req/s")
    print(f"  omnibus / nats-py               {med / pmed:>12.2f}x")


if __name__ == "__main__":
    main()
