"""Client crash: a subscriber process SIGKILLed while it holds unacked messages loses none of them.

A child process subscribes with auto_ack=False in a group (a Kafka consumer group, an AMQP group
queue, a JetStream durable consumer), receives some of the messages, acks some of those, prints the
ids it got and acked, and is SIGKILLed. A new subscriber in the same group must then get every
message that was not acked: the ones the child held unacked, the ones still in its prefetch buffer
and the ones it never fetched (duplicates are allowed, losses are not); a Redis consumer group (redis://, a
driver written in Python) and a Pub/Sub group's subscription (gcppubsub://, on Google's fake) too. Marked `fault`: each test
runs OMNIBUS_FAULT_LOOPS times (see conftest.pytest_generate_tests), each time on fresh names.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable

import pytest

import omnibus

MESSAGES = 30  # published per loop
HELD = 10  # handed to the child before it is killed; it acks the even ids among them

# The child: subscribe, say so, receive HELD messages, ack the even ones, print what it got and
# acked, then wait to be killed. It never closes the subscriber: a crash, not a shutdown.
CHILD = r"""
import sys, threading, omnibus
url, held = sys.argv[1], int(sys.argv[2])
sub = omnibus.subscriber(url, auto_ack=False)
print("ready", flush=True)
got = []
while len(got) < held:
    batch = sub.receive_batch(held - len(got), timeout=60)
    if not batch:
        sys.exit("no message within 60 s")
    got += batch
ids = [int(bytes(m.payload)) for m in got]
sub.ack([m for m, i in zip(got, ids) if i % 2 == 0])
print("got", *ids, flush=True)
print("acked", *[i for i in ids if i % 2 == 0], flush=True)
threading.Event().wait()
"""


class Child:
    """The subscriber process, with its stdout read on a thread so that every wait has a deadline."""

    def __init__(self, url: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", CHILD, url, str(HELD)], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        assert self.proc.stdout is not None
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        self._reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self._reader.start()

    def _read(self, stdout) -> None:  # type: ignore[no-untyped-def]
        for line in stdout:
            self.lines.put(line)

    def line(self, prefix: str, timeout: float = 90) -> list[str]:
        """The words after `prefix` on the next line that starts with it."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"the child printed no {prefix!r} line within {timeout} s; its output:\n"
                            + "".join(self.output) + f"\n(exit code {self.proc.poll()})")
            self.output.append(line)
            words = line.split()
            if words and words[0] == prefix:
                return words[1:]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._reader.join(timeout=10)  # EOF once the process is gone
        assert self.proc.stdout is not None
        self.proc.stdout.close()


def crash_and_recover(url: str, recover_url: str | None = None, timeout: float = 90) -> None:
    """One round: the child takes HELD messages, acks some, is SIGKILLed; a new member of its group gets
    every message that was not acked."""
    child = Child(url)
    try:
        child.line("ready")
        with omnibus.publisher(url) as pub:
            pub.publish_many([str(i).encode() for i in range(MESSAGES)]).result(timeout=30)
        got = {int(w) for w in child.line("got")}
        acked = {int(w) for w in child.line("acked")}
        assert len(got) == HELD and acked <= got
    finally:
        child.kill()
    assert child.proc.returncode == -signal.SIGKILL

    required = set(range(MESSAGES)) - acked
    seen: set[int] = set()
    with omnibus.subscriber(recover_url or url, auto_ack=False) as sub:
        deadline = time.monotonic() + timeout
        while not required <= seen and time.monotonic() < deadline:
            batch = sub.receive_batch(1000, timeout=0.5)
            seen.update(int(bytes(m.payload)) for m in batch)
            sub.ack(batch)
    missing = sorted(required - seen)
    assert not missing, (f"lost after the crash: {missing} (the child got {sorted(got)}, acked {sorted(acked)}; "
                         f"the new member got {sorted(seen)})")


def once(round_: Callable[[str], None]) -> None:
    round_(uuid.uuid4().hex[:10])


def needs(kind: str) -> pytest.MarkDecorator:
    missing = omnibus.unavailable_drivers().get(kind)
    return pytest.mark.skipif(bool(missing), reason=f"{kind}:// is not in this build: {missing}")


@needs("kafka")
@pytest.mark.fault
def test_kafka_group_member_crash(kafka_url: str) -> None:
    # A dead member holds its partitions until its session expires: 6 s (the broker's minimum) instead of
    # librdkafka's 45 s. The new member's open() waits for that rebalance, hence connect_timeout_ms.
    session = "rdkafka.session.timeout.ms=6000&rdkafka.heartbeat.interval.ms=500"

    def round_(n: str) -> None:
        url = f"{kafka_url}/crash-{n}?group=g-{n}&partitions=3&{session}"
        crash_and_recover(url, f"{url}&connect_timeout_ms=60000")

    once(round_)


@needs("amqp")
@pytest.mark.fault
def test_amqp_group_queue_consumer_crash(amqp_url: str) -> None:
    # The broker requeues a dead connection's unacked deliveries as soon as it sees the socket close.
    def round_(n: str) -> None:
        crash_and_recover(f"{amqp_url}/crash-{n}?group=g-{n}")

    once(round_)


@needs("nats")
@pytest.mark.fault
def test_jetstream_durable_consumer_crash(nats_url: str) -> None:
    # What the dead member fetched comes again to the durable's next member after ack_wait.
    def round_(n: str) -> None:
        crash_and_recover(f"{nats_url.rstrip('/')}/crash-{n}?stream=crash-{n}&durable=d-{n}&ack_wait=1s")

    once(round_)


@pytest.mark.fault
def test_redis_group_consumer_crash(redis_url: str) -> None:
    # The dead consumer's pending entries stay in the group's PEL; after ack_deadline_ms the new member
    # takes them over (XAUTOCLAIM) with Redis' delivery count.
    def round_(n: str) -> None:
        crash_and_recover(f"{redis_url}/crash-{n}?group=g-{n}&ack_deadline_ms=1000")

    once(round_)


@needs("gcppubsub")
@pytest.mark.fault
def test_gcppubsub_group_member_crash(gcp_url: str) -> None:
    # The dead member's leases lapse: its messages come again to the group's subscription after the
    # server's ack deadline, 10 s (Pub/Sub's minimum, which ack_deadline_ms is rounded up to).
    def round_(n: str) -> None:
        crash_and_recover(f"{gcp_url}/projects/omnibus/topics/crash-{n}?group=g-{n}&ack_deadline_ms=10000")

    once(round_)
