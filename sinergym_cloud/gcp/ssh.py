"""SSH to a VM with paramiko, trusting only the host keys Compute Engine holds for it.

Dispatch reads the VM's host keys from its guest attributes (``hostkeys/``, written by the guest
agent at boot) through Compute, never from a message; a connection whose server key is not one of
them is refused before authentication. The private key comes from
configuration (a file on the local cloud, Secret Manager on Google Cloud), never from a message.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import logging
import shlex
import socket
from collections.abc import Sequence
from dataclasses import dataclass

import paramiko

from sinergym_cloud.config import Settings
from sinergym_cloud.errors import SinergymError

log = logging.getLogger(__name__)

TRANSIENT = (
    paramiko.ssh_exception.NoValidConnectionsError,
    paramiko.ssh_exception.SSHException,
    socket.timeout,
    TimeoutError,
    ConnectionError,
    EOFError,
    OSError,
)


class HostKeyMismatch(SinergymError, paramiko.ssh_exception.SSHException):
    """The server's host key is not the one the VM published: refuse to talk to it."""


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's SHA256 fingerprint of a public key (``ssh-keygen -l -E sha256``)."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def public_key_fingerprint(openssh_line: str) -> str:
    """The fingerprint of a public key in OpenSSH's one-line format (``ssh-ed25519 AAAA... comment``)."""
    digest = hashlib.sha256(base64.b64decode(openssh_line.split()[1])).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class _Verify(paramiko.MissingHostKeyPolicy):
    def __init__(self, expected: str | Sequence[str]) -> None:
        self.expected = (expected,) if isinstance(expected, str) else tuple(expected)

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        actual = fingerprint(key)
        if actual not in self.expected:
            published = ", ".join(self.expected)
            raise HostKeyMismatch(f"host key of {hostname} is {actual}, but the VM published {published}")


def parse_private_key(text: str) -> paramiko.PKey:
    errors = []
    for kind in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return kind.from_private_key(io.StringIO(text))
        except (paramiko.SSHException, ValueError) as exc:
            errors.append(f"{kind.__name__}: {exc}")
    raise ValueError("the SSH private key could not be read (" + "; ".join(errors) + ")")


@functools.cache
def private_key(settings: Settings) -> paramiko.PKey:
    """The dispatch key: from SINERGYM_SSH_KEY_FILE, or the Secret Manager version SINERGYM_SSH_KEY_SECRET."""
    if settings.ssh_key_file:
        with open(settings.ssh_key_file) as f:
            return parse_private_key(f.read())
    if settings.ssh_key_secret:
        from google.cloud import secretmanager

        client = secretmanager.SecretManagerServiceClient()
        secret = client.access_secret_version(name=settings.ssh_key_secret, timeout=20)
        return parse_private_key(secret.payload.data.decode())
    raise RuntimeError("no SSH key configured: set SINERGYM_SSH_KEY_FILE or SINERGYM_SSH_KEY_SECRET")


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str


# A hostile or broken endpoint (accepts, then never speaks) costs seconds, not minutes.
CONNECT_TIMEOUT = 5.0


def connect(
    host: str, port: int, *, user: str, key: paramiko.PKey, expected: str | Sequence[str]
) -> paramiko.SSHClient:
    """An authenticated SSH connection to a server whose host key is one of ``expected``
    (fingerprints); refused before authentication otherwise. The caller closes it."""
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(_Verify(expected))
    try:
        client.connect(
            host,
            port=port,
            username=user,
            pkey=key,
            allow_agent=False,
            look_for_keys=False,
            timeout=CONNECT_TIMEOUT,
            banner_timeout=CONNECT_TIMEOUT,
            auth_timeout=CONNECT_TIMEOUT,
            channel_timeout=CONNECT_TIMEOUT,
        )
    except BaseException:
        client.close()
        raise
    return client


def execute(client: paramiko.SSHClient, argv: Sequence[str], stdin: bytes = b"", timeout: float = 60.0) -> Result:
    """Run one command (argv, quoted here) on a connection, feeding ``stdin``; wait for its exit code."""
    chan_in, chan_out, chan_err = client.exec_command(shlex.join(argv), timeout=timeout)
    if stdin:
        chan_in.write(stdin)
    chan_in.channel.shutdown_write()
    out = chan_out.read().decode(errors="replace")
    err = chan_err.read().decode(errors="replace")
    code = chan_out.channel.recv_exit_status()
    return Result(code, out, err)


class Conversation:
    """One command spoken to in two turns over an open connection: read the first line it answers,
    then feed it ``stdin`` (or nothing) and wait for the rest and its exit code. Dispatch asks the VM
    agent who it is and, on the same command, hands it the spec: one process start on the VM, not two."""

    def __init__(self, client: paramiko.SSHClient, argv: Sequence[str], timeout: float = 60.0) -> None:
        transport = client.get_transport()
        if transport is None:
            raise paramiko.SSHException("the connection is closed")
        self.channel = transport.open_session(timeout=timeout)
        self.channel.settimeout(timeout)
        self.channel.exec_command(shlex.join(argv))
        self.stdout = self.channel.makefile("rb")

    def first_line(self, limit: int = 64 * 1024) -> str:
        """The command's first line of output ("" if it ended without one)."""
        return bytes(self.stdout.readline(limit)).decode(errors="replace").strip()

    def finish(self, stdin: bytes = b"") -> Result:
        """Send ``stdin`` and end it; the rest of the output and the exit code."""
        if stdin:
            self.channel.sendall(stdin)
        self.channel.shutdown_write()
        out = bytes(self.stdout.read()).decode(errors="replace")
        err = bytes(self.channel.makefile_stderr("rb").read()).decode(errors="replace")
        return Result(self.channel.recv_exit_status(), out, err)

    def close(self) -> None:
        self.channel.close()


def run(
    host: str,
    port: int,
    *,
    user: str,
    key: paramiko.PKey,
    expected_fingerprint: str | Sequence[str],
    argv: Sequence[str],
    stdin: bytes = b"",
    timeout: float = 60.0,
) -> Result:
    """Run one command on the VM over a fresh connection (see ``connect`` and ``execute``)."""
    client = connect(host, port, user=user, key=key, expected=expected_fingerprint)
    try:
        return execute(client, argv, stdin, timeout)
    finally:
        client.close()
