"""redis:// on Redis Streams: a whole omnibus driver written in Python.

``redis://[user:password@]host:port/stream?options``, on the ``redis`` package
(redis-py). The engine batches, tracks deliveries and acks; this driver only
turns a batch into one pipelined round trip of XADDs, and a receive into
XREADGROUP / XAUTOCLAIM.

An entry carries the payload in field ``payload``, the key in ``key``, the
publish time in ``ts`` (ms) and each header as ``h:<name>`` (in order; a name
may repeat). An entry written by another client without these fields arrives
with its other fields as headers, so a plain ``XADD s * temp 21`` is a message
with an empty payload and header ``temp``.

Every subscriber reads through a consumer group: ``group=NAME`` is shared by
competing consumers (starting at ``start``, default the whole stream); without
it the subscriber gets a private group starting at the end of the stream,
destroyed when it closes. A message is acked with XACK. A nacked one is
claimed again at once (XCLAIM: its delivery count goes up) and delivered ahead
of new ones. An entry left unacked for ``ack_deadline_ms`` by any consumer of
the group, one that died included, is taken over by a consumer that polls
(XAUTOCLAIM), and ``delivery_attempt`` is Redis' own delivery count. A
subscriber that closes hands its unacked entries back to the group.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import time
import uuid
from collections import deque
from typing import Any, Optional

import omnibus

from .driver import Option, Received

_PAYLOAD, _KEY, _TS, _HEADER = b"payload", b"key", b"ts", b"h:"
# A nacked entry or one handed back on close is marked idle for this long, so
# that the next XAUTOCLAIM of any consumer takes it whatever its deadline.
_VERY_IDLE_MS = 10**12


_NEEDS_REDIS = "redis:// needs the redis package (pip install 'redis>=5', or omnibus[redis])"


def _client(url: dict[str, Any], options: dict[str, Any]) -> Any:
    try:
        import redis
    except ImportError:
        raise omnibus.Unsupported(
            _NEEDS_REDIS
        ) from None
    if len(url["hosts"]) != 1:
        raise omnibus.InvalidArgument(f"redis:// takes one host:port, got {len(url['hosts'])} in {url['text']}")
    host, port = url["hosts"][0]
    if not url["path"] or "/" in url["path"]:
        raise omnibus.InvalidArgument(
            f"redis:// needs the stream name as the URL path (redis://host:port/orders), got {url['text']}"
        )
    timeout = options["connect_timeout_ms"] / 1000
    tls = url["scheme"] == "rediss"
    tls_files = {k: options[k] for k in ("tls_ca", "tls_cert", "tls_key") if options[k]}
    if not tls and (tls_files or not options["tls_verify"]):
        raise omnibus.InvalidArgument(
            f"redis:// URL {url['text']} has TLS options, but redis:// is plaintext: use rediss://host:port/stream for TLS"
        )
    if bool(options["tls_cert"]) != bool(options["tls_key"]):
        raise omnibus.InvalidArgument(
            f"{url['text']}: tls_cert and tls_key go together (the client certificate and its private key, PEM files); "
            "one of them is missing"
        )
    for name, path in tls_files.items():
        if not os.access(path, os.R_OK):
            raise omnibus.InvalidArgument(f"{url['text']}: {name}={path} cannot be read (missing, or not readable)")
    ssl = {}
    if tls:
        _tls_handshake(host or "127.0.0.1", port or 6379, options, timeout, url["text"])
        ssl = {"ssl": True, "ssl_ca_certs": options["tls_ca"] or None, "ssl_certfile": options["tls_cert"] or None,
               "ssl_keyfile": options["tls_key"] or None, "ssl_cert_reqs": "required" if options["tls_verify"] else "none",
               "ssl_check_hostname": bool(options["tls_verify"])}
    client = redis.Redis(
        host=host or "127.0.0.1",
        port=port or 6379,
        db=options["db"],
        username=url["user"] or None,
        password=url["password"] or None,
        socket_connect_timeout=timeout,
        # Above the longest XREADGROUP BLOCK the engine asks for (100 ms polls).
        socket_timeout=max(timeout, 10.0),
        protocol=2,  # the reply shapes parsed below (redis-py 8 speaks RESP3 by default)
        **ssl,
    )
    # Raw replies for the stream reads: redis-py's parsers turn an entry's
    # fields into a dict, which would drop repeated header names.
    for cmd in ("XREADGROUP", "XAUTOCLAIM", "XCLAIM"):
        client.set_response_callback(cmd, lambda r, **_: r)
    try:
        client.ping()
    except Exception as e:
        client.close()
        raise _error(e, f"cannot reach {url['text']}") from e
    return client


def _tls_handshake(host: str, port: int, options: dict[str, Any], timeout: float, where: str) -> None:
    """One TLS handshake within connect_timeout_ms before redis-py connects: redis-py bounds its
    handshake by the read timeout and retries it, so a plaintext port took a minute to fail; here
    it is Unavailable within the timeout, naming the likely cause."""
    import ssl

    try:
        ctx = ssl.create_default_context(cafile=options["tls_ca"] or None)
        if not options["tls_verify"]:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if options["tls_cert"]:
            ctx.load_cert_chain(options["tls_cert"], options["tls_key"])
    except ssl.SSLError as e:
        raise omnibus.InvalidArgument(f"{where}: tls_ca, tls_cert or tls_key is not a usable PEM file: {e}") from None
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            with ctx.wrap_socket(raw, server_hostname=host):
                pass
    except ssl.SSLCertVerificationError as e:
        raise omnibus.Unavailable(f"cannot reach {where}: TLS handshake failed: certificate verify failed: "
                                  f"{e.verify_message}") from None
    except (ssl.SSLError, ConnectionResetError) as e:
        raise omnibus.Unavailable(f"cannot reach {where}: TLS handshake failed: {e} (is the port a TLS listener? "
                                  "redis:// for a plaintext one)") from None
    except socket.timeout:
        raise omnibus.Unavailable(f"cannot reach {where}: no TLS handshake within connect_timeout_ms="
                                  f"{options['connect_timeout_ms']} (is the port a TLS listener? redis:// for a "
                                  "plaintext one)") from None
    except OSError as e:
        raise omnibus.Unavailable(f"cannot reach {where}: {e}") from None


def _error(e: BaseException, context: str) -> omnibus.Error:
    """redis-py's exceptions as omnibus ones (the engine keeps the class)."""
    import redis.exceptions as rx

    if isinstance(e, omnibus.Error):
        return e
    if isinstance(e, rx.AuthenticationError):  # a ConnectionError too: refused logins first
        return omnibus.Unavailable(f"{context}: the server refused the login: {e} (check the user and password)")
    if isinstance(e, (rx.ConnectionError, rx.TimeoutError, rx.BusyLoadingError)):
        return omnibus.Unavailable(f"{context}: {e}")
    if isinstance(e, rx.ResponseError) and "NOPERM" in str(e):
        return omnibus.InvalidArgument(f"{context}: {e}")
    if isinstance(e, rx.ResponseError) and "OOM" in str(e):
        return omnibus.ResourceExhausted(f"{context}: {e}")
    if isinstance(e, rx.ResponseError):
        return omnibus.InvalidArgument(f"{context}: Redis refused it: {e}")
    return omnibus.InternalError(f"{context}: {type(e).__name__}: {e}")


