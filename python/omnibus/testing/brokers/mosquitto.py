"""Mosquitto 2 (Debian package ``mosquitto``) on loopback."""

from __future__ import annotations

import getpass
import secrets
import socket
import struct
import subprocess
from collections.abc import Sequence

from ._base import LOOPBACK, Broker


def mqtt_probe(host: str, port: int, timeout: float = 2.0, login: tuple[str, str] | None = None) -> None:
    """MQTT 3.1.1 CONNECT (as ``login`` = (user, password) when given), expect CONNACK
    'accepted', then DISCONNECT. Raises otherwise."""
    client_id = b"omnibus-probe"
    flags = 0x02 | (0xC0 if login else 0)  # clean session, user name and password
    variable = b"\x00\x04MQTT\x04" + bytes([flags]) + b"\x00\x0a"  # protocol name, level 4, keepalive 10 s
    payload = struct.pack("!H", len(client_id)) + client_id
    for field in login or ():
        raw = field.encode()
        payload += struct.pack("!H", len(raw)) + raw
    body = variable + payload
    if len(body) > 127:
        raise ValueError("the probe's CONNECT is too long for its one-byte length")
    packet = b"\x10" + bytes([len(body)]) + body
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(packet)
        reply = s.recv(4)
        if reply[:2] != b"\x20\x02" or len(reply) < 4:
            raise ValueError(f"no CONNACK from {host}:{port}: {reply!r}")
        if reply[3] != 0:
            raise ValueError(f"CONNACK refused the probe with code {reply[3]}")
        s.sendall(b"\xe0\x00")


class Mosquitto(Broker):
    """Mosquitto with anonymous access on one loopback listener; persistence as asked.

    ``auth=True``: no anonymous access; user ``omnibus`` logs in with ``self.password`` and may
    use every topic except ``secret/#`` (denied by the ACL), to show refusals.
    ``tls=True``: a second listener (port ``tls``) serves MQTT over TLS with certificates from
    :func:`omnibus.testing.certs.make_pki` (``self.pki``); client certificates are checked when
    given, not required.
    """

    kind = "mqtt"
    program = "mosquitto"
    install_hint = "install Debian's mosquitto package (make deps)"
    default_start_timeout = 30.0

    def __init__(self, *, persistence: bool = True, auth: bool = False, tls: bool = False,
                 **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.persistence = persistence
        self.auth = auth
        self.password = secrets.token_hex(12)
        self.pki = self._certificates(tls)

    def _ports(self) -> Sequence[str]:
        return ("port", "tls") if self.pki else ("port",)

    @property
    def tls_url(self) -> str:
        """``mqtts://localhost:TLS_PORT?tls_ca=CA`` (no topic): the TLS listener, checked against this
        broker's CA."""
        if not self.pki:
            raise ValueError(f"{self.name} was started without tls=True")
        return f"mqtts://localhost:{self.ports['tls']}?tls_ca={self.pki.ca}"

    def _prepare(self) -> None:
        lines = [
            f"listener {self.ports['port']} {LOOPBACK}",
            f"allow_anonymous {'false' if self.auth else 'true'}",
            # Started as root, mosquitto would switch to user 'mosquitto', who
            # cannot write the persistence file in our private directory.
            f"user {getpass.getuser()}",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.dir}/",
            "autosave_interval 1",
            "log_dest stdout",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "max_queued_messages 1000000",
            "max_inflight_messages 1000",
            "set_tcp_nodelay true",
            # $SYS counters every second (default 10): omnibus compare reads the broker's own
            # count of messages received from them.
            "sys_interval 1",
        ]
        if self.auth:
            passwords, acl = self.dir / "passwords", self.dir / "acl"
            # mosquitto_passwd writes the salted hash; -c starts a new file.
            subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwords), "omnibus", self.password],
                           check=True, stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
            passwords.chmod(0o600)
            acl.write_text("user omnibus\ntopic deny secret/#\ntopic readwrite #\n")
            lines += [f"password_file {passwords}", f"acl_file {acl}"]
        if self.pki:
            # Listener options follow their listener line.
            lines += [f"listener {self.ports['tls']} {LOOPBACK}", f"cafile {self.pki.ca}",
                      f"certfile {self.pki.server_cert}", f"keyfile {self.pki.server_key}",
                      "require_certificate false"]
        (self.dir / "mosquitto.conf").write_text("\n".join(lines) + "\n")

    def _command(self) -> list[str]:
        return [self.program, "-c", str(self.dir / "mosquitto.conf")]

    def _probe(self) -> None:
        mqtt_probe(LOOPBACK, self.ports["port"], login=("omnibus", self.password) if self.auth else None)
