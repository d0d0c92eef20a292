"""Test support: real brokers on loopback (omnibus.testing.brokers), the pytest
plugin (omnibus.testing.pytest_plugin, registered as a pytest11 entry point)
and a polling helper."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["wait_until"]


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.01) -> bool:
    """Poll `predicate` until it is true or `timeout` seconds passed; returns whether it became true.

    Integration tests wait on conditions like this, never on fixed sleeps.
    """
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