_CAPABILITIES = {
    "delivery_guarantee": "at-least-once",
    "ordered_per_key": True,  # one stream, read in order by each subscriber
    "keys": True,
    "headers": True,
    "nack": True,
    "ack_deadline": True,  # XAUTOCLAIM after ack_deadline_ms
    "requeue_on_close": True,
    "delivery_count": True,  # the pending entry's delivery counter
    "competing_consumers": True,
    "durable": True,  # with appendonly on the server
}

_COMMON = [
    Option("db", "int", "0", "Redis logical database", min=0),
    Option("connect_timeout_ms", "int", "5000", "how long opening waits for Redis before Unavailable", min=1),
    Option("tls_ca", "str", "", "rediss://: CA certificate file (PEM) the server's certificate is checked against; "
           "default: the system's CAs"),
    Option("tls_cert", "str", "", "rediss://: client certificate file (PEM), for servers that verify clients (with tls_key)"),
    Option("tls_key", "str", "", "rediss://: the client certificate's private key file (PEM)"),
    Option("tls_verify", "bool", "true",
           "rediss://: check the server's certificate and that it names the host; false: encrypted but not authenticated"),
]


class RedisSender:
    def __init__(self, url: dict[str, Any], options: dict[str, Any]) -> None:
        self._url = url["text"]
        self._stream = url["path"]
        self._maxlen: Optional[int] = options["maxlen"] or None
        self._approximate = options["maxlen_approximate"]
        self._max_bytes = options["max_message_bytes"]
        self._client = _client(url, options)
        self.connected: Optional[bool] = True

    def capabilities(self) -> dict[str, Any]:
        return {**_CAPABILITIES, "max_message_bytes": self._max_bytes}

    def send_batch(self, messages: list[tuple[bytes, Optional[bytes], list[tuple[str, bytes]], int]]) -> list[Any]:
        results: list[Any] = [None] * len(messages)
        sent: list[int] = []
        pipe = self._client.pipeline(transaction=False)
        for i, (payload, key, headers, ts) in enumerate(messages):
            if len(payload) > self._max_bytes:
                results[i] = omnibus.ResourceExhausted(
                    f"message of {len(payload)} bytes exceeds max_message_bytes={self._max_bytes} of {self._url}"
                )
                continue
            fields: list[Any] = [_PAYLOAD, payload, _TS, ts]
            if key is not None:
                fields += [_KEY, key]
            for name, value in headers:
                fields += [_HEADER + name.encode(), value]
            args: list[Any] = ["XADD", self._stream]
            if self._maxlen:
                args += ["MAXLEN", "~" if self._approximate else "=", self._maxlen]
            pipe.execute_command(*args, "*", *fields)
            sent.append(i)
        if not sent:
            return results
        try:
            replies = pipe.execute(raise_on_error=False)
        except Exception as e:
            self.connected = False
            raise _error(e, f"XADD to {self._url}") from e
        self.connected = True
        for i, reply in zip(sent, replies):
            if isinstance(reply, Exception):
                results[i] = _error(reply, f"XADD to {self._url}")
        return results

    def close(self) -> None:
        self._client.close()


