"""Protocol comparison: the same workload through the same omnibus API on each protocol.

    from omnibus.bench import Workload, compare, default_targets

    with local_brokers() as urls:                      # or your own {"kafka": "kafka://...", ...}
        result = compare(default_targets(urls), Workload(messages=20_000, payload_sizes=[100, 1000]))
    result.frame()                                     # a pandas DataFrame, one row per target and size
    result.summary()                                   # the comparison table, one row per target
    result.save("out/")                                # CSV, JSON (workload, versions, machine), plots, report.html

What one row measures, for one target (a URL and its variant options) and one payload size:

- ``publish_rate``: messages per second from the first publish call until flush() returned (every
  delivery result in); ``delivered_rate``: distinct messages received per second, from the first
  publish call to the last receive. ``*_mbps``: the same in MB/s of payload.
- ``p50_ms`` ... ``max_ms``: end-to-end latency from each message's *intended* send time to the
  moment a subscriber's receive_batch() handed it over, in a log-linear histogram kept in C++
  (within 0.8 %). With ``rate`` set (open loop) the intended send times follow the schedule, so a
  publisher that falls behind shows as latency (no coordinated omission); without it messages are
  sent as fast as the target takes them and latency includes the queueing that causes.
- ``client_cpu_us``: CPU time of this process (every thread: Python, omnibus, the native client)
  per delivered message; ``broker_cpu_us``: CPU time of the broker's processes per message, where
  omnibus started the broker (else empty).
- ``wire_out_bytes`` / ``wire_in_bytes``: TCP payload bytes per message from this process to the
  broker and back, read from the kernel's counters of this process's sockets to the broker's port
  (``ss -ti``: bytes_acked, bytes_received) before and after the run: exact protocol overhead,
  including acks, heartbeats and consumer polling in that window, without a relay in the path.
- ``lost`` and ``duplicated``: counted from sequence numbers in every payload, never assumed.
  ``failed``: publishes whose delivery result was an error.
- ``broker_count`` / ``broker_check``: how many messages the broker itself says it accepted
  (Kafka end offsets, NATS monitoring in_msgs or the JetStream stream's count), and whether that
  matches what the client counted; ``not checked`` where the broker has no such counter here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
import platform
import re
import shutil
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import omnibus

from . import _core

PERCENTILES = (50.0, 90.0, 99.0, 99.9)
HEADER_BYTES = 16  # sequence number + intended send time at the start of every payload

__all__ = [
    "ComparisonResult",
    "Target",
    "Workload",
    "compare",
    "default_targets",
    "local_brokers",
    "run_target",
]


@dataclasses.dataclass
class Workload:
    """What to send. Plain data: ``Workload.from_file("w.yaml")`` or ``Workload(**dict)``.

    ``messages`` per target and payload size; ``rate`` in messages per second over all
    publishers (open loop), or None for as fast as the target takes them; ``publishers`` and
    ``subscribers`` (more than one subscriber share the messages as one group); ``key_space``
    distinct keys (0: no keys); ``headers`` on every message; ``batch`` messages per
    publish_many() call; ``idle_timeout`` seconds without a new message after the last publish
    before the run ends (what has not arrived by then counts as lost); ``options`` extra URL
    options per target name, e.g. ``{"kafka acks=1": {"linger_ms": 1}}``.
    """

    payload_sizes: list[int] = dataclasses.field(default_factory=lambda: [100])
    messages: int = 20_000
    rate: float | None = None
    publishers: int = 1
    subscribers: int = 1
    key_space: int = 0
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    batch: int = 500
    idle_timeout: float = 5.0
    options: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    name: str = "throughput"

    def __post_init__(self) -> None:
        problems = []
        if not self.payload_sizes or any(not isinstance(s, int) or s < HEADER_BYTES for s in self.payload_sizes):
            problems.append(f"payload_sizes must be integers >= {HEADER_BYTES} (the benchmark header), "
                            f"got {self.payload_sizes!r}")
        for name in ("messages", "publishers", "subscribers", "batch"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                problems.append(f"{name} must be an integer >= 1, got {value!r}")
        if self.rate is not None and (not isinstance(self.rate, (int, float)) or self.rate <= 0):
            problems.append(f"rate must be a positive number of messages per second or None, got {self.rate!r}")
        if not isinstance(self.key_space, int) or self.key_space < 0:
            problems.append(f"key_space must be an integer >= 0, got {self.key_space!r}")
        if problems:
            raise omnibus.InvalidArgument("bad workload: " + "; ".join(problems))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Workload:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise omnibus.InvalidArgument(f"unknown workload field(s) {unknown}; valid fields: {sorted(known)}")
        return cls(**dict(data))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Workload:
        """A workload from a JSON or YAML file (YAML needs PyYAML)."""
        text = Path(path).read_text()
        if str(path).endswith((".yaml", ".yml")):
            try:
                import yaml  # type: ignore[import-untyped]
            except ImportError as e:
                raise omnibus.InvalidArgument(f"{path}: reading YAML needs PyYAML (pip install pyyaml); "
                                              "or write the workload as JSON") from e
            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
        if not isinstance(data, dict):
            raise omnibus.InvalidArgument(f"{path}: a workload is a mapping of fields, got {type(data).__name__}")
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Target:
    """A protocol variant to measure: a broker URL (no topic) plus its options.

    ``base`` is ``mem://`` or a broker URL such as ``kafka://127.0.0.1:9092``; each run gets a
    fresh topic under it. In option values, ``{topic}`` is replaced by that topic (JetStream's
    ``stream={topic}``). ``broker`` is the local broker object when omnibus started it (for its
    CPU time and counters), else None.
    """

    name: str
    base: str
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    broker: Any = None

    @property
    def protocol(self) -> str:
        return self.base.split("://", 1)[0]

    def url(self, topic: str, extra: Mapping[str, Any] | None = None) -> str:
        opts = {**self.options, **(extra or {})}
        query = "&".join(f"{k}={_text(v).replace('{topic}', topic)}" for k, v in opts.items())
        base = self.base.rstrip("/")
        head = f"mem://{topic}" if self.protocol == "mem" else f"{base}/{topic}"
        return head + (f"?{query}" if query else "")


def _text(v: Any) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else str(v)


# The variants compared by default, per protocol: the usual choices a user weighs.
_VARIANTS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "mqtt": [("mqtt qos0", {"qos": 0}), ("mqtt qos1", {"qos": 1})],
    "kafka": [("kafka acks=1", {"acks": "1", "linger_ms": 5}), ("kafka acks=all", {"acks": "all", "linger_ms": 5})],
    "amqp": [("amqp", {"confirm": False}), ("amqp confirms", {"confirm": True})],
    "nats": [("nats core", {}), ("nats jetstream", {"stream": "{topic}"})],
    "redis": [("redis streams", {})],  # a driver written in Python (omnibus.redis_streams)
}
PROTOCOLS = ("mqtt", "kafka", "amqp", "nats", "redis")


def default_targets(urls: Mapping[str, str], brokers: Mapping[str, Any] | None = None,
                    *, include_mem: bool = True) -> list[Target]:
    """The default variants for each protocol in ``urls`` ({"kafka": "kafka://..."}), plus mem://.

    A protocol whose driver is not in this build is left out (``omnibus.unavailable_drivers()``
    says why).
    """
    missing = omnibus.unavailable_drivers()
    targets = [Target("mem", "mem://")] if include_mem else []
    for proto in PROTOCOLS:
        if proto in urls and proto not in missing:
            for name, options in _VARIANTS[proto]:
                targets.append(Target(name, urls[proto], options, (brokers or {}).get(proto)))
    return targets


@contextlib.contextmanager
def local_brokers(protocols: Sequence[str] = PROTOCOLS, *, note: Callable[[str], None] = print,
                  ) -> Iterator[tuple[dict[str, str], dict[str, Any]]]:
    """Brokers for ``protocols``: from OMNIBUS_<KIND>_URL when set, else started on loopback.

    Yields ``(urls, brokers)``; a broker whose program is not installed is skipped with a
    one-line note saying how to get it. Every broker started here is stopped on exit.
    """
    from .testing.brokers import BROKERS

    urls: dict[str, str] = {}
    started: dict[str, Any] = {}
    try:
        pending = []
        for proto in protocols:
            env = os.environ.get(f"OMNIBUS_{proto.upper()}_URL")
            if env:
                urls[proto] = env
                continue
            if proto in omnibus.unavailable_drivers():
                note(f"skipping {proto}: {omnibus.unavailable_drivers()[proto]}")
                continue
            cls = BROKERS[proto]
            why = cls.missing()
            if why:
                note(f"skipping {proto}: {why}")
                continue
            pending.append((proto, cls()))
        # Spawn every broker, then wait for each: RabbitMQ and Kafka boot side by side. Spawned
        # from this thread, which outlives them (a broker is signalled when its spawning thread ends).
        errors: dict[str, BaseException] = {}
        for proto, broker in pending:
            try:
                broker.spawn()
            except Exception as e:  # reported below, the others go on
                errors[proto] = e
        for proto, broker in pending:
            if proto not in errors:
                try:
                    broker.wait_ready()
                except Exception as e:
                    errors[proto] = e
        for proto, broker in pending:
            if proto in errors:
                note(f"skipping {proto}: its broker did not start: {errors[proto]}")
                with contextlib.suppress(Exception):
                    broker.close()
            else:
                started[proto] = broker
                urls[proto] = broker.url
        yield urls, started
    finally:
        for broker in started.values():
            with contextlib.suppress(Exception):
                broker.close()


# ---------------------------------------------------------------- counters


def _tcp_bytes(port: int) -> tuple[int, int] | None:
    """(bytes acked by the broker, bytes received from it) over this process's sockets to ``port``."""
    if shutil.which("ss") is None:
        return None
    out = subprocess.run(["ss", "-tinpH", "state", "established", f"( dport = :{port} )"],
                         capture_output=True, text=True, timeout=10).stdout
    sent = received = 0
    pid = f"pid={os.getpid()},"
    # Each socket is a line with its addresses and process, then an indented line of TCP info.
    for record in re.split(r"\n(?=\S)", out):
        if pid not in record:
            continue
        m = re.search(r"bytes_acked:(\d+)", record)
        sent += int(m.group(1)) if m else 0
        m = re.search(r"bytes_received:(\d+)", record)
        received += int(m.group(1)) if m else 0
    return sent, received


