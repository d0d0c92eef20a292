"""Google's Pub/Sub fake (``pstest`` from the Go module ``cloud.google.com/go/pubsub/v2``) on loopback,
for the gcppubsub:// driver.

pstest is the in-memory fake that Google's Go client tests itself against: it serves the Pub/Sub
gRPC API (Publisher and Subscriber services) with topics, subscriptions, StreamingPull, ack
deadlines and message ordering, but no persistence, no authentication and none of Pub/Sub's
quotas or timing. It is a test stand-in; Google Cloud Pub/Sub itself is the production target of
gcppubsub://. A ~20-line Go program (``omnibus/testing/pubsub_fake/main.go``) serves it on one port;
``make deps`` (``make gcp-deps``) builds it into ``~/.cache/omnibus/pubsub-fake-<version>/`` (or
``$OMNIBUS_PUBSUB_FAKE_HOME``) with the Go release its go.mod names, which Debian's Go 1.19 fetches
as a module; without that, ``pubsub_fake()`` builds it on first use with a Go 1.26 or later from
``PATH`` or ``/usr/local/go/bin``.

When ``PUBSUB_EMULATOR_HOST`` names a server (as for Google's own clients), the pytest plugin uses it
instead of starting one (``gcp_url`` is then ``gcppubsub://$PUBSUB_EMULATOR_HOST``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from ._base import LOOPBACK, Broker, ProgramMissing

SOURCE = Path(__file__).resolve().parent.parent / "pubsub_fake"
# The project the harness's URLs name; the fake accepts any.
PROJECT = "omnibus"
# The fake's gRPC server takes requests of at most 4 MiB (gRPC's default), where Pub/Sub takes 10 MB:
# URLs for it keep Publish requests below that (the driver's request_bytes).
FAKE_REQUEST_BYTES = 4_000_000


def fake_version() -> str:
    """The version of cloud.google.com/go/pubsub/v2 that go.mod pins."""
    m = re.search(r"cloud\.google\.com/go/pubsub/v2 (v\S+)", (SOURCE / "go.mod").read_text())
    if not m:
        raise ValueError(f"{SOURCE / 'go.mod'} names no cloud.google.com/go/pubsub/v2 version")
    return m.group(1)


def fake_home() -> Path:
    """Where the fake's binary is cached: $OMNIBUS_PUBSUB_FAKE_HOME, else ~/.cache/omnibus/pubsub-fake-<version>."""
    env = os.environ.get("OMNIBUS_PUBSUB_FAKE_HOME")
    return Path(env) if env else Path.home() / ".cache" / "omnibus" / f"pubsub-fake-{fake_version()}"


def go_program() -> str | None:
    """The Go toolchain: ``go`` on PATH, else /usr/local/go/bin/go (where Go's own tarball installs it)."""
    found = shutil.which("go")
    if found:
        return found
    default = Path("/usr/local/go/bin/go")
    return str(default) if default.exists() else None


def pubsub_fake(build: bool = True) -> Path:
    """The fake's binary, built with ``go build`` first when it is not there yet (the Go module proxy
    provides the modules go.sum pins). Raises ProgramMissing without Go, or with the build's output."""
    binary = fake_home() / "pubsub-fake"
    if binary.exists() or not build:
        return binary
    go = go_program()
    if go is None:
        raise ProgramMissing("the Pub/Sub fake is not built and Go is not installed; run `make gcp-deps` (it "
                             "fetches the Go release the fake needs) or install Go 1.26 or later")
    binary.parent.mkdir(parents=True, exist_ok=True)
    tmp = binary.with_name(f"pubsub-fake.tmp-{os.getpid()}")
    # go.mod and go.sum are read-only inputs: -mod=readonly fails instead of rewriting them.
    proc = subprocess.run([go, "build", "-mod=readonly", "-o", str(tmp), "."], cwd=SOURCE, capture_output=True,
                          text=True, timeout=900, env={**os.environ, "CGO_ENABLED": "0"}, check=False)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise ProgramMissing(f"building the Pub/Sub fake failed (go build in {SOURCE}):\n{proc.stderr[-3000:]}")
    tmp.replace(binary)  # atomic: a concurrent build leaves one whole binary
    return binary


def pubsub_probe(host: str, port: int, timeout: float = 2.0) -> None:
    """A real gRPC call: ListTopics of a project, which a Pub/Sub server answers even when it has none.
    Needs grpcio (a dependency of google-cloud-pubsub: pip install 'omnibus[gcp]'). Raises otherwise."""
    import grpc

    with grpc.insecure_channel(f"{host}:{port}") as channel:
        list_topics = channel.unary_unary("/google.pubsub.v1.Publisher/ListTopics",
                                          request_serializer=None, response_deserializer=None)
        project = f"projects/{PROJECT}".encode()
        # ListTopicsRequest{project = 1}: field 1, wire type 2 (length-delimited).
        list_topics(b"\x0a" + bytes([len(project)]) + project, timeout=timeout)


def topic_url(base: str, topic: str, project: str = PROJECT, **options: str) -> str:
    """``base`` (PubSubFake.url, OMNIBUS_GCP_URL) with projects/PROJECT/topics/TOPIC and options put in."""
    head, _, query = base.partition("?")
    extra = "&".join(f"{k}={v}" for k, v in options.items())
    query = "&".join(q for q in (query, extra) if q)
    return f"{head.rstrip('/')}/projects/{project}/topics/{topic}" + (f"?{query}" if query else "")


class PubSubFake(Broker):
    """Google's Pub/Sub fake (pstest) on one loopback port: in memory, no authentication (see the module)."""

    kind = "gcp"
    program = "pubsub-fake"
    install_hint = "run `make gcp-deps` (it fetches the Go release the fake needs), or install Go 1.26 or later"
    default_start_timeout = 60.0

    @classmethod
    def missing(cls) -> str | None:
        if not pubsub_fake(build=False).exists() and go_program() is None:
            return f"the Pub/Sub fake is not built and Go is not installed; {cls.install_hint}"
        try:
            import grpc  # noqa: F401
        except ImportError:
            return "grpcio is not installed (the readiness probe needs it); pip install 'omnibus[gcp]' (make deps)"
        return None

    def _ports(self) -> Sequence[str]:
        return ("port",)

    def _command(self) -> list[str]:
        return [str(pubsub_fake()), "-host", LOOPBACK, "-port", str(self.ports["port"])]

    def _probe(self) -> None:
        import grpc

        try:
            pubsub_probe(LOOPBACK, self.ports["port"])
        except grpc.RpcError as e:
            raise ValueError(f"ListTopics failed: {e}") from None

    @property
    def url(self) -> str:
        return f"gcppubsub://{LOOPBACK}:{self.ports['port']}"
