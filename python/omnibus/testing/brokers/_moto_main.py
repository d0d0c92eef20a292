"""``python -m omnibus.testing.brokers._moto_main``: moto's server with two of its bugs fixed.

1. ReceiveMessage made atomic.

moto picks a visible message and marks it received in two steps, without a lock, on the threads of
its threaded HTTP server: two concurrent ReceiveMessage calls (two consumers of a queue, or one
with several pollers) can both take the same message. SQS does not hand one message to two
concurrent receives within its visibility timeout, and a test server that does would fail correct
clients. So the selection runs under a lock; the long-poll wait (WaitTimeSeconds) happens outside
it, as moto's own loop does, so that one waiting poll does not hold up the others. Everything else
is moto's server unchanged.

2. Binary message attributes through SNS raw delivery. moto's SNS keeps a Binary attribute's value
as base64 text and hands that text to its SQS as the BinaryValue, whose checksum code expects
bytes: the delivery fails inside moto and the message is lost (boto3's publish shows it as well).
SQS gets the bytes here, as AWS delivers them.
"""

from __future__ import annotations

import base64
import os
import sys
import threading
import time
from typing import Any

# Run as a script: its folder, which holds omnibus' own moto.py, must not shadow the moto package.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]

from moto.server import main  # noqa: E402
from moto.sqs.models import SQSBackend  # noqa: E402

_receive = SQSBackend.receive_message
_lock = threading.Lock()


def _atomic_receive(self: SQSBackend, queue_name: str, count: int, wait_seconds_timeout: int,
                    visibility_timeout: int, message_attribute_names: Any = None) -> Any:
    deadline = time.monotonic() + (wait_seconds_timeout or 0)
    while True:
        with _lock:
            got = _receive(self, queue_name, count, 0, visibility_timeout, message_attribute_names)
        left = deadline - time.monotonic()
        if got or left <= 0:
            return got
        self.get_queue(queue_name).wait_for_messages(min(1.0, left))  # type: ignore[arg-type]


SQSBackend.receive_message = _atomic_receive  # type: ignore[method-assign]

_send = SQSBackend.send_message


def _send_with_binary_bytes(self: SQSBackend, queue_name: str, message_body: str,
                            message_attributes: dict[str, Any] | None = None, *args: Any, **kwargs: Any) -> Any:
    for value in (message_attributes or {}).values():
        if isinstance(value.get("BinaryValue"), str):  # only SNS's raw delivery passes text
            value["BinaryValue"] = base64.b64decode(value["BinaryValue"])
    return _send(self, queue_name, message_body, message_attributes, *args, **kwargs)


SQSBackend.send_message = _send_with_binary_bytes  # type: ignore[method-assign]

if __name__ == "__main__":
    main(sys.argv[1:])
