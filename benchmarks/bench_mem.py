#!/usr/bin/env python3
"""mem:// throughput of the engine, 100-byte messages, printed beside its peer.

Each figure is the median of --rounds runs (min and max beside it): this
machine is shared and noisy, so read the ratios of one run, not absolute
numbers across runs. The peer is the same producer/consumer hand-off through
Python's queue.SimpleQueue (C-implemented, no copy, no acks): the floor cost of
moving an object between two Python threads.

    python benchmarks/bench_mem.py [--messages 1000000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
from collections.abc import Callable

import omnibus
from omnibus import quickbench

TARGETS = {  # issue #2, on a 2-core machine
    "publish": 500_000,
    "publish_many": 2_000_000,
    "end_to_end": 1_000_000,
}


def measure(fn: Callable[[], quickbench.Figure], rounds: int) -> tuple[str, list[float]]:
    figures = [fn() for _ in range(rounds)]
    return figures[0].name, [f.rate for f in figures]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    n, size = args.messages, args.size
    print(f"omnibus {omnibus.__version__} mem:// benchmark: {n:,} x {size}-byte messages, median of {args.rounds}")
    print(f"machine: {os.cpu_count()} cores, {platform.platform()}, Python {platform.python_version()}")
    rows = {
        "publish": measure(lambda: quickbench.publish_per_call(n, size), args.rounds),
        "publish_many": measure(lambda: quickbench.publish_many(n, size), args.rounds),
        "end_to_end": measure(lambda: quickbench.end_to_end(n, size), args.rounds),
        "peer": measure(lambda: quickbench.peer_simple_queue(n, size), args.rounds),
    }
    peer = statistics.median(rows["peer"][1])
    print(f"\n{'measurement':<52} {'median msg/s':>13} {'min':>11} {'max':>11} {'target':>11} {'vs peer':>8}")
    for key, (name, rates) in rows.items():
        med = statistics.median(rates)
        target = TARGETS.get(key)
        mark = "" if target is None else (" ok" if med >= target else " BELOW")
        tgt = f"{target:>11,}" if target else f"{'':>11}"
        print(f"{name:<52} {med:>13,.0f} {min(rates):>11,.0f} {max(rates):>11,.0f} {tgt} {med / peer:>7.2f}x{mark}")


if __name__ == "__main__":
    main()
