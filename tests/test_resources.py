"""No thread outlives the object that owns it."""

from __future__ import annotations

import gc
import os
from concurrent.futures import ThreadPoolExecutor

import omnibus
from conftest import Target, wait_until


def native_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def test_closed_objects_leave_no_thread_behind() -> None:
    before = native_threads()
    for i in range(20):
        with omnibus.subscriber(f"mem://threads-{i}") as sub, omnibus.publisher(f"mem://threads-{i}") as pub:
            pub.publish(b"x").result(timeout=10)
            sub.receive(timeout=10)
    assert wait_until(lambda: native_threads() <= before)


def test_dropped_objects_stop_their_threads() -> None:
    before = native_threads()
    pub = omnibus.publisher("mem://dropped")
    sub = omnibus.subscriber("mem://dropped")
    pub.publish(b"x")
    assert native_threads() >= before + 2
    del pub, sub
    gc.collect()
    assert wait_until(lambda: native_threads() <= before)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_each_driver_leaves_no_thread_or_socket_after_100_publishers_and_subscribers(target: Target) -> None:
    """100 publishers and 100 subscribers opened, used once and closed: the process has no more
    threads or file descriptors than before. One pair first, so that a native library's process-wide
    threads (cnats' timer and callback threads) exist before counting."""

    def cycle(i: int) -> None:
        url = target.url()
        with omnibus.subscriber(url) as sub, omnibus.publisher(url) as pub:
            if i % 10 == 0:  # a message through one pair in ten: the receive path too, without 100 broker round trips
                pub.publish(b"x").result(timeout=30)
                sub.receive(timeout=30)

    cycle(0)
    gc.collect()
    threads, fds = native_threads(), open_fds()
    # Twenty at a time: Paho C reads new MQTT connections only when its receive thread's 1 s poll
    # ends, so one mqtt:// open costs ~2 s while another client exists (the Asio client removes that).
    # Twenty TLS subscribers closing side by side are also how a race in cnats up to 3.5 was found
    # (a subscription freed while the read loop handled a message for it: nats_driver's
    # Connection::unsubscribe works around it).
    with ThreadPoolExecutor(20) as pool:
        list(pool.map(cycle, range(100)))
    gc.collect()
    assert wait_until(lambda: native_threads() <= threads and open_fds() <= fds, timeout=30), \
        f"{target.name}: {native_threads() - threads} threads and {open_fds() - fds} file descriptors more than before"
