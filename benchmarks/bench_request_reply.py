#!/usr/bin/env python3
"""Request-reply round trips: omnibus beside nats-py, in one run.

100-byte requests on a nats-server that omnibus starts on loopback (or
OMNIBUS_NATS_URL), every request answered by the same omnibus subscriber
replying from a process of its own (so both clients face the same responder,
and it does not compete for the client's GIL):

- sequential, sync: omnibus Publisher.request in a loop
- sequential, asyncio: ``await omnibus.aio`` Publisher.request in a loop
- pipelined, asyncio: --window requests in flight at once (asyncio.gather of
  windows) from omnibus.aio and from nats-py
- nats-py: ``await nc.request`` in a loop, and gathered the same way

and mem:// sequential (sync and asyncio), which has no peer: its figure is
the engine's own cost per round trip. Each figure is the median of --rounds;
the ratio is what to read, the machine is shared.

    python benchmarks/bench_request_reply.py [--requests 5000] [--window 100] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import omnibus
import omnibus.aio

SEQ_RATIO_TARGET = 1.5  # issue 22: sequential, sync and asyncio, against nats-py
PIPELINED_RATIO_TARGET = 3.0
MEM_TARGET = 20_000  # req/s, mem:// sequential


@contextlib.contextmanager
def nats_url() -> Iterator[str]:
    import os

    if os.environ.get("OMNIBUS_NATS_URL"):
        yield os.environ["OMNIBUS_NATS_URL"].rstrip("/")
        return
    from omnibus.testing.brokers import NatsServer

    with NatsServer() as broker:
        yield broker.url


def serve(url: str) -> None:
    """The responder process: answers every request on `url` with its payload until stdin closes."""
    stop = threading.Event()
    with omnibus.subscriber(url) as sub:
        threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
        print("ready", flush=True)
        while not stop.is_set():
            for msg in sub.receive_batch(1000, timeout=0.05):
                if msg.reply_to is not None:
                    msg.reply(msg.payload)


@contextlib.contextmanager
def responder(url: str) -> Iterator[None]:
    """An omnibus subscriber on `url` answering every request with its payload, in a process of its own:
    a responder thread in this process would take the GIL from the client being measured. mem:// is
    in-process: there it is a thread, and that cost is part of the mem:// figure."""
    if url.startswith("mem://"):
        stop = threading.Event()
        sub = omnibus.subscriber(url)

        def answer() -> None:
            while not stop.is_set():
                for msg in sub.receive_batch(1000, timeout=0.05):
                    if msg.reply_to is not None:
                        msg.reply(msg.payload)

        thread = threading.Thread(target=answer)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            sub.close()
        return
    proc = subprocess.Popen([sys.executable, __file__, "--serve", url], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the responder for {url} did not start (exit code {proc.wait()})")
        yield
    finally:
        if proc.stdin is not None:
            proc.stdin.close()  # the responder's cue to stop
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def sync_sequential(url: str, n: int, payload: bytes) -> float:
    with responder(url), omnibus.publisher(url) as pub:
        pub.request(b"warm-up", timeout=30)  # connection and reply inbox ready before timing
        t0 = time.perf_counter()
        for _ in range(n):
            pub.request(payload, timeout=30)
        return n / (time.perf_counter() - t0)


def aio_run(url: str, n: int, payload: bytes, window: int) -> float:
    async def main() -> float:
        async with omnibus.aio.publisher(url) as pub:
            await pub.request(b"warm-up", timeout=30)
            t0 = time.perf_counter()
            if window <= 1:
                for _ in range(n):
                    await pub.request(payload, timeout=30)
            else:
                for _ in range(n // window):
                    await asyncio.gather(*(pub.request(payload, timeout=30) for _ in range(window)))
            return (n if window <= 1 else n // window * window) / (time.perf_counter() - t0)

    with responder(url):
        return asyncio.run(main())


def nats_py_run(base: str, url: str, subject: str, n: int, payload: bytes, window: int) -> float | None:
    try:
        import nats
    except ImportError:
        return None

    async def main() -> float:
        nc = await nats.connect(base)
        try:
            await nc.request(subject, b"warm-up", timeout=30)
            t0 = time.perf_counter()
            if window <= 1:
                for _ in range(n):
                    await nc.request(subject, payload, timeout=30)
            else:
                for _ in range(n // window):
                    await asyncio.gather(*(nc.request(subject, payload, timeout=30) for _ in range(window)))
            return (n if window <= 1 else n // window * window) / (time.perf_counter() - t0)
        finally:
            await nc.close()

    with responder(url):
        return asyncio.run(main())


def median(fn: Callable[[], float | None], rounds: int) -> float | None:
    got = [fn() for _ in range(rounds)]
    if any(g is None for g in got):
        return None
    return statistics.median(g for g in got if g is not None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=5000, help="round trips per round and case")
    ap.add_argument("--window", type=int, default=100, help="requests in flight at once when pipelined")
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--serve", metavar="URL", help=argparse.SUPPRESS)  # the responder process
    args = ap.parse_args()
    if args.serve:
        serve(args.serve)
        return
    n, payload, r = args.requests, b"x" * args.size, args.rounds
    rows: list[tuple[str, float | None, str, float | None, float | None]] = []
    with nats_url() as base:
        def fresh() -> tuple[str, str]:
            subject = f"bench-rr-{uuid.uuid4().hex[:8]}"
            return subject, f"{base}/{subject}"

        def ours_sync() -> float:
            return sync_sequential(fresh()[1], n, payload)

        def ours_aio(window: int) -> Callable[[], float]:
            return lambda: aio_run(fresh()[1], n, payload, window)

        def peer(window: int) -> Callable[[], float | None]:
            def go() -> float | None:
                subject, url = fresh()
                return nats_py_run(base, url, subject, n, payload, window)
            return go

        peer_seq = median(peer(1), r)
        rows.append(("nats sequential, sync", median(ours_sync, r), "nats-py await nc.request", peer_seq,
                     SEQ_RATIO_TARGET))
        rows.append(("nats sequential, asyncio", median(ours_aio(1), r), "nats-py await nc.request", peer_seq,
                     SEQ_RATIO_TARGET))
        rows.append((f"nats pipelined x{args.window}, asyncio", median(ours_aio(args.window), r),
                     f"nats-py gather x{args.window}", median(peer(args.window), r), PIPELINED_RATIO_TARGET))
    mem = f"mem://bench-rr-{uuid.uuid4().hex[:8]}"
    rows.append(("mem sequential, sync", median(lambda: sync_sequential(mem, n, payload), r), "", None, None))
    rows.append(("mem sequential, asyncio", median(lambda: aio_run(mem, n, payload, 1), r), "", None, None))

    print(f"request-reply: {n:,} x {args.size} B per round, loopback, median of {r}; "
          "one omnibus responder process answers both clients")
    print(f"  {'case':<34} {'omnibus req/s':>14}  {'peer':<28} {'peer req/s':>11}  {'ratio':>7}  target")
    for case, ours, peer_name, theirs, target in rows:
        ours_s = f"{ours:,.0f}" if ours is not None else "-"
        if theirs is None and peer_name:
            print(f"  {case:<34} {ours_s:>14}  {'nats-py not installed':<28}")
            continue
        if not peer_name:
            verdict = "ok" if ours is not None and ours >= MEM_TARGET else "BELOW"
            print(f"  {case:<34} {ours_s:>14}  {'(no peer)':<28} {'':>11}  {'':>7}  {MEM_TARGET:,} req/s: {verdict}")
            continue
        ratio = ours / theirs if ours and theirs else 0.0
        verdict = "ok" if target is not None and ratio >= target else "BELOW"
        print(f"  {case:<34} {ours_s:>14}  {peer_name:<28} {theirs:>11,.0f}  {ratio:>6.2f}x  {target}x: {verdict}")


if __name__ == "__main__":
    main()
