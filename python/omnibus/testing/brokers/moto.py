"""moto's server (PyPI ``moto[server]``): the SQS and SNS APIs on loopback, signatures checked.

moto is a test server that speaks the real SQS (JSON and query protocols) and SNS APIs; real AWS is
the production target of awssqs:// and awssns://. It runs here with ``INITIAL_NO_AUTH_ACTION_COUNT``:
the first few requests are unauthenticated (the harness uses them to create an IAM user, its access
key and an allow-all policy), every later one must carry a valid SigV4 signature of that key, so a
wrong signature or secret is refused as AWS would refuse it.

The URL (``Moto.url``) carries that key in its userinfo (the secret percent-encoded; omnibus masks
it in every message) and the endpoint and region as options; append a queue name after the ``/``::

    awssqs://AKIA...:SECRET@/QUEUE?endpoint=http://127.0.0.1:PORT&region=us-east-1

The key lives in ``credentials.json`` of the working directory, so that ``omnibus brokers status``
finds it again. moto keeps everything in memory: a restart starts empty, with a new key (a new URL).
"""

from __future__ import annotations

import importlib.util
import json
import sys
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._base import LOOPBACK, Broker, BrokerError

REGION = "us-east-1"
# The requests the harness makes before signatures are checked: CreateUser, CreateAccessKey, PutUserPolicy.
_SETUP_ACTIONS = 3
_ALLOW_ALL = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}


@dataclass(frozen=True)
class AwsEndpoint:
    """What an AWS client needs to talk to a server: for boto3, ``boto3.client("sqs", **e.boto3())``."""

    endpoint: str
    region: str
    access_key_id: str
    secret_access_key: str

    def boto3(self) -> dict[str, str]:
        return {"endpoint_url": self.endpoint, "region_name": self.region,
                "aws_access_key_id": self.access_key_id, "aws_secret_access_key": self.secret_access_key}


def aws_endpoint(url: str) -> AwsEndpoint:
    """The endpoint, region and key of an awssqs:// or awssns:// URL in the form Moto.url gives."""
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query))
    if not parts.username or parts.password is None or "endpoint" not in query:
        raise ValueError(f"{url.split('@')[-1]!r} is not in the form awssqs://KEY:SECRET@/?endpoint=...&region=...")
    return AwsEndpoint(query["endpoint"], query.get("region", REGION), urllib.parse.unquote(parts.username),
                       urllib.parse.unquote(parts.password))


def queue_url(base: str, queue: str, **options: str) -> str:
    """``base`` (Moto.url, OMNIBUS_SQS_URL) with the queue name (or SNS topic) and more options put in."""
    head, _, query = base.partition("?")
    extra = "&".join(f"{k}={v}" for k, v in options.items())
    query = "&".join(q for q in (query, extra) if q)
    return f"{head.rstrip('/')}/{queue}" + (f"?{query}" if query else "")


class Moto(Broker):
    """moto_server for SQS and SNS on one loopback port, SigV4 signatures checked (see the module).

    ``tls=True``: the port serves HTTPS with certificates from :func:`omnibus.testing.certs.make_pki`
    (``self.pki``); ``endpoint_url`` is then ``https://localhost:PORT`` and ``url`` carries ``tls_ca``.
    """

    kind = "sqs"
    program = "moto.server"
    install_hint = "pip install 'moto[server]' (make deps)"
    default_start_timeout = 60.0

    @classmethod
    def missing(cls) -> str | None:
        if importlib.util.find_spec("moto") is None or importlib.util.find_spec("moto.server") is None:
            return f"moto's server is not installed; {cls.install_hint}"
        return None

    def __init__(self, *, tls: bool = False, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.pki = self._certificates(tls)

    def _ports(self) -> Sequence[str]:
        return ("port",)

    def _ssl_context(self) -> Any:
        """For the harness' own requests: this server's CA, or None over plain HTTP."""
        if not self.pki:
            return None
        import ssl

        return ssl.create_default_context(cafile=str(self.pki.ca))

    @property
    def _creds_path(self) -> Path:
        return self.dir / "credentials.json"

    def _prepare(self) -> None:
        # moto starts empty: the key of an earlier run is void.
        self._creds_path.unlink(missing_ok=True)

    def _command(self) -> list[str]:
        # moto's server with two fixes (see _moto_main), run as a script file rather than a module of
        # this package, so that the child never imports omnibus (under `make sanitize` its extension
        # needs the ASan runtime, which broker processes do not get).
        script = str(Path(__file__).with_name("_moto_main.py"))
        cmd = [sys.executable, script, "-H", LOOPBACK, "-p", str(self.ports["port"])]
        if self.pki:
            cmd += ["-c", str(self.pki.server_cert), "-k", str(self.pki.server_key)]
        return cmd

    def _env(self) -> dict[str, str]:
        return {"INITIAL_NO_AUTH_ACTION_COUNT": str(_SETUP_ACTIONS), "MOTO_ALLOW_NONEXISTENT_REGION": "true"}

    @property
    def endpoint_url(self) -> str:
        # Over TLS the name the certificate gives.
        return f"https://localhost:{self.ports['port']}" if self.pki else f"http://{LOOPBACK}:{self.ports['port']}"

    def _probe(self) -> None:
        url = f"{self.endpoint_url}/moto-api/"
        with urllib.request.urlopen(url, timeout=2, context=self._ssl_context()) as r:  # noqa: S310 - loopback
            if r.status != 200:
                raise ValueError(f"moto-api answered {r.status}")
        if not self._creds_path.exists():
            self._create_key()

    def _create_key(self) -> None:
        import boto3  # moto depends on it

        iam = boto3.client("iam", endpoint_url=self.endpoint_url, region_name=REGION,
                           aws_access_key_id="setup", aws_secret_access_key="setup",  # unchecked yet
                           verify=str(self.pki.ca) if self.pki else None)
        try:
            iam.create_user(UserName="omnibus")
            key = iam.create_access_key(UserName="omnibus")["AccessKey"]
            iam.put_user_policy(UserName="omnibus", PolicyName="allow-all", PolicyDocument=json.dumps(_ALLOW_ALL))
        finally:
            iam.close()
        self._creds_path.write_text(json.dumps({"access_key_id": key["AccessKeyId"],
                                                "secret_access_key": key["SecretAccessKey"]}))

    @property
    def aws(self) -> AwsEndpoint:
        """Endpoint, region and the access key that the server accepts."""
        try:
            creds = json.loads(self._creds_path.read_text())
        except OSError as e:
            raise BrokerError(f"{self.name}: no access key yet (not started?): {e}") from None
        return AwsEndpoint(self.endpoint_url, REGION, creds["access_key_id"], creds["secret_access_key"])

    @property
    def url(self) -> str:
        if not self._creds_path.exists():  # stopped and removed: no key any more
            return f"awssqs:///?endpoint={self.endpoint_url}&region={REGION}"
        a = self.aws
        secret = urllib.parse.quote(a.secret_access_key, safe="")
        tls = f"&tls_ca={self.pki.ca}" if self.pki else ""
        return (f"awssqs://{urllib.parse.quote(a.access_key_id, safe='')}:{secret}@/?endpoint={a.endpoint}"
                f"&region={a.region}{tls}")

    @property
    def sns_url(self) -> str:
        return "awssns" + self.url[len("awssqs"):]

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        where = self.endpoint_url if self.ports else ""
        return f"<{type(self).__name__} {self.name} {state} {where}>"