def _broker_port(target: Target) -> int | None:
    if target.protocol == "mem":
        return None
    hostport = target.base.split("://", 1)[1].split("@")[-1].split("/", 1)[0].split(",")[0]
    try:
        return int(hostport.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return None


def _process_tree_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) of ``pid`` and its descendants, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    if pid not in stats:
        return None
    total, frontier = 0.0, [pid]
    while frontier:
        p = frontier.pop()
        total += stats[p][1]
        frontier.extend(c for c, (ppid, _) in stats.items() if ppid == p)
    return total


class _BrokerCounter:
    """The broker's own count of messages accepted on a topic, where it has one."""

    def __init__(self, target: Target, topic: str) -> None:
        self.target, self.topic = target, topic
        self.before = self._read()

    def _read(self) -> int | None:
        proto, broker = self.target.protocol, self.target.broker
        try:
            if proto == "kafka":
                return _kafka_end_offsets(self.target.base, self.topic)
            if proto == "redis":
                return _redis_stream_length(self.target.base, self.topic)
            if proto == "nats" and broker is not None and "monitor" in getattr(broker, "ports", {}):
                mon = f"http://127.0.0.1:{broker.ports['monitor']}"
                if "stream" in self.target.options:
                    with urllib.request.urlopen(f"{mon}/jsz?streams=true", timeout=5) as r:  # noqa: S310
                        data = json.loads(r.read())
                    for acc in data.get("account_details", []):
                        for s in acc.get("stream_detail", []):
                            if s.get("name") == self.topic:
                                return int(s["state"]["messages"])
                    return 0
                with urllib.request.urlopen(f"{mon}/varz", timeout=5) as r:  # noqa: S310
                    return int(json.loads(r.read())["in_msgs"])
        except Exception:
            return None
        return None

    def delta(self) -> int | None:
        after = self._read()
        if after is None or self.before is None:
            return None
        return after - self.before


