"""SSH to a VM with paramiko, trusting only the host key the VM itself published.

The instance-ready message carries the SHA-256 fingerprint of the VM's host key; a connection
whose server key does not match it is refused before authentication. The private key comes from
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
    def __init__(self, expected: str) -> None:
        self.expected = expected

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        actual = fingerprint(key)
        if actual != self.expected:
            raise HostKeyMismatch(f"host key of {hostname} is {actual}, but the VM published {self.expected}")


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


def run(
    host: str,
    port: int,
    *,
    user: str,
    key: paramiko.PKey,
    expected_fingerprint: str,
    argv: Sequence[str],
    stdin: bytes = b"",
    timeout: float = 60.0,
) -> Result:
    """Run one command (argv, quoted here) on the VM, feeding ``stdin``; wait for its exit code."""
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(_Verify(expected_fingerprint))
    try:
        client.connect(
            host,
            port=port,
            username=user,
            pkey=key,
            allow_agent=False,
            look_for_keys=False,
            timeout=10,
            banner_timeout=10,
            auth_timeout=10,
        )
        command = shlex.join(argv)
        chan_in, chan_out, chan_err = client.exec_command(command, timeout=timeout)
        if stdin:
            chan_in.write(stdin)
        chan_in.channel.shutdown_write()
        out = chan_out.read().decode(errors="replace")
        err = chan_err.read().decode(errors="replace")
        code = chan_out.channel.recv_exit_status()
        return Result(code, out, err)
    finally:
        client.close()
