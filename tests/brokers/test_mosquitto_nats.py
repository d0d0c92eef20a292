"""The loopback harness for Mosquitto and NATS: start, probe, restart under load, teardown."""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from omnibus.testing import wait_until
from omnibus.testing.brokers import Mosquitto, NatsCluster, NatsServer, mqtt_probe, nats_probe
from omnibus.testing.brokers._base import Broker, _pid_alive, port_is_free


def assert_gone(broker: Broker, pid: int, ports: dict[str, int], workdir: Path) -> None:
    assert wait_until(lambda: not _pid_alive(pid)), f"pid {pid} still alive"
    assert wait_until(lambda: all(port_is_free(p) for p in ports.values())), f"ports {ports} still in use"
    assert not workdir.exists()


class LoadGenerator:
    """Publishes over raw sockets as fast as it can, reconnecting after errors."""

    def __init__(self, connect_and_send: "callable[[], None]") -> None:  # type: ignore[valid-type]
        self.fn = connect_and_send
        self.sent_batches = 0
        self.errors = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.fn(self)
            except OSError:
                self.errors += 1
                time.sleep(0.02)

    def __enter__(self) -> LoadGenerator:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


def mqtt_publisher(port: int):  # type: ignore[no-untyped-def]
    def run(load: LoadGenerator) -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            cid = b"load"
            body = b"\x00\x04MQTT\x04\x02\x00\x0a" + struct.pack("!H", len(cid)) + cid
            s.sendall(b"\x10" + bytes([len(body)]) + body)
            if s.recv(4)[:2] != b"\x20\x02":
                raise OSError("no CONNACK")
            topic = b"load/t"
            payload = b"x" * 100
            body = struct.pack("!H", len(topic)) + topic + payload
            packet = b"\x30" + bytes([len(body)]) + body
            while not load.stop.is_set():
                s.sendall(packet * 100)
                load.sent_batches += 1
    return run


def nats_publisher(port: int):  # type: ignore[no-untyped-def]
    def run(load: LoadGenerator) -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.recv(4096)  # INFO
            s.sendall(b'CONNECT {"verbose":false}\r\n')
            chunk = b"PUB load.t 100\r\n" + b"x" * 100 + b"\r\n"
            while not load.stop.is_set():
                s.sendall(chunk * 100)
                load.sent_batches += 1
    return run


@pytest.mark.parametrize("cls", [Mosquitto, NatsServer], ids=["mosquitto", "nats"])
def test_start_probe_restart_under_load_and_teardown(cls: type[Broker]) -> None:
    if cls.missing():
        pytest.skip(cls.missing())
    broker = cls()
    broker.start()
    print(f"{broker.name}: ready in {broker.started_in:.2f} s at {broker.url}")
    port = broker.ports["port"]
    probe = mqtt_probe if cls is Mosquitto else nats_probe
    generator = mqtt_publisher(port) if cls is Mosquitto else nats_publisher(port)
    try:
        probe("127.0.0.1", port)
        with LoadGenerator(generator) as load:
            assert wait_until(lambda: load.sent_batches > 50)
            old_pid = broker.pid
            broker.restart(kill=True)
            print(f"{broker.name}: back in {broker.started_in:.2f} s after SIGKILL, under load")
            assert broker.pid != old_pid and broker.ports["port"] == port
            probe("127.0.0.1", port)
            before = load.sent_batches
            # The load reconnects to the same port and goes on.
            assert wait_until(lambda: load.sent_batches > before + 50, timeout=20)
            assert load.errors >= 1  # it did see the broker go away
    finally:
        pid, ports, workdir = broker.pid, dict(broker.ports), broker.dir
        broker.close()
    assert pid is not None
    assert_gone(broker, pid, ports, workdir)


def test_mosquitto_persistence_keeps_a_retained_message_across_a_restart() -> None:
    if Mosquitto.missing() or not shutil.which("mosquitto_pub"):
        pytest.skip("mosquitto and mosquitto-clients are needed")
    with Mosquitto(persistence=True) as broker:
        port = str(broker.ports["port"])
        subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", port, "-t", "keep/me", "-m", "v1", "-r", "-q", "1"],
                       check=True, timeout=30)
        broker.restart()  # graceful: mosquitto saves its database on SIGTERM
        got = subprocess.run(["mosquitto_sub", "-h", "127.0.0.1", "-p", port, "-t", "keep/me", "-C", "1", "-W", "10"],
                             check=True, capture_output=True, text=True, timeout=30)
        assert got.stdout.strip() == "v1"


