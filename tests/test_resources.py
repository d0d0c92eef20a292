"""No thread outlives the object that owns it."""

from __future__ import annotations

import gc
import os

import omnibus
from conftest import wait_until


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
