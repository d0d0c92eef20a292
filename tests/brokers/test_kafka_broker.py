"""The loopback Kafka of omnibus.testing.brokers.kafka: one node and a 3-node KRaft cluster.

Readiness, restarts and cleanup are waited on by polling with generous
deadlines; nothing asserts how long anything took (the figures are printed).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from omnibus.testing import wait_until
from omnibus.testing.brokers import ProgramMissing
from omnibus.testing.brokers._base import LOOPBACK, port_is_free
from omnibus.testing.brokers.kafka import Kafka, KafkaCluster, kafka_jars, kafka_metadata, kafka_probe

pytestmark = pytest.mark.slow

KCAT = shutil.which("kcat")
needs_kcat = pytest.mark.skipif(KCAT is None, reason="kcat is not installed (Debian package kcat)")


@pytest.fixture(scope="module")
def jars() -> Path:
    """The Kafka jars, fetched on first use; skips, saying why, where they cannot be had."""
    reason = Kafka.missing()
    if reason:
        pytest.skip(reason)
    try:
        return kafka_jars()
    except ProgramMissing as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def kafka(jars: Path) -> Iterator[Kafka]:
    k = Kafka()
    try:
        k.start()
        yield k
    finally:
        k.close()


def report(capsys: pytest.CaptureFixture[str], text: str) -> None:
    with capsys.disabled():
        print(f"\n{text}")


def kcat(*args: str, data: bytes | None = None, timeout: float = 120.0) -> subprocess.CompletedProcess[bytes]:
    assert KCAT is not None
    return subprocess.run([KCAT, *args], input=data, capture_output=True, timeout=timeout, check=False)


def produce(bootstrap: str, topic: str, key: str, value: str) -> None:
    r = kcat("-b", bootstrap, "-P", "-t", topic, "-k", key, "-X", "message.timeout.ms=60000", data=value.encode() + b"\n")
    assert r.returncode == 0, r.stderr.decode(errors="replace")


def consume_first(bootstrap: str, topic: str) -> str:
    """key=value of the first record of `topic`, polling until there is one (60 s at most)."""
    got: list[str] = []

    def first() -> bool:
        r = kcat("-b", bootstrap, "-C", "-t", topic, "-o", "beginning", "-c", "1", "-e", "-f", "%k=%s\n")
        got[:] = [r.stdout.decode(errors="replace").strip()]
        return r.returncode == 0 and bool(got[0])

    assert wait_until(first, timeout=60, interval=0.5), f"nothing consumed from {topic}: {got}"
    return got[0]


def wait_topic(host: str, port: int, topic: str) -> None:
    """Ask for `topic` (auto-creating it) until the broker lists it without error."""

    def listed() -> bool:
        try:
            return topic in kafka_metadata(host, port, topics=[topic]).topics
        except (OSError, ValueError):
            return False

    assert wait_until(listed, timeout=60, interval=0.2), f"{topic} never appeared on {host}:{port}"


def assert_gone(pid: int, ports: list[int], workdir: Path) -> None:
    """No process of the broker's group or with its config, its ports free, its directory removed."""

    def no_process() -> bool:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue  # exited meanwhile
            pgid = int(stat.rsplit(")", 1)[1].split()[2])
            if pgid == pid or str(workdir).encode() in cmdline:
                return False
        return True

    assert wait_until(no_process, timeout=30, interval=0.1), f"a process of group {pid} or of {workdir} is alive"
    assert wait_until(lambda: all(port_is_free(p) for p in ports), timeout=30, interval=0.1), f"ports {ports} in use"
    assert not workdir.exists()


def test_single_node_answers_metadata(kafka: Kafka, capsys: pytest.CaptureFixture[str]) -> None:
    assert kafka.started_in is not None
    report(capsys, f"kafka: 1 node ready in {kafka.started_in:.1f} s after spawn")
    port = kafka.ports["port"]
    assert kafka.url == f"kafka://{LOOPBACK}:{port}"
    assert port != kafka.ports["controller"]
    md = kafka_probe(LOOPBACK, port)
    assert md.brokers == {1: (LOOPBACK, port)}
    assert md.controller_id == 1
    with pytest.raises(ValueError, match="1 of 2 brokers"):
        kafka_probe(LOOPBACK, port, expect_brokers=2)
    # The PLAINTEXT listener only: the controller port speaks to voters, not clients.
    with pytest.raises((OSError, ValueError)):
        kafka_metadata(LOOPBACK, kafka.ports["controller"])


@needs_kcat
def test_single_node_produce_consume_with_kcat(kafka: Kafka) -> None:
    produce(kafka.bootstrap, "omnibus-kcat", "k1", "hello kafka")
    assert consume_first(kafka.bootstrap, "omnibus-kcat") == "k1=hello kafka"
    r = kcat("-b", kafka.bootstrap, "-L", "-J")
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    listing = json.loads(r.stdout)
    assert [b["id"] for b in listing["brokers"]] == [1]
    assert "omnibus-kcat" in {t["topic"] for t in listing["topics"]}
    assert "omnibus-kcat" in kafka.metadata().topics


def test_restart_after_kill_keeps_port_and_data_and_close_leaves_nothing(
    jars: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    k = Kafka()
    try:
        k.start()
        assert k.started_in is not None
        report(capsys, f"kafka: 1 node ready in {k.started_in:.1f} s after spawn")
        ports = dict(k.ports)
        wait_topic(LOOPBACK, ports["port"], "omnibus-restart")
        if KCAT:
            produce(k.bootstrap, "omnibus-restart", "before", "the crash")
        old_pid = k.pid

        k.restart(kill=True)
        assert k.started_in is not None
        report(capsys, f"kafka: ready again in {k.started_in:.1f} s after a kill")
        assert k.pid != old_pid
        assert k.ports == ports
        md = kafka_probe(LOOPBACK, ports["port"])
        assert md.brokers == {1: (LOOPBACK, ports["port"])}
        assert "omnibus-restart" in md.topics
        if KCAT:
            assert consume_first(k.bootstrap, "omnibus-restart") == "before=the crash"

        pid, workdir = k.pid, k.dir
        assert pid is not None
    finally:
        k.close()
    assert k.pid is None and not k.is_running()
    assert_gone(pid, list(ports.values()), workdir)


def test_cluster_of_three(jars: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cluster = KafkaCluster(3)
    try:
        cluster.start()
        figures = ", ".join(f"{n.name} {n.started_in:.1f} s" for n in cluster.nodes)
        report(capsys, f"kafka: 3-node cluster ready ({figures} after each spawn)")
        expected = {n.node_id: (LOOPBACK, n.ports["port"]) for n in cluster.nodes}
        assert sorted(expected) == [1, 2, 3]
        assert cluster.url == "kafka://" + ",".join(f"{LOOPBACK}:{n.ports['port']}" for n in cluster.nodes)
        for n in cluster.nodes:
            md = kafka_probe(LOOPBACK, n.ports["port"], expect_brokers=3)
            assert md.brokers == expected
            assert md.controller_id in expected
        if KCAT:
            # Replicated on all three (default.replication.factor=3), readable through any node.
            produce(cluster.bootstrap, "omnibus-cluster", "k", "replicated")
            assert consume_first(cluster.nodes[2].bootstrap, "omnibus-cluster") == "k=replicated"
        leftovers = [(n.pid, list(n.ports.values()), n.dir) for n in cluster.nodes]
    finally:
        cluster.close()
    for pid, ports, workdir in leftovers:
        assert pid is not None
        assert_gone(pid, ports, workdir)