def test_a_failing_broker_reports_its_log() -> None:
    class Broken(Mosquitto):
        def _prepare(self) -> None:
            (self.dir / "mosquitto.conf").write_text("no_such_option 1\n")

    if Broken.missing():
        pytest.skip(Broken.missing())
    broker = Broken()
    with pytest.raises(Exception) as info:
        broker.start(timeout=20)
    broker.close()
    assert "exited with code" in str(info.value) and "no_such_option" in str(info.value)


def test_nats_cluster_of_three() -> None:
    if NatsServer.missing():
        pytest.skip(NatsServer.missing())
    cluster = NatsCluster(3)
    cluster.start()
    try:
        print("nats cluster ready in", [round(n.started_in or 0, 2) for n in cluster.nodes], "s")
        assert wait_until(lambda: cluster.routes_connected() == 2)
        assert cluster.url.count(",") == 2
        for n in cluster.nodes:
            nats_probe("127.0.0.1", n.ports["port"])
        # A message published on node 0 reaches a subscriber on node 2.
        with socket.create_connection(("127.0.0.1", cluster.nodes[2].ports["port"]), timeout=5) as sub, \
                socket.create_connection(("127.0.0.1", cluster.nodes[0].ports["port"]), timeout=5) as pub:
            with sub.makefile("rb") as sub_f:
                sub_f.readline()
                sub.sendall(b'CONNECT {"verbose":false}\r\nSUB across.nodes 1\r\nPING\r\n')
                assert sub_f.readline().strip() == b"PONG"
            pub.recv(4096)
            deadline = time.monotonic() + 10
            got = b""
            sub.settimeout(0.2)
            while b"MSG across.nodes" not in got and time.monotonic() < deadline:
                pub.sendall(b'CONNECT {"verbose":false}\r\nPUB across.nodes 2\r\nhi\r\n')
                try:
                    got += sub.recv(4096)
                except socket.timeout:
                    pass
            assert b"MSG across.nodes 1 2" in got
    finally:
        pids = [(n.pid, dict(n.ports), n.dir) for n in cluster.nodes]
        cluster.close()
    for pid, ports, workdir in pids:
        assert pid is not None
        assert wait_until(lambda: not _pid_alive(pid))
        assert wait_until(lambda: all(port_is_free(p) for p in ports.values()))
        assert not workdir.exists()


def test_cli_up_status_down(tmp_path: Path) -> None:
    if Mosquitto.missing() or NatsServer.missing():
        pytest.skip("mosquitto and nats-server are needed")
    env = dict(os.environ, OMNIBUS_STATE_DIR=str(tmp_path / "state"))
    cli = [sys.executable, "-m", "omnibus", "brokers"]
    up = subprocess.run(cli + ["up", "mqtt", "nats"], env=env, capture_output=True, text=True, timeout=120)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "mqtt   started  mqtt://127.0.0.1:" in up.stdout and "nats   started  nats://127.0.0.1:" in up.stdout
        exported = (tmp_path / "state" / "omnibus.env").read_text()
        assert "OMNIBUS_MQTT_URL=mqtt://127.0.0.1:" in exported and "OMNIBUS_NATS_URL=nats://127.0.0.1:" in exported
        status = subprocess.run(cli + ["status"], env=env, capture_output=True, text=True, timeout=60)
        assert status.stdout.count("answers its protocol") == 2, status.stdout
    finally:
        down = subprocess.run(cli + ["down"], env=env, capture_output=True, text=True, timeout=120)
    assert down.returncode == 0 and down.stdout.count(" down ") == 2, down.stdout
    assert not (tmp_path / "state" / "state.json").exists()
    assert not (tmp_path / "state" / "mqtt").exists()
    after = subprocess.run(cli + ["status"], env=env, capture_output=True, text=True, timeout=60)
    assert "no brokers running" in after.stdout


def test_free_ports_are_distinct_and_bindable() -> None:
    """Ports for one broker (or one cluster) are chosen together, so none repeats: a Kafka node
    once got the same port for PLAINTEXT and CONTROLLER when they were chosen one at a time."""
    from omnibus.testing.brokers._base import free_ports

    ports = free_ports(64)
    assert len(set(ports)) == 64
    assert all(port_is_free(p) for p in ports)
