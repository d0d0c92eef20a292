"""RabbitMQ 3 (Debian package ``rabbitmq-server``) on loopback, one node per instance.

Each instance is its own Erlang node (``omnibus-<port>@localhost``) with its own
epmd on a private port, so several can run side by side and none touches the
system's node (``rabbit@<host>``, epmd on 4369, /var/lib/rabbitmq, /etc/rabbitmq).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from ._base import LOOPBACK, Broker, BrokerError, port_is_free, program_env

AMQP_HEADER = b"AMQP\x00\x00\x09\x01"  # AMQP 0-9-1
_FRAME_METHOD = 1
_FRAME_HEARTBEAT = 8
_FRAME_END = 0xCE
_FRAME_TYPES = (_FRAME_METHOD, 2, 3, _FRAME_HEARTBEAT)  # method, header, body, heartbeat
_MAX_FRAME = 1 << 20  # far above what a server sends before Tune (its frame-max is 128 KiB)
_CONNECTION = 10  # class id; method ids below
_START, _START_OK, _TUNE, _TUNE_OK, _OPEN, _OPEN_OK, _CLOSE, _CLOSE_OK = 10, 11, 30, 31, 40, 41, 50, 51


def _shortstr(s: bytes) -> bytes:
    return bytes([len(s)]) + s


def _longstr(s: bytes) -> bytes:
    return struct.pack("!I", len(s)) + s


def _method(class_id: int, method_id: int, args: bytes = b"") -> bytes:
    payload = struct.pack("!HH", class_id, method_id) + args
    return struct.pack("!BHI", _FRAME_METHOD, 0, len(payload)) + payload + bytes([_FRAME_END])


class _Reader:
    """Reads whole AMQP frames from a socket; a closed socket is a ValueError."""

    def __init__(self, sock: socket.socket, peer: str) -> None:
        self.sock = sock
        self.peer = peer

    def _exactly(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                # RabbitMQ closes without a word when it refuses a login from a
                # client that did not ask for authentication_failure_close, or
                # while it is still booting.
                raise ValueError(f"{self.peer} closed the connection during the AMQP handshake")
            buf += chunk
        return buf

    def method(self) -> tuple[int, int, bytes]:
        """Next method frame on channel 0 as (class, method, arguments); skips heartbeats."""
        while True:
            head = self._exactly(7)
            if head.startswith(b"AMQP"):
                # A server that does not speak 0-9-1 answers with the header it does speak.
                raise ValueError(f"{self.peer} refused AMQP 0-9-1, offers {head + self._exactly(1)!r}")
            kind, channel, size = struct.unpack("!BHI", head)
            if kind not in _FRAME_TYPES or size > _MAX_FRAME:
                # Checked before reading the payload: a non-AMQP server's bytes
                # would otherwise announce a huge frame and we would wait for it.
                raise ValueError(f"{self.peer} does not speak AMQP: {head!r}")
            payload = self._exactly(size)
            if self._exactly(1)[0] != _FRAME_END:
                raise ValueError(f"{self.peer}: bad AMQP frame end")
            if kind == _FRAME_HEARTBEAT:
                continue
            if kind != _FRAME_METHOD or channel != 0 or size < struct.calcsize("!HH"):
                raise ValueError(f"{self.peer}: wanted a method frame on channel 0, not {kind} on {channel}")
            class_id, method_id = struct.unpack("!HH", payload[:4])
            return class_id, method_id, payload[4:]

    def expect(self, method_id: int, name: str) -> bytes:
        class_id, got, args = self.method()
        if (class_id, got) == (_CONNECTION, _CLOSE) and method_id != _CLOSE:
            code = struct.unpack("!H", args[:2])[0]
            text = args[3 : 3 + args[2]].decode(errors="replace")
            raise ValueError(f"{self.peer} closed the connection instead of Connection.{name}: {code} {text}")
        if (class_id, got) != (_CONNECTION, method_id):
            raise ValueError(f"{self.peer}: expected Connection.{name}, got method ({class_id},{got})")
        return args


def amqp_probe(
    host: str,
    port: int,
    timeout: float = 2.0,
    *,
    user: str = "guest",
    password: str = "guest",
    vhost: str = "/",
    login: bool = True,
) -> None:
    """AMQP 0-9-1 handshake. Raises ValueError (or OSError) unless the node is usable.

    Sends the protocol header and expects Connection.Start. With ``login``
    (the default) it goes on: Start-Ok with PLAIN ``user``/``password``,
    Tune/Tune-Ok, Open of ``vhost``, expects Open-Ok, then closes cleanly. A
    bare Start only proves the listener is up; Open-Ok proves the node has
    booted far enough to authenticate and serve the vhost.
    """
    peer = f"{host}:{port}"
    with socket.create_connection((host, port), timeout=timeout) as s:
        r = _Reader(s, peer)
        s.sendall(AMQP_HEADER)
        args = r.expect(_START, "Start")
        if not login:
            return
        # Start: version-major, version-minor, server-properties (table), mechanisms (longstr), locales.
        (props_len,) = struct.unpack("!I", args[2:6])
        mech_at = 6 + props_len
        (mech_len,) = struct.unpack("!I", args[mech_at : mech_at + 4])
        mechanisms = args[mech_at + 4 : mech_at + 4 + mech_len].split()
        if b"PLAIN" not in mechanisms:
            raise ValueError(f"{peer} does not offer PLAIN login: {mechanisms!r}")
        # Asking for authentication_failure_close makes a refused login a
        # Connection.Close with a reason rather than a silent disconnect.
        capabilities = _shortstr(b"authentication_failure_close") + b"t\x01"
        props = (
            _shortstr(b"product") + b"S" + _longstr(b"omnibus-probe")
            + _shortstr(b"capabilities") + b"F" + _longstr(capabilities)
        )  # fmt: skip
        response = b"\x00" + user.encode() + b"\x00" + password.encode()
        start_ok = _longstr(props) + _shortstr(b"PLAIN") + _longstr(response) + _shortstr(b"en_US")
        s.sendall(_method(_CONNECTION, _START_OK, start_ok))
        channel_max, frame_max, _heartbeat = struct.unpack("!HIH", r.expect(_TUNE, "Tune")[:8])
        # Heartbeat 0: none, for a connection that lives a few milliseconds.
        s.sendall(_method(_CONNECTION, _TUNE_OK, struct.pack("!HIH", channel_max, frame_max, 0)))
        s.sendall(_method(_CONNECTION, _OPEN, _shortstr(vhost.encode()) + _shortstr(b"") + b"\x00"))
        r.expect(_OPEN_OK, "Open-Ok")
        close = struct.pack("!H", 200) + _shortstr(b"probe done") + struct.pack("!HH", 0, 0)
        s.sendall(_method(_CONNECTION, _CLOSE, close))
        # Waiting for Close-Ok spares the server a "client unexpectedly closed
        # TCP connection" warning per probe; not getting it is no failure.
        with contextlib.suppress(OSError, ValueError):
            r.expect(_CLOSE_OK, "Close-Ok")


def _password_hash(password: str) -> str:
    """RabbitMQ's rabbit_password_hashing_sha256: base64(salt + sha256(salt + password)), 4-byte salt."""
    salt = os.urandom(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


class RabbitMQ(Broker):
    """rabbitmq-server in the foreground, AMQP on one loopback port, everything in ``self.dir``.

    Ports: ``port`` (AMQP), ``dist`` (Erlang distribution, which rabbitmqctl
    would use) and ``epmd`` (this node's private Erlang port mapper); ``tls`` with ``tls=True``;
    ``metrics`` with ``metrics=True``.
    """

    kind = "amqp"
    # The /usr/sbin/rabbitmq-server wrapper su's to the rabbitmq user and cd's
    # to /var/lib/rabbitmq; this script runs the node as us, in the foreground,
    # and turns SIGTERM into a clean shutdown.
    program = "/usr/lib/rabbitmq/bin/rabbitmq-server"
    install_hint = "install Debian's rabbitmq-server package (make deps)"
    default_start_timeout = 90.0  # a cold Erlang boot on a small CI machine takes several seconds

    def __init__(self, *, tls: bool = False, metrics: bool = False, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        # With metrics, the rabbitmq_prometheus plugin serves the node's exact counters (port
        # "metrics", see messages_received()): the comparison's broker-side count. Off by default:
        # its web server adds to every boot.
        self.metrics = metrics
        # With tls, a second listener (port "tls") serves AMQP over TLS with certificates from
        # omnibus.testing.certs (self.pki); client certificates are checked when given, not required,
        # and one is a login too (SASL EXTERNAL, the rabbitmq_auth_mechanism_ssl plugin): the user
        # named as its common name, "omnibus-client" for self.pki.client_cert, exists with no password.
        self.pki = self._certificates(tls)

    def _ports(self) -> Sequence[str]:
        return ("port", "dist", "epmd") + (("tls",) if self.pki else ()) + (("metrics",) if self.metrics else ())

    def messages_received(self) -> int:
        """Messages the node accepted from AMQP 0-9-1 publishers since it started: the global
        counter ``rabbitmq_global_messages_received_total`` (exact, not the management plugin's
        sampled rates). Needs ``metrics=True``; raises BrokerError when the counter is not there."""
        if not self.metrics:
            raise BrokerError(f"{self.name} was started without metrics=True")
        url = f"http://{LOOPBACK}:{self.ports['metrics']}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 (loopback, our node)
            text = r.read().decode()
        for line in text.splitlines():
            if line.startswith("rabbitmq_global_messages_received_total") and 'protocol="amqp091"' in line:
                return int(float(line.rsplit(" ", 1)[1]))
        raise BrokerError(f"{url} has no rabbitmq_global_messages_received_total for amqp091")

    @property
    def tls_url(self) -> str:
        """``amqps://guest:guest@localhost:TLS_PORT?tls_ca=CA`` (no path): the TLS listener, checked
        against this broker's CA. "localhost" because that is the name its certificate gives."""
        if not self.pki:
            raise ValueError(f"{self.name} was started without tls=True")
        return f"amqps://guest:guest@localhost:{self.ports['tls']}?tls_ca={self.pki.ca}"

    @property
    def nodename(self) -> str:
        # "localhost" resolves to 127.0.0.1 everywhere, whatever the machine's
        # hostname resolves to; the AMQP port makes the name unique per instance.
        return f"omnibus-{self.ports['port']}@localhost"

    @property
    def url(self) -> str:
        """``amqp://guest:guest@127.0.0.1:PORT``, without a path.

        An AMQP URI without a path means the default vhost "/" (so amqp-tools'
        ``--url`` accepts it as is), and omnibus reads a path as the exchange
        (``amqp://...:PORT/EXCHANGE?vhost=/``), so a topic URL is this URL plus
        ``/EXCHANGE``. guest may log in because we connect on loopback
        (RabbitMQ's default loopback_users).
        """
        return f"{self.kind}://guest:guest@{LOOPBACK}:{self.ports['port']}"

    def _prepare(self) -> None:
        (self.dir / "log").mkdir(exist_ok=True)
        # New-style (sysctl) config. The listener comes from
        # RABBITMQ_NODE_IP_ADDRESS/PORT; only what differs from the defaults here.
        conf = [
            # The default (50 MB) blocks publishers on a nearly full CI disk,
            # which looks like a hang; a test broker stores little.
            "disk_free_limit.absolute = 10MB",
        ]
        if self.pki:
            conf += [
                f"listeners.ssl.default = {LOOPBACK}:{self.ports['tls']}",
                f"ssl_options.cacertfile = {self.pki.ca}",
                f"ssl_options.certfile = {self.pki.server_cert}",
                f"ssl_options.keyfile = {self.pki.server_key}",
                "ssl_options.verify = verify_peer",
                "ssl_options.fail_if_no_peer_cert = false",
                "auth_mechanisms.1 = PLAIN",
                "auth_mechanisms.2 = AMQPLAIN",
                "auth_mechanisms.3 = EXTERNAL",
                "ssl_cert_login_from = common_name",
                f"load_definitions = {self.dir / 'definitions.json'}",
            ]
            # Definitions loaded at boot replace the default user: guest is given again.
            users = [{"name": "guest", "password_hash": _password_hash("guest"), "tags": ["administrator"],
                      "hashing_algorithm": "rabbit_password_hashing_sha256"},
                     {"name": "omnibus-client", "password_hash": "", "tags": [],
                      "hashing_algorithm": "rabbit_password_hashing_sha256"}]
            defs = {"users": users, "vhosts": [{"name": "/"}],
                    "permissions": [{"user": u["name"], "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}
                                    for u in users]}
            (self.dir / "definitions.json").write_text(json.dumps(defs))
        if self.metrics:
            conf += [f"prometheus.tcp.ip = {LOOPBACK}", f"prometheus.tcp.port = {self.ports['metrics']}"]
        (self.dir / "rabbitmq.conf").write_text("\n".join(conf) + "\n")
        # Erlang distribution on loopback only (the default is every interface).
        (self.dir / "advanced.config").write_text("[{kernel, [{inet_dist_use_interface, {127,0,0,1}}]}].\n")
        # No plugins (management is not needed): a fast boot, AMQP 0-9-1 only; with metrics, the
        # Prometheus endpoint; with TLS, the certificate login.
        plugins = (["rabbitmq_prometheus"] if self.metrics else []) + (["rabbitmq_auth_mechanism_ssl"] if self.pki else [])
        (self.dir / "enabled_plugins").write_text("[" + ",".join(plugins) + "].\n")
        # An empty file, so /etc/rabbitmq/rabbitmq-env.conf is not read.
        (self.dir / "rabbitmq-env.conf").write_text("")

    def _env(self) -> dict[str, str]:
        d = str(self.dir)
        return {
            "RABBITMQ_NODENAME": self.nodename,
            "RABBITMQ_USE_LONGNAME": "false",
            "RABBITMQ_NODE_IP_ADDRESS": LOOPBACK,
            "RABBITMQ_NODE_PORT": str(self.ports["port"]),
            "RABBITMQ_DIST_PORT": str(self.ports["dist"]),
            # The node starts its own epmd on this port, bound to loopback only.
            "ERL_EPMD_PORT": str(self.ports["epmd"]),
            "ERL_EPMD_ADDRESS": LOOPBACK,
            # Config from self.dir only: not /etc/rabbitmq (rabbitmq-env.conf,
            # rabbitmq.conf, conf.d/*.conf, advanced.config, enabled_plugins).
            "RABBITMQ_CONF_ENV_FILE": f"{d}/rabbitmq-env.conf",
            "RABBITMQ_CONFIG_FILE": f"{d}/rabbitmq.conf",
            "RABBITMQ_CONFIG_FILES": f"{d}/conf.d/*.conf",  # no such files: none extra
            "RABBITMQ_ADVANCED_CONFIG_FILE": f"{d}/advanced.config",
            "RABBITMQ_ENABLED_PLUGINS_FILE": f"{d}/enabled_plugins",
            # The url says guest:guest and vhost "/": pin them against a
            # RABBITMQ_DEFAULT_* inherited from the caller's environment.
            "RABBITMQ_DEFAULT_USER": "guest",
            "RABBITMQ_DEFAULT_PASS": "guest",
            "RABBITMQ_DEFAULT_VHOST": "/",
            # Everything the node writes stays in self.dir.
            "RABBITMQ_MNESIA_BASE": f"{d}/mnesia",
            "RABBITMQ_LOG_BASE": f"{d}/log",
            "RABBITMQ_MOTD_FILE": f"{d}/motd",
            # Logs on stdout, which the base class sends to self.log_path.
            "RABBITMQ_LOGS": "-",
            "ERL_CRASH_DUMP": f"{d}/erl_crash.dump",
            "HOME": d,  # Erlang writes .erlang.cookie here
        }

    def _command(self) -> list[str]:
        return [self.program]

    def _probe(self) -> None:
        amqp_probe(LOOPBACK, self.ports["port"])

    def _after_stop(self) -> None:
        """Stop this node's epmd: it daemonizes out of our process group."""
        port = self.ports.get("epmd")
        if port:
            _stop_epmd(port)


def _epmd_pids(port: int) -> list[int]:
    """Pids of epmd daemons serving ``port`` (they inherit ERL_EPMD_PORT from the node)."""
    want = f"ERL_EPMD_PORT={port}".encode()
    pids = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            argv0 = (p / "cmdline").read_bytes().split(b"\x00", 1)[0]
            if os.path.basename(argv0) != b"epmd":
                continue
            if want in (p / "environ").read_bytes().split(b"\x00"):
                pids.append(int(p.name))
        except OSError:
            continue  # gone meanwhile, or not ours to read
    return pids


def _stop_epmd(port: int, timeout: float = 10.0) -> None:
    """``epmd -kill`` on ``port``, SIGKILL if that does not do it; raises if it survives."""
    epmd = shutil.which("epmd")
    env = program_env(ERL_EPMD_PORT=str(port))
    deadline = time.monotonic() + timeout
    # epmd refuses -kill while a node is still registered; the node's
    # registration goes when its connection to epmd closes, just after it
    # died, so retry for a little while.
    while epmd and _epmd_pids(port) and time.monotonic() < deadline:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            cmd = [epmd, "-port", str(port), "-kill"]
            subprocess.run(cmd, env=env, capture_output=True, timeout=5, check=False)
        if not _epmd_pids(port):
            break
        time.sleep(0.2)
    for pid in _epmd_pids(port):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    while time.monotonic() < deadline + 5:
        if not _epmd_pids(port) and port_is_free(port):
            return
        time.sleep(0.1)
    raise BrokerError(f"epmd on port {port} still running (pids {_epmd_pids(port)}) after -kill and SIGKILL")