def _redis_stream_length(base: str, stream: str) -> int | None:
    """XLEN of the stream: every entry the benchmark XADDed (it sets no MAXLEN)."""
    import redis

    host, port = base.split("://", 1)[1].rstrip("/").rsplit("@", 1)[-1].rsplit(":", 1)
    client = redis.Redis(host=host, port=int(port))
    try:
        return int(client.xlen(stream))
    finally:
        client.close()


def _kafka_end_offsets(base: str, topic: str) -> int | None:
    try:
        from confluent_kafka import Consumer, TopicPartition
    except ImportError:
        return None
    bootstrap = base.split("://", 1)[1].split("/", 1)[0]
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"omnibus-bench-{uuid.uuid4().hex[:6]}"})
    try:
        meta = c.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            return 0
        return sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in meta.partitions)
    finally:
        c.close()


# ---------------------------------------------------------------- one run

_runs = itertools.count()


def _warm_up(pub: omnibus.Publisher, subs: list[omnibus.Subscriber], timeout: float = 30.0) -> int:
    """Publish markers until every subscriber got one: connections, subscriptions and topics are
    ready before the clock starts. Returns how many markers were published."""
    marker = _core.make_payloads(2**63, 1, HEADER_BYTES, 0, 0)[0]  # a sequence number no run uses
    waiting = set(range(len(subs)))
    deadline = time.monotonic() + timeout
    sent = 0
    while waiting:
        if time.monotonic() > deadline:
            raise omnibus.Timeout(f"warm-up: {len(waiting)} subscriber(s) received nothing within {timeout} s")
        pub.publish(marker).result(timeout=timeout)
        sent += 1
        for i in list(waiting):
            if subs[i].receive_batch(1000, timeout=0.5 if len(subs) == 1 else 0.2):
                waiting.discard(i)
        if len(subs) > 1 and sent >= 50:
            break  # competing consumers: a member may legitimately get nothing (e.g. one partition)
    for s in subs:  # late markers
        s.receive_batch(1000, timeout=0.2)
    return sent