class RedisReceiver:
    def __init__(self, url: dict[str, Any], options: dict[str, Any], settings: dict[str, Any]) -> None:
        self._url = url["text"]
        self._stream = url["path"]
        self._private = not options["group"]
        self._group = options["group"] or f"omnibus-{uuid.uuid4().hex}"
        self._consumer = options["consumer"] or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._start = "$" if self._private else ("0" if options["start"] == "earliest" else "$")
        self._deadline_ms = options["ack_deadline_ms"]
        # How often a poll also looks for entries past their deadline.
        self._claim_every = min(0.25, self._deadline_ms / 2000)
        self._next_claim = 0.0
        self._claim_cursor = "0-0"
        self._redeliver: deque[Received] = deque()  # nacked, claimed back, delivered first
        self._client = _client(url, options)
        self.connected: Optional[bool] = True
        try:
            self._create_group()
        except Exception:
            self._client.close()
            raise

    def _create_group(self) -> None:
        import redis.exceptions as rx

        try:
            self._client.xgroup_create(self._stream, self._group, id=self._start, mkstream=True)
        except rx.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise _error(e, f"XGROUP CREATE {self._group} on {self._url}") from e
        except Exception as e:
            raise _error(e, f"XGROUP CREATE {self._group} on {self._url}") from e

    def capabilities(self) -> dict[str, Any]:
        return dict(_CAPABILITIES)

    def _messages(self, entries: list[Any], attempts: Optional[dict[bytes, int]] = None) -> list[Received]:
        out = []
        for entry in entries:
            if not entry or entry[1] is None:
                continue  # deleted (trimmed) while pending
            entry_id, flat = entry[0], entry[1]
            payload, key, ts, headers = b"", None, 0, []
            for n in range(0, len(flat), 2):
                name, value = flat[n], flat[n + 1]
                if name == _PAYLOAD:
                    payload = value
                elif name == _KEY:
                    key = value
                elif name == _TS:
                    ts = int(value)
                elif name.startswith(_HEADER):
                    headers.append((name[2:].decode(errors="replace"), value))
                else:
                    headers.append((name.decode(errors="replace"), value))
            if not ts:
                ts = int(entry_id.split(b"-")[0])  # the id's own milliseconds
            attempt = attempts.get(entry_id, 1) if attempts is not None else 1
            out.append(Received(entry_id, payload, key, headers, ts, attempt, self._stream))
        return out

    def _attempts(self, ids: list[bytes]) -> dict[bytes, int]:
        """Redis' delivery counter of each pending entry (one pipelined round trip)."""
        pipe = self._client.pipeline(transaction=False)
        for i in ids:
            pipe.xpending_range(self._stream, self._group, min=i, max=i, count=1)
        out = {}
        for rows in pipe.execute():
            for row in rows:
                out[row["message_id"]] = int(row["times_delivered"])
        return out

    def receive_batch(self, max_messages: int, timeout: float) -> list[Received]:
        import redis.exceptions as rx

        out: list[Received] = []
        while self._redeliver and len(out) < max_messages:
            out.append(self._redeliver.popleft())
        if out:
            return out
        try:
            now = time.monotonic()
            if now >= self._next_claim:
                self._next_claim = now + self._claim_every
                reply = self._client.execute_command(
                    "XAUTOCLAIM", self._stream, self._group, self._consumer, self._deadline_ms,
                    self._claim_cursor, "COUNT", max_messages,
                )  # fmt: skip
                self._claim_cursor = reply[0]
                claimed = [e for e in reply[1] if e and e[1] is not None]
                if claimed:
                    self.connected = True
                    return self._messages(claimed, self._attempts([e[0] for e in claimed]))
            block = int(timeout * 1000)
            args: list[Any] = ["XREADGROUP", "GROUP", self._group, self._consumer, "COUNT", max_messages]
            if block > 0:
                args += ["BLOCK", block]
            reply = self._client.execute_command(*args, "STREAMS", self._stream, ">")
            self.connected = True
        except rx.ResponseError as e:
            if "NOGROUP" in str(e):  # the stream or group was deleted: start again
                self._create_group()
                return []
            raise _error(e, f"XREADGROUP on {self._url}") from e
        except Exception as e:
            self.connected = False
            raise _error(e, f"XREADGROUP on {self._url}") from e
        if not reply:
            return []
        return self._messages(reply[0][1])

    def ack(self, ids: list[bytes]) -> None:
        try:
            self._client.xack(self._stream, self._group, *ids)
        except Exception as e:
            raise _error(e, f"XACK on {self._url}") from e

    def nack(self, ids: list[bytes]) -> None:
        try:
            # Claimed back by this consumer at once: the delivery counter goes
            # up, and the entries come first in the next receive.
            entries = self._client.execute_command("XCLAIM", self._stream, self._group, self._consumer, 0, *ids)
            claimed = [e for e in entries if e and e[1] is not None]
            self._redeliver.extend(self._messages(claimed, self._attempts([e[0] for e in claimed])))
        except Exception as e:
            raise _error(e, f"XCLAIM (nack) on {self._url}") from e

    def close(self) -> None:
        try:
            if self._private:
                self._client.xgroup_destroy(self._stream, self._group)
            else:
                # Hand what this consumer holds back to the group: marked long
                # idle, the next XAUTOCLAIM of any consumer takes it (JUSTID: the
                # counter goes up when that consumer claims it, not now).
                pending = self._client.xpending_range(
                    self._stream, self._group, min="-", max="+", count=100000, consumername=self._consumer
                )
                ids = [row["message_id"] for row in pending]
                if ids:
                    self._client.execute_command(
                        "XCLAIM", self._stream, self._group, self._consumer, 0, *ids, "IDLE", _VERY_IDLE_MS, "JUSTID"
                    )
                else:  # nothing pending: the consumer's name would only pile up in XINFO
                    self._client.xgroup_delconsumer(self._stream, self._group, self._consumer)
        except Exception:
            pass  # Redis is away: the entries stay pending and the deadline brings them back
        finally:
            self._client.close()


