"""Shared fixtures. The conformance suite runs once per target in TARGETS.

A target is a driver plus a way to make a fresh topic URL. mem:// is always a
target; the protocol drivers add theirs here (from the brokers the test
session starts), and every conformance test runs against them unchanged:
capabilities decide what is skipped, and the skip says why.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

import omnibus
from omnibus.testing import wait_until  # noqa: F401  (re-exported for the tests)

_names = itertools.count()


@dataclass(frozen=True)
class Target:
    name: str
    make_url: Callable[[str], str]

    def url(self, **options: Any) -> str:
        """A URL of a topic no other test uses, with `options` in its query."""
        base = self.make_url(f"t{os.getpid()}-{next(_names)}")
        if not options:
            return base
        sep = "&" if "?" in base else "?"
        return base + sep + "&".join(f"{k}={_text(v)}" for k, v in options.items())

    def capabilities(self) -> dict[str, Any]:
        with omnibus.publisher(self.url()) as pub:
            return dict(pub.capabilities())


def _text(v: Any) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else str(v)


# Per target: the broker it runs on (the pytest plugin's `<kind>_url` fixture:
# started on loopback, or OMNIBUS_<KIND>_URL) and how a fresh topic URL is made
# from that broker's URL, with the options the conformance suite needs. A
# target whose driver is not in this build is skipped, naming why.
_TOPIC_URL: dict[str, tuple[str, Callable[[str, str], str]]] = {
    # Several partitions, so that competing consumers both get work; 1 MiB payloads allowed.
    "kafka": ("kafka", lambda base, topic: f"{base}/{topic}?partitions=4&rdkafka.message.max.bytes=4194304"),
    # MQTT 5 (keys and headers as user properties), QoS 1: at-least-once like the others.
    "mqtt": ("mqtt", lambda base, topic: f"{base}/{topic}?qos=1"),
    # A topic exchange of its own per test (the path); subscribers bind private or group queues to it.
    "amqp": ("amqp", lambda base, topic: f"{base}/{topic}"),
    # Core NATS (at-most-once) and JetStream (a stream of its own per test).
    "nats": ("nats", lambda base, topic: f"{base}/{topic}"),
    "jetstream": ("nats", lambda base, topic: f"{base}/{topic}?stream={topic}"),
}

TARGETS = ["mem", *_TOPIC_URL]


@pytest.fixture(params=TARGETS)
def target(request: pytest.FixtureRequest) -> Target:
    name: str = request.param
    if name == "mem":
        return Target("mem", lambda topic: f"mem://{topic}")
    kind, make = _TOPIC_URL[name]
    missing = omnibus.unavailable_drivers().get(kind)
    if missing:
        pytest.skip(f"{kind}:// is not in this build: {missing}")
    base = request.getfixturevalue(f"{kind}_url").rstrip("/")
    return Target(name, lambda topic: make(base, topic))


def require(target: Target, capability: str) -> None:
    """Skip, naming the reason, when the target's protocol cannot do `capability`."""
    caps = target.capabilities()
    if not caps.get(capability):
        pytest.skip(f"{target.name}:// cannot do {capability} (capabilities()[{capability!r}] is {caps.get(capability)!r})")


def receive_n(sub: omnibus.Subscriber, n: int, timeout: float = 10.0) -> list[omnibus.Message]:
    """Exactly n messages (fails the test when fewer arrive within `timeout`)."""
    got: list[omnibus.Message] = []
    deadline = time.monotonic() + timeout
    while len(got) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"received {len(got)} of {n} messages within {timeout} s")
        got.extend(sub.receive_batch(n - len(got), timeout=left))
    return got


def receive_from(subs: list[omnibus.Subscriber], n: int, timeout: float = 60.0) -> list[list[omnibus.Message]]:
    """What each subscriber got, receiving from all in turn until n messages arrived in total (or the timeout)."""
    got: list[list[omnibus.Message]] = [[] for _ in subs]

    def step() -> bool:
        for i, sub in enumerate(subs):
            got[i].extend(sub.receive_batch(1000, timeout=0.05))
        return sum(map(len, got)) >= n

    wait_until(step, timeout=timeout, interval=0)
    return got


def fault_loops() -> int:
    """How many times each fault test runs: OMNIBUS_FAULT_LOOPS (default 1).

    A guarantee that holds 9 times in 10 does not hold: run the crash tests
    with OMNIBUS_FAULT_LOOPS=20 (under `make sanitize` too) before calling one
    fixed.
    """
    raw = os.environ.get("OMNIBUS_FAULT_LOOPS", "1")
    try:
        n = int(raw)
    except ValueError:
        raise pytest.UsageError(f"OMNIBUS_FAULT_LOOPS={raw!r}: give a whole number of runs, e.g. 20") from None
    if n < 1:
        raise pytest.UsageError(f"OMNIBUS_FAULT_LOOPS={n}: give at least 1 run")
    return n


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Each run is a test item of its own (…[loop3]), with fresh fixtures and
    # its own pass/fail line, so the tally is pytest's summary.
    n = fault_loops()
    if n > 1 and metafunc.definition.get_closest_marker("fault"):
        metafunc.fixturenames.append("fault_loop")
        metafunc.parametrize("fault_loop", range(1, n + 1), ids=lambda i: f"loop{i}")
