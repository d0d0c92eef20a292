"""Throughput of the engine on mem://, and of the same hand-off through Python's
own queue.SimpleQueue as the in-process peer, measured in one run.

Used by ``omnibus demo`` and benchmarks/bench_mem.py. Figures, never asserts:
this machine is shared and noisy, so compare the ratios of one run.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from dataclasses import dataclass

import omnibus

_topics = itertools.count()


@dataclass
class Figure:
    name: str
    messages: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else float("inf")


def _topic(kind: str) -> str:
    return f"mem://bench-{kind}-{next(_topics)}"


def publish_per_call(n: int, size: int = 100) -> Figure:
    """publish() once per message, no subscriber attached (the engine's publish path)."""
    payload = b"x" * size
    with omnibus.publisher(_topic("publish"), max_pending=max(n, 1)) as pub:
        publish = pub.publish
        t0 = time.perf_counter()
        for _ in range(n):
            publish(payload)
        pub.flush()
        t1 = time.perf_counter()
    return Figure("publish() per call", n, t1 - t0)


def publish_many(n: int, size: int = 100, batch: int = 1000) -> Figure:
    """publish_many() in batches, no subscriber attached."""
    values = [b"x" * size] * batch
    rounds = max(1, n // batch)
    with omnibus.publisher(_topic("many"), max_pending=max(n, batch)) as pub:
        t0 = time.perf_counter()
        for _ in range(rounds):
            pub.publish_many(values)
        pub.flush()
        t1 = time.perf_counter()
    return Figure(f"publish_many() x{batch}", rounds * batch, t1 - t0)


def end_to_end(n: int, size: int = 100, batch: int = 1000) -> Figure:
    """publish_many() on one thread, receive_batch() on another, until all n arrived."""
    url = _topic("e2e")
    values = [b"x" * size] * batch
    rounds = max(1, n // batch)
    total = rounds * batch
    received = 0
    with omnibus.subscriber(url, prefetch=4 * batch) as sub, omnibus.publisher(url, max_pending=8 * batch) as pub:

        def consume() -> None:
            nonlocal received
            while received < total:
                received += len(sub.receive_batch(batch, timeout=10))

        t0 = time.perf_counter()
        consumer = threading.Thread(target=consume)
        consumer.start()
        for _ in range(rounds):
            pub.publish_many(values)
        consumer.join()
        t1 = time.perf_counter()
    if received != total:
        raise omnibus.InternalError(f"end-to-end lost messages: {received} of {total} arrived")
    return Figure(f"end to end (publish_many x{batch} -> receive_batch)", total, t1 - t0)


def peer_simple_queue(n: int, size: int = 100, batch: int = 1000) -> Figure:
    """The same hand-off through queue.SimpleQueue, one put/get per message."""
    q: queue.SimpleQueue[bytes] = queue.SimpleQueue()
    payload = b"x" * size
    total = max(1, n // batch) * batch

    def consume() -> None:
        get = q.get
        for _ in range(total):
            get()

    t0 = time.perf_counter()
    consumer = threading.Thread(target=consume)
    consumer.start()
    put = q.put
    for _ in range(total):
        put(payload)
    consumer.join()
    t1 = time.perf_counter()
    return Figure("peer: queue.SimpleQueue put/get", total, t1 - t0)