def run_target(target: Target, size: int, workload: Workload) -> dict[str, Any]:
    """Measure one target at one payload size; one result row (see the module doc)."""
    n = workload.messages
    topic = f"cmp-{os.getpid()}-{next(_runs)}-{uuid.uuid4().hex[:6]}"
    extra = workload.options.get(target.name, {})
    url = target.url(topic, extra)
    sub_opts: dict[str, Any] = {"group": f"g-{topic}"} if workload.subscribers > 1 else {}
    row: dict[str, Any] = {"workload": workload.name, "target": target.name, "protocol": target.protocol,
                           "payload_bytes": size, "messages": n, "rate": workload.rate, "topic": topic}
    recorder = _core.DeliveryRecorder(n)
    with contextlib.ExitStack() as stack:
        subs = [stack.enter_context(omnibus.subscriber(url, **sub_opts)) for _ in range(workload.subscribers)]
        pubs = [stack.enter_context(omnibus.publisher(url, max_pending=max(4 * workload.batch, 10_000)))
                for _ in range(workload.publishers)]
        caps = pubs[0].capabilities()
        sub_caps = subs[0].capabilities()
        # The pair is as strong as its weaker side (amqp with confirm=false: the publisher is at-most-once).
        sides = {caps.get("delivery_guarantee"), sub_caps.get("delivery_guarantee")}
        row["guarantee"] = "at-most-once" if "at-most-once" in sides else sub_caps.get("delivery_guarantee")
        _warm_up(pubs[0], subs)
        counter = _BrokerCounter(target, topic)
        port = _broker_port(target)
        wire0 = _tcp_bytes(port) if port else None
        broker_pid = getattr(target.broker, "pid", None)
        broker_cpu0 = _process_tree_cpu(broker_pid) if broker_pid else None
        cpu0 = time.process_time()

        stop = threading.Event()
        done_publishing = threading.Event()
        failures: list[int] = []
        receive_errors: list[BaseException] = []

        def receive(sub: omnibus.Subscriber) -> None:
            try:
                while not stop.is_set():
                    batch = sub.receive_batch(1000, timeout=0.05)
                    if batch:
                        recorder.record(batch)
            except BaseException as e:  # noqa: BLE001 - reported in the row
                receive_errors.append(e)

        keys_cycle = [f"k{i}".encode() for i in range(workload.key_space)] if workload.key_space else None
        headers = [(k, v.encode()) for k, v in workload.headers.items()] or None
        per_pub = [(i * n // workload.publishers, (i + 1) * n // workload.publishers) for i in range(workload.publishers)]
        start_ns = time.monotonic_ns() + 1_000_000  # a common schedule for every publisher
        interval_ns = int(1e9 / workload.rate) if workload.rate else 0

        def publish(pub: omnibus.Publisher, first: int, end: int) -> None:
            deliveries = []
            seq = first
            while seq < end:
                now = time.monotonic_ns()
                if interval_ns:
                    due = min(end, (now - start_ns) // interval_ns + 1)
                    if due <= seq:  # ahead of the schedule: wait for the next message's time
                        time.sleep(max(0.0, (start_ns + seq * interval_ns - now) / 1e9))
                        continue
                    count = min(due - seq, workload.batch)
                    payloads = _core.make_payloads(seq, count, size, start_ns, interval_ns)
                else:
                    count = min(end - seq, workload.batch)
                    payloads = _core.make_payloads(seq, count, size, now, 0)  # stamped: sent now
                keys = [keys_cycle[(seq + i) % len(keys_cycle)] for i in range(count)] if keys_cycle else None
                deliveries.append((seq, pub.publish_many(payloads, keys=keys,
                                                         headers=[headers] * count if headers else None)))
                seq += count
            pub.flush()
            for first_seq, d in deliveries:
                failures.extend(first_seq + i for i, _ in d.failures())

        receivers = [threading.Thread(target=receive, args=(s,), name="bench-receive") for s in subs]
        publishers = [threading.Thread(target=publish, args=(p, a, b), name="bench-publish")
                      for p, (a, b) in zip(pubs, per_pub)]
        for t in receivers + publishers:
            t.start()
        t0 = time.monotonic_ns()
        for t in publishers:
            t.join()
        published_ns = time.monotonic_ns()
        done_publishing.set()
        # Wait until everything arrived, or nothing new came for idle_timeout seconds.
        last, last_change = -1, time.monotonic()
        while recorder.unique < n and not receive_errors:
            got = recorder.received
            if got != last:
                last, last_change = got, time.monotonic()
            elif time.monotonic() - last_change > workload.idle_timeout:
                break
            time.sleep(0.01)
        stop.set()
        for t in receivers:
            t.join()
        cpu = time.process_time() - cpu0
        wire1 = _tcp_bytes(port) if port else None
        broker_cpu1 = _process_tree_cpu(broker_pid) if broker_pid else None
        broker_count = counter.delta()
    hist = recorder.histogram()
    unique = recorder.unique
    pct = hist.percentiles(list(PERCENTILES))
    publish_s = max(published_ns - min(t0, start_ns), 1) / 1e9
    deliver_s = max(recorder.last_ns - min(t0, start_ns), 1) / 1e9 if unique else float("nan")
    ok_published = n - len(failures)
    row.update({
        "publish_rate": n / publish_s,
        "delivered_rate": unique / deliver_s if unique else 0.0,
        "publish_mbps": n * size / publish_s / 1e6,
        "delivered_mbps": unique * size / deliver_s / 1e6 if unique else 0.0,
        **{f"p{p:g}_ms".replace(".", "_"): v / 1e6 for p, v in zip(PERCENTILES, pct)},
        "max_ms": hist.max / 1e6,
        "mean_ms": hist.mean / 1e6,
        "client_cpu_us": cpu / max(unique, 1) * 1e6,
        "broker_cpu_us": (broker_cpu1 - broker_cpu0) / max(unique, 1) * 1e6
        if broker_cpu0 is not None and broker_cpu1 is not None else None,
        "wire_out_bytes": (wire1[0] - wire0[0]) / n if wire0 and wire1 else None,
        "wire_in_bytes": (wire1[1] - wire0[1]) / n if wire0 and wire1 else None,
        "received": recorder.received,
        "lost": n - unique,
        "duplicated": recorder.duplicates,
        "failed": len(failures),
        "broker_count": broker_count,
        "broker_check": _check(broker_count, ok_published, target),
        "error": "; ".join(repr(e) for e in receive_errors) or None,
    })
    return row


def _check(broker_count: int | None, published: int, target: Target) -> str:
    if broker_count is None:
        return "not checked"
    if broker_count == published:
        return "ok"
    if target.protocol == "nats" and "stream" not in target.options and broker_count > published:
        # in_msgs counts every message from every client of the server (others may share it).
        return f"ok (server-wide count {broker_count} >= {published})"
    return f"mismatch: broker counted {broker_count}, client {published}"


# ---------------------------------------------------------------- many runs


@dataclasses.dataclass
class ComparisonResult:
    """Rows of measurements plus what they were measured on."""

    rows: list[dict[str, Any]]
    workloads: list[Workload]
    meta: dict[str, Any]

    def frame(self) -> Any:
        """Every row as a pandas DataFrame (needs pandas)."""
        return _pandas().DataFrame(self.rows)

    def summary(self) -> Any:
        """One row per workload and target: guarantee, throughput, latency, overhead, CPU, loss."""
        df = self.frame()
        if df.empty:
            return df
        cols = {"guarantee": "first", "delivered_rate": "max", "delivered_mbps": "max", "p50_ms": "median",
                "p99_ms": "median", "wire_out_bytes": "median", "wire_in_bytes": "median",
                "client_cpu_us": "median", "broker_cpu_us": "median", "lost": "sum", "duplicated": "sum",
                "failed": "sum", "broker_check": lambda s: "ok" if all(str(x).startswith("ok") for x in s)
                else "; ".join(sorted({str(x) for x in s if not str(x).startswith("ok")}))}
        return df.groupby(["workload", "target"], sort=False).agg(cols).reset_index()

    def table(self) -> str:
        """The summary as fixed-width text, for a terminal."""
        s = self.summary()
        if len(s) == 0:
            return "(no results)"
        fmt = {"delivered_rate": "{:,.0f}", "delivered_mbps": "{:.1f}", "p50_ms": "{:.2f}", "p99_ms": "{:.2f}",
               "wire_out_bytes": "{:.0f}", "wire_in_bytes": "{:.0f}", "client_cpu_us": "{:.1f}",
               "broker_cpu_us": "{:.1f}"}
        headers = {"delivered_rate": "msg/s", "delivered_mbps": "MB/s", "p50_ms": "p50 ms", "p99_ms": "p99 ms",
                   "wire_out_bytes": "B out/msg", "wire_in_bytes": "B in/msg", "client_cpu_us": "cpu us/msg",
                   "broker_cpu_us": "broker us/msg", "broker_check": "broker count"}
        cells = [[headers.get(c, c) for c in s.columns]]
        for _, r in s.iterrows():
            cells.append(["-" if _missing(r[c]) else fmt[c].format(r[c]) if c in fmt else str(r[c]) for c in s.columns])
        widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
        return "\n".join("  ".join(v.rjust(w) if j > 2 else v.ljust(w) for j, (v, w) in enumerate(zip(row, widths)))
                         for row in cells)

    def plot(self, out: str | os.PathLike[str]) -> list[Path]:
        """PNG plots into ``out``: throughput vs payload size, latency percentiles, bytes and CPU per message."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        df = self.frame()
        paths: list[Path] = []
        if df.empty:
            return paths
        for wl, part in df.groupby("workload", sort=False):
            fig, ax = plt.subplots(figsize=(7, 4))
            for target, g in part.groupby("target", sort=False):
                ax.plot(g["payload_bytes"], g["delivered_rate"], marker="o", label=target)
            ax.set(xscale="log", yscale="log", xlabel="payload bytes", ylabel="delivered msg/s",
                   title=f"Throughput vs payload size ({wl})")
            ax.legend(fontsize=7)
            paths.append(_save(fig, out / f"throughput_{wl}.png"))

            size = part["payload_bytes"].min()
            g = part[part["payload_bytes"] == size].set_index("target")
            cols = [c for c in ("p50_ms", "p90_ms", "p99_ms", "p99_9_ms", "max_ms") if c in g]
            fig, ax = plt.subplots(figsize=(8, 4))
            g[cols].plot.bar(ax=ax, logy=True)
            ax.set(ylabel="ms (log)", title=f"End-to-end latency percentiles, {size}-byte payloads ({wl})")
            paths.append(_save(fig, out / f"latency_{wl}.png"))

            fig, axes = plt.subplots(1, 2, figsize=(10, 4))
            g[["wire_out_bytes", "wire_in_bytes"]].plot.bar(ax=axes[0])
            axes[0].set(ylabel="TCP payload bytes per message", title=f"Bytes on the wire, {size} B payloads")
            g[["client_cpu_us", "broker_cpu_us"]].plot.bar(ax=axes[1])
            axes[1].set(ylabel="CPU µs per message", title="CPU per message")
            paths.append(_save(fig, out / f"overhead_{wl}.png"))
        return paths

    def save(self, out: str | os.PathLike[str]) -> Path:
        """results.csv, results.json (rows, workloads, machine and versions), the plots and report.html."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        self.frame().to_csv(out / "results.csv", index=False)
        (out / "results.json").write_text(json.dumps(
            {"meta": self.meta, "workloads": [w.to_dict() for w in self.workloads], "rows": self.rows},
            indent=2, default=str))
        plots = self.plot(out)
        html = ["<!doctype html><meta charset='utf-8'><title>omnibus protocol comparison</title>",
                "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:13px}"
                "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}</style>",
                "<h1>omnibus protocol comparison</h1>",
                f"<p>{_html(self.meta.get('machine', ''))}; omnibus {omnibus.__version__}; "
                f"{_html(json.dumps(self.meta.get('brokers', {})))}</p>",
                "<h2>Summary</h2>", self.summary().to_html(index=False, float_format=lambda v: f"{v:,.2f}"),
                "<p>msg/s: distinct messages delivered per second; latency from the intended send time; "
                "bytes: TCP payload per message each way; CPU: this process and the broker's, per message; "
                "lost/duplicated: counted from sequence numbers; broker count: the broker's own counter.</p>"]
        html += [f"<h2>{p.stem}</h2><img src='{p.name}'>" for p in plots]
        html += ["<h2>Every run</h2>", self.frame().to_html(index=False, float_format=lambda v: f"{v:,.3f}")]
        (out / "report.html").write_text("\n".join(html))
        return out / "report.html"


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and v != v)


def _html(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def _pandas() -> Any:
    try:
        import pandas
    except ImportError as e:
        raise omnibus.Unsupported("results as a DataFrame need pandas: pip install pandas matplotlib") from e
    return pandas


def machine_facts(brokers: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Cores, kernel, Python, omnibus and broker versions, for the results' metadata."""
    facts: dict[str, Any] = {
        "machine": f"{os.cpu_count()} cores, {platform.platform()}, Python {platform.python_version()}",
        "omnibus": omnibus.__version__,
        "time": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "brokers": {},
    }
    for proto, broker in (brokers or {}).items():
        facts["brokers"][proto] = getattr(broker, "version", None) or type(broker).__name__
    return facts


def compare(targets: Sequence[Target], workloads: Workload | Sequence[Workload] = Workload(), *,
            progress: Callable[[int, int, str, dict[str, Any] | None], None] | None = None,
            meta: Mapping[str, Any] | None = None) -> ComparisonResult:
    """Run every workload on every target at every payload size; one row per run.

    A run that fails (a broker gone, a timeout) becomes a row with its ``error`` and the
    comparison goes on. ``progress(done, total, label, row)`` is called before and after each run.
    """
    wls = [workloads] if isinstance(workloads, Workload) else list(workloads)
    plan = [(w, t, s) for w in wls for t in targets for s in w.payload_sizes]
    rows: list[dict[str, Any]] = []
    for i, (w, t, s) in enumerate(plan):
        label = f"{w.name}: {t.name}, {s} B"
        if progress:
            progress(i, len(plan), label, None)
        try:
            row = run_target(t, s, w)
        except (omnibus.Error, OSError) as e:
            row = {"workload": w.name, "target": t.name, "protocol": t.protocol, "payload_bytes": s,
                   "messages": w.messages, "error": f"{type(e).__name__}: {e}"}
        rows.append(row)
        if progress:
            progress(i + 1, len(plan), label, row)
    return ComparisonResult(rows, wls, dict(meta or machine_facts()))