class RedisStreamsDriver:
    """The redis:// driver (registered through the ``omnibus.drivers`` entry point)."""

    description = "Redis Streams (XADD, consumer groups, XACK, XAUTOCLAIM) on redis-py; a driver written in Python"

    @staticmethod
    def missing() -> str | None:
        """Why redis:// cannot work here: redis-py is not installed (it is imported at open)."""
        return None if importlib.util.find_spec("redis") else _NEEDS_REDIS
    sender_options = [
        *_COMMON,
        Option("maxlen", "int", "0", "trim the stream to about this many entries on each XADD (MAXLEN); 0 keeps all", min=0),
        Option("maxlen_approximate", "bool", "true", "trim with MAXLEN ~ (whole nodes, cheap); false trims exactly"),
        Option("max_message_bytes", "int", "16777216", "larger payloads fail alone with ResourceExhausted", min=1),
    ]
    receiver_options = [
        *_COMMON,
        Option("group", "str", "", "consumer group shared by competing subscribers; empty: a private group from now on"),
        Option("consumer", "str", "", "consumer name inside the group; empty: host-pid-random"),
        Option("start", "choice", "earliest", "where a new named group starts reading", ("earliest", "latest")),
        Option("ack_deadline_ms", "int", "30000",
               "an entry unacked this long (by any consumer of the group, a dead one too) is claimed again", min=1),
    ]  # fmt: skip

    def open_sender(self, url: dict[str, Any], options: dict[str, Any]) -> RedisSender:
        return RedisSender(url, options)

    def open_receiver(self, url: dict[str, Any], options: dict[str, Any], settings: dict[str, Any]) -> RedisReceiver:
        return RedisReceiver(url, options, settings)
