"""Running a real broker as a child process on 127.0.0.1.

A Broker owns one process (its own session, so the whole process group is
signalled), a temporary directory with its config, data and log, and the
ports it was given, chosen free at start. Readiness is a real protocol
exchange (omnibus.testing.probes), never just an open port. stop() leaves no
process, port or directory behind; so do close(), the context manager and,
for brokers still running when the interpreter exits, an atexit hook.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import omnibus

LOOPBACK = "127.0.0.1"


class BrokerError(omnibus.Unavailable):
    """A broker did not start or stop as it should; the message carries its log tail."""


class ProgramMissing(BrokerError):
    """The broker's program is not installed; the message says how to get it."""


# Set by `make sanitize` for the Python process and its Python children; a
# broker (a JVM, the Erlang VM, nats-server) must not load the ASan runtime:
# the JVM's own SIGSEGV handling would end in an ASan "crash" report.
_SANITIZER_ENV = ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS", "TSAN_OPTIONS", "LSAN_OPTIONS")


def program_env(**extra: str) -> dict[str, str]:
    """The environment for a broker or broker tool: this process's without sanitizer settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in _SANITIZER_ENV}
    env.update(extra)
    return env


def free_port() -> int:
    """A TCP port free on loopback right now (the OS picks it)."""
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """n distinct TCP ports free on loopback right now.

    All n sockets stay bound until every port is chosen: ports picked one at a time can repeat
    (the OS may hand the same one out again once its probe socket closed), and a broker given
    the same port twice refuses to start (Kafka: PLAINTEXT and CONTROLLER on one port)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind((LOOPBACK, 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


# A port chosen free can be taken (by any client's ephemeral port) before the
# broker binds it; the broker then exits saying so, and is started again on
# ports chosen anew. Only on a first start: a restart must keep its ports.
_BIND_ATTEMPTS = 3


def port_taken(log: str) -> bool:
    """Whether a broker's failure log says that one of its ports was in use."""
    text = log.lower()
    return "address already in use" in text or "eaddrinuse" in text


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


_live: weakref.WeakSet[Broker] = weakref.WeakSet()
_live_lock = threading.Lock()


@atexit.register
def _stop_all_at_exit() -> None:
    with _live_lock:
        brokers = list(_live)
    for b in brokers:
        if b.detached:  # started by `omnibus brokers up` to outlive this process
            continue
        with contextlib.suppress(Exception):
            b.close()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z"):
            return False
    return True


def _die_with_parent() -> None:
    # Linux: the broker gets SIGTERM if the process that started it dies
    # without cleaning up (kill -9 of pytest, say). Runs in the child.
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Broker:
    """Base class of the loopback brokers. Not thread-safe: one owner drives it.

    Subclasses set ``kind`` (the URL scheme), ``program`` and ``install_hint``
    and implement ``_ports`` (names of the ports to allocate), ``_prepare``
    (write config into ``self.dir``), ``_command`` and ``_probe``; optionally
    ``_env`` and ``_after_stop``.
    """

    kind: ClassVar[str]
    program: ClassVar[str]
    install_hint: ClassVar[str]
    default_start_timeout: ClassVar[float] = 60.0

    def __init__(self, *, name: str | None = None, workdir: str | Path | None = None) -> None:
        self.name = name or self.kind
        self._own_dir = workdir is None
        self.dir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix=f"omnibus-{self.name}-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.dir / f"{self.name}.log"
        self.ports: dict[str, int] = {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_in: float | None = None  # seconds from spawn to ready, last start
        self.detached = False  # started by the CLI, to outlive this process
        self._spawned_at = 0.0
        self._external_pid: int | None = None  # a detached broker found again from its state

    def _certificates(self, tls: bool) -> Any:
        """For brokers started with TLS: a CA and certificates of their own in ``self.dir/pki``
        (omnibus.testing.certs, imported only then: it needs the cryptography package); else None."""
        if not tls:
            return None
        from ..certs import make_pki

        return make_pki(self.dir / "pki")

    # ---- what subclasses provide -------------------------------------------------
    def _ports(self) -> Sequence[str]:
        return ("port",)

    def _prepare(self) -> None:
        """Write config files into self.dir (called before every start)."""

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _env(self) -> dict[str, str]:
        return {}

    def _probe(self) -> None:
        """Raise when the broker does not answer its protocol yet."""
        raise NotImplementedError

    def _after_stop(self) -> None:
        """Clean up helpers the broker started outside its process group."""

    @property
    def url(self) -> str:
        return f"{self.kind}://{LOOPBACK}:{self.ports['port']}"

    # ---- lifecycle ---------------------------------------------------------------
    @classmethod
    def missing(cls) -> str | None:
        """Why this broker cannot run here (program not installed), or None."""
        if shutil.which(cls.program) is None and not Path(cls.program).exists():
            return f"{cls.program} is not installed; {cls.install_hint}"
        return None

    def start(self, timeout: float | None = None, *, detach: bool = False) -> Broker:
        """Start and wait until the broker answers its protocol; returns self.

        Ports are chosen on the first start and kept on restarts, so URLs stay
        valid. Raises ProgramMissing, or BrokerError with the log tail.
        """
        if self.is_running():
            return self
        fresh = not self.ports
        for attempt in range(_BIND_ATTEMPTS):
            self.spawn(detach=detach)
            try:
                self.wait_ready(timeout)
                return self
            except BrokerError as e:
                if not (fresh and attempt + 1 < _BIND_ATTEMPTS and port_taken(str(e))):
                    raise
                self.stop()
                self.ports = {}  # chosen again on the next spawn
        raise AssertionError("unreachable")

    def spawn(self, *, detach: bool = False) -> None:
        """Start the process without waiting for readiness (see wait_ready).

        Call it from a thread that lives as long as the broker should: on
        Linux a non-detached broker is signalled when that thread exits.
        """
        reason = self.missing()
        if reason:
            raise ProgramMissing(reason)
        if not self.ports:
            names = self._ports()
            self.ports = dict(zip(names, free_ports(len(names))))
        self.detached = detach
        self._prepare()
        env = program_env(**self._env())
        log = open(self.log_path, "ab")
        self._spawned_at = time.monotonic()
        try:
            self.proc = subprocess.Popen(
                self._command(),
                cwd=self.dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=None if detach else _die_with_parent,
            )
        finally:
            log.close()
        with _live_lock:
            _live.add(self)

    def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until the protocol probe succeeds; records started_in (seconds since spawn)."""
        self._wait_ready(timeout or self.default_start_timeout)
        self.started_in = time.monotonic() - self._spawned_at

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: BaseException | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                code = self.proc.returncode
                self._reap()
                raise BrokerError(f"{self.name} exited with code {code} while starting\n{self.log_tail()}")
            try:
                self._probe()
                return
            except (OSError, ValueError, omnibus.Error) as e:
                last = e
            time.sleep(0.1)
        self.stop()
        raise BrokerError(f"{self.name} was not ready within {timeout:.0f} s (last probe: {last})\n{self.log_tail()}")

    def is_running(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return self._external_pid is not None and _pid_alive(self._external_pid)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else self._external_pid

    def to_state(self) -> dict[str, object]:
        """What `omnibus brokers down/status` needs to find this broker again."""
        return {"kind": self.kind, "class": type(self).__name__, "name": self.name, "pid": self.pid,
                "ports": self.ports, "dir": str(self.dir), "url": self.url, "started_in": self.started_in}

    @classmethod
    def from_state(cls, state: dict[str, object]) -> Broker:
        """A handle on a broker another process started (detached) from its to_state()."""
        b = cls(name=str(state["name"]), workdir=str(state["dir"]))
        b._own_dir = True  # `down` removes it
        b.ports = dict(state["ports"])  # type: ignore[arg-type]
        b._external_pid = int(state["pid"])  # type: ignore[arg-type]
        b.detached = True
        b.started_in = state.get("started_in")  # type: ignore[assignment]
        return b

    def probe(self) -> None:
        """Raise unless the broker answers its protocol now."""
        self._probe()

    def stop(self, timeout: float = 30.0) -> None:
        """Graceful stop (SIGTERM to the process group), SIGKILL after `timeout`. Keeps data."""
        if self.proc is None and self._external_pid is None:
            return
        if self.is_running():
            self._signal(signal.SIGTERM)
            if not self._wait_exit(timeout):
                self._signal(signal.SIGKILL)
                self._wait_exit(10)
        self._reap()

    def _wait_exit(self, timeout: float) -> bool:
        if self.proc is not None:
            try:
                self.proc.wait(timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.is_running():
                return True
            time.sleep(0.05)
        return False

    def kill(self) -> None:
        """SIGKILL, as in a crash: no clean shutdown. Keeps data for a restart."""
        if self.pid is None:
            return
        self._signal(signal.SIGKILL)
        self._wait_exit(10)
        self._reap()

    def restart(self, *, kill: bool = False, timeout: float | None = None) -> Broker:
        """Stop (or crash, with kill=True) and start again on the same ports and data."""
        self.kill() if kill else self.stop()
        self._wait_ports_released()
        return self.start(timeout)

    def close(self) -> None:
        """Stop and remove the working directory (unless one was given)."""
        self.stop()
        with _live_lock:
            _live.discard(self)
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def _signal(self, sig: int) -> None:
        pid = self.pid
        assert pid is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)  # the broker leads its own session and group

    def _reap(self) -> None:
        # Whatever is left of the group (a broker's own children) goes too.
        pid = self.pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        self.proc = None
        self._external_pid = None
        self._after_stop()

    def _wait_ports_released(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(port_is_free(p) for p in self.ports.values()):
                return
            time.sleep(0.1)
        raise BrokerError(f"{self.name}: ports {self.ports} still in use {timeout:.0f} s after stop")

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return f"--- last {min(lines, len(text))} lines of {self.log_path} ---\n" + "\n".join(text[-lines:])

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"<{type(self).__name__} {self.name} {state} {self.url if self.ports else ''}>"


class Cluster:
    """Nodes that start together: ports for all first (each node's config names
    its peers), then every node spawned, then each waited for, since none is
    ready before its peers are up. Spawned from the caller's thread (see spawn).
    Subclasses set ``scheme`` and ``nodes`` and implement ``_link``.
    """

    scheme: ClassVar[str]
    default_start_timeout: ClassVar[float] = 60.0
    nodes: list[Broker]

    def _link(self) -> None:
        """Tell each node its peers, once every node has its ports."""
        raise NotImplementedError

    @property
    def url(self) -> str:
        return f"{self.scheme}://" + ",".join(f"{LOOPBACK}:{n.ports['port']}" for n in self.nodes)

    def start(self, timeout: float | None = None) -> Cluster:
        for attempt in range(_BIND_ATTEMPTS):
            # Distinct across the whole cluster, not only within a node.
            fresh = iter(free_ports(sum(len(n._ports()) for n in self.nodes)))
            for n in self.nodes:
                n.ports = {name: next(fresh) for name in n._ports()}
            self._link()
            try:
                for n in self.nodes:
                    n.spawn()
                for n in self.nodes:
                    n.wait_ready(timeout or self.default_start_timeout)
                return self
            except BrokerError as e:
                if attempt + 1 < _BIND_ATTEMPTS and port_taken(str(e)):
                    for n in self.nodes:
                        n.stop()
                    continue
                self.close()
                raise
            except BaseException:
                self.close()
                raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        for n in self.nodes:
            n.close()

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def started(*brokers: Broker, timeout: float | None = None) -> Iterator[tuple[Broker, ...]]:
    """Start several brokers, yield them, close them all even on error."""
    try:
        for b in brokers:
            b.start(timeout)
        yield brokers
    finally:
        for b in brokers:
            with contextlib.suppress(Exception):
                b.close()
