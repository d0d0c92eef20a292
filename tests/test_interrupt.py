"""Every blocking call releases the GIL and is interrupted by Ctrl-C (SIGINT).

The interrupt latency is printed, not asserted: a wall clock must not decide a test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator

import pytest

import omnibus


@pytest.fixture
def sigint_after() -> Iterator[Callable[[float], None]]:
    # A terminal gives Python its KeyboardInterrupt handler; a detached CI job
    # may start us with SIGINT ignored or at its default. Test what a user sees.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timers: list[threading.Timer] = []

    def arm(seconds: float) -> None:
        t = threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGINT))
        timers.append(t)
        t.start()

    yield arm
    for t in timers:
        t.cancel()
    signal.signal(signal.SIGINT, previous)


def _interrupted(call: Callable[[], object], arm: Callable[[float], None]) -> float:
    arm(0.3)
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        call()
    latency = time.monotonic() - t0 - 0.3
    print(f"interrupted {latency * 1000:.0f} ms after SIGINT")
    return latency


def test_receive_is_interruptible(sigint_after: Callable[[float], None]) -> None:
    with omnibus.subscriber("mem://int-recv") as sub:
        _interrupted(lambda: sub.receive(), sigint_after)
        _interrupted(lambda: sub.receive_batch(10), sigint_after)
        _interrupted(lambda: next(iter(sub)), sigint_after)


def test_blocked_publish_and_waits_are_interruptible(sigint_after: Callable[[float], None]) -> None:
    with omnibus.publisher("mem://int-pub", max_pending=1, batch_linger_ms=60000) as pub:
        d = pub.publish(b"fills the queue")
        _interrupted(lambda: pub.publish(b"blocks", block_timeout=60), sigint_after)
        _interrupted(lambda: d.wait(), sigint_after)
        _interrupted(lambda: d.result(), sigint_after)


def test_gil_is_released_while_waiting() -> None:
    with omnibus.subscriber("mem://gil") as sub:
        counter = 0
        stop = threading.Event()

        def spin() -> None:
            nonlocal counter
            while not stop.is_set():
                counter += 1

        t = threading.Thread(target=spin)
        t.start()
        with pytest.raises(omnibus.Timeout):
            sub.receive(timeout=0.5)
        stop.set()
        t.join()
    # Had receive() held the GIL, the spinning thread could not have counted.
    assert counter > 1000


def test_ctrl_c_in_a_real_process() -> None:
    """A script blocked in receive() exits on SIGINT with KeyboardInterrupt."""
    script = textwrap.dedent(
        """
        import signal, sys, threading, time, omnibus
        signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, whatever CI gave us
        sub = omnibus.subscriber("mem://nobody-publishes")
        main = threading.main_thread()

        def announce():
            # Say "ready" only once the main thread is inside receive(), so the
            # signal cannot land before the blocking call starts.
            while sys._current_frames()[main.ident].f_lineno != RECEIVE_LINE:
                time.sleep(0.01)
            print("ready", flush=True)

        threading.Thread(target=announce, daemon=True).start()
        try:
            sub.receive()
        except KeyboardInterrupt:
            sub.close()
            print("interrupted", flush=True)
            sys.exit(42)
        """
    )
    receive_line = next(i for i, line in enumerate(script.splitlines(), 1) if "sub.receive()" in line)
    script = script.replace("RECEIVE_LINE", str(receive_line))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 42 and "interrupted" in out
