"""Soak: publish and consume through every driver for N minutes, restarting a broker every so often,
and print this process's RSS, open file descriptors and threads once a minute. They must stay flat.

    make soak                       # 10 minutes
    make soak SOAK_MINUTES=30       # or: python tests/soak.py --minutes 30 --restart-every 90

Brokers are started on loopback by omnibus.testing (Mosquitto, nats-server with JetStream, RabbitMQ,
Kafka) and one of them is restarted (SIGTERM, then started again on the same ports) every
--restart-every seconds, in turn. Publish failures around a restart are counted, not fatal: this run
looks for what grows, not for lost messages (the fault tests do that).

Exit status 1 when, between the end of the first minute and the end of the run, open file descriptors
grew by more than 10 or threads by more than 5, or RSS grew by more than 25% and 64 MiB together.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from dataclasses import dataclass, field

import omnibus
from omnibus.testing.brokers import Kafka, Mosquitto, NatsServer, RabbitMQ, started


@dataclass
class Flow:
    name: str
    url: str
    sent: int = 0
    received: int = 0
    errors: int = 0
    last_error: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, e: BaseException) -> None:
        with self.lock:
            self.errors += 1
            self.last_error = f"{type(e).__name__}: {str(e)[:160]}"


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def threads() -> int:
    return len(os.listdir("/proc/self/task"))


def run_flow(flow: Flow, stop: threading.Event, rate: int) -> None:
    """Publishes `rate` messages a second in batches of 100 and consumes them, acking each; reopens a
    subscriber that failed. Errors are counted and the loop goes on."""
    sub: omnibus.Subscriber | None = None
    pub: omnibus.Publisher | None = None
    interval = 100 / rate
    try:
        while not stop.is_set():
            started_at = time.monotonic()
            try:
                if pub is None:
                    pub = omnibus.publisher(flow.url)
                if sub is None:
                    sub = omnibus.subscriber(flow.url, group="soak", auto_ack=False, prefetch=1000)
                delivery = pub.publish_many([b"x" * 100] * 100)
                if not delivery.wait(timeout=60):
                    raise omnibus.Timeout("a batch of 100 was not settled within 60 s")
                failures = delivery.failures()
                with flow.lock:
                    flow.sent += 100 - len(failures)
                if failures:
                    flow.note(failures[0][1])
                for m in sub.receive_batch(1000, timeout=0.05):
                    m.ack()
                    with flow.lock:
                        flow.received += 1
            except omnibus.Error as e:
                flow.note(e)
                if isinstance(e, omnibus.Closed) and sub is not None:
                    sub.close()
                    sub = None
                stop.wait(0.5)
            stop.wait(max(0.0, interval - (time.monotonic() - started_at)))
    finally:
        for obj in (pub, sub):
            if obj is not None:
                try:
                    obj.close()
                except omnibus.Error as e:
                    flow.note(e)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=float(os.environ.get("SOAK_MINUTES", "10")))
    ap.add_argument("--restart-every", type=float, default=60.0, help="seconds between broker restarts")
    ap.add_argument("--rate", type=int, default=1000, help="messages a second per driver")
    args = ap.parse_args(argv)
    if args.minutes <= 0 or args.restart_every <= 0 or args.rate < 100:
        ap.error("--minutes and --restart-every must be positive and --rate at least 100")

    brokers = [Mosquitto(), NatsServer(), RabbitMQ(), Kafka()]
    with started(*brokers) as (mqtt, nats, amqp, kafka):
        flows = [
            Flow("mem", "mem://soak"),
            Flow("kafka", f"{kafka.url}/soak?partitions=2"),
            Flow("mqtt", f"{mqtt.url}/soak?qos=1"),
            Flow("amqp", f"{amqp.url}/soak"),
            Flow("nats", f"{nats.url}/soak"),
            Flow("jetstream", f"{nats.url}/soakjs?stream=soakjs"),
        ]
        stop = threading.Event()
        workers = [threading.Thread(target=run_flow, args=(f, stop, args.rate), name=f.name) for f in flows]
        for w in workers:
            w.start()
        print(f"soak: {len(flows)} flows at {args.rate} msg/s each for {args.minutes:g} min, "
              f"a broker restarted every {args.restart_every:g} s", flush=True)
        print(f"{'min':>4} {'RSS MiB':>8} {'fds':>5} {'threads':>7}  " + "  ".join(f"{f.name}(sent/recv/err)" for f in flows))
        samples: list[tuple[float, int, int]] = []
        begin = time.monotonic()
        next_restart = begin + args.restart_every
        turn = 0
        try:
            for minute in range(1, int(args.minutes) + 1 if args.minutes >= 1 else 2):
                end_of_minute = begin + min(minute * 60, args.minutes * 60)
                while time.monotonic() < end_of_minute:
                    if time.monotonic() >= next_restart:
                        b = brokers[turn % len(brokers)]
                        turn += 1
                        # From this thread: a broker process dies with the thread that started it.
                        b.restart()
                        next_restart = time.monotonic() + args.restart_every
                    time.sleep(min(1.0, max(0.0, end_of_minute - time.monotonic())))
                sample = (rss_mib(), fds(), threads())
                samples.append(sample)
                counts = "  ".join(f"{f.sent}/{f.received}/{f.errors}".rjust(len(f.name) + 16) for f in flows)
                print(f"{minute:>4} {sample[0]:>8.1f} {sample[1]:>5} {sample[2]:>7}  {counts}", flush=True)
        finally:
            stop.set()
            for w in workers:
                w.join()
        for f in flows:
            if f.errors:
                print(f"  {f.name}: {f.errors} errors, last: {f.last_error}")
    first, last = samples[0], samples[-1]
    grew = []
    if last[1] - first[1] > 10:
        grew.append(f"open fds {first[1]} -> {last[1]}")
    if last[2] - first[2] > 5:
        grew.append(f"threads {first[2]} -> {last[2]}")
    if last[0] > first[0] * 1.25 and last[0] - first[0] > 64:
        grew.append(f"RSS {first[0]:.1f} -> {last[0]:.1f} MiB")
    idle = [f.name for f in flows if f.received == 0]
    if idle:
        grew.append(f"no message received on {', '.join(idle)}")
    print("soak: " + ("FAILED: " + "; ".join(grew) if grew else
                      f"flat: RSS {first[0]:.1f} -> {last[0]:.1f} MiB, fds {first[1]} -> {last[1]}, "
                      f"threads {first[2]} -> {last[2]}"))
    return 1 if grew else 0


if __name__ == "__main__":
    sys.exit(main())
