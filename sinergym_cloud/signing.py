"""Keys the control plane derives from its deployment secret, and the signatures made with them.

Every VM runs with the trainer's service account, which may publish on the completions topic and
write under every batch prefix of the results bucket: IAM cannot say which experiment a VM serves.
So the control plane holds one deployment secret (a file on the local cloud, a Secret Manager
version on Google Cloud, readable by dispatch and cleanup only) and derives from it, with HMAC:

- a **completion key** per boot, from a fresh random nonce dispatch draws when it claims the
  boot. Dispatch hands the key to the trainer over the verified SSH session (in the TrainerSpec);
  the record keeps only the nonce and the key's SHA-256. Cleanup derives the key again from the
  nonce and accepts a Completion only if its ``signature`` attribute is the HMAC of the message
  body with it. A neighbour VM never sees the key, and cannot compute it without the secret.
- a **checkpoint key** per experiment (batch id and experiment name), handed to the trainer the
  same way: a checkpoint's ``meta.json`` is trusted only with its HMAC, so a checkpoint planted by
  another VM under this experiment's prefix is refused rather than unpickled.

The secret never reaches a VM, a message, a record or the bucket; what the trainer gets are keys
bound to its own boot and experiment.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets

from sinergym_cloud.config import Settings

SIGNATURE_ATTRIBUTE = "signature"  # the Pub/Sub message attribute that carries a Completion's HMAC
_VERSION = "v1="


class NoSecret(RuntimeError):
    """The deployment secret is not configured: nothing can be signed or verified."""


@functools.cache
def deployment_secret(settings: Settings) -> bytes:
    """From SINERGYM_CONTROL_SECRET_FILE, or the Secret Manager version SINERGYM_CONTROL_SECRET."""
    if settings.control_secret_file:
        with open(settings.control_secret_file, "rb") as f:
            value = f.read().strip()
    elif settings.control_secret:
        from google.cloud import secretmanager

        client = secretmanager.SecretManagerServiceClient()
        value = client.access_secret_version(name=settings.control_secret, timeout=20).payload.data.strip()
    else:
        raise NoSecret("no deployment secret: set SINERGYM_CONTROL_SECRET_FILE or SINERGYM_CONTROL_SECRET")
    if len(value) < 32:
        raise NoSecret("the deployment secret is shorter than 32 bytes")
    return value


def new_nonce() -> str:
    return secrets.token_hex(16)


def _derive(secret: bytes, *parts: str) -> str:
    return hmac.new(secret, "\x1f".join(parts).encode(), hashlib.sha256).hexdigest()


def completion_key(secret: bytes, batch_id: str, index: int, boot_id: str, nonce: str) -> str:
    """The key one boot of one experiment signs its Completion with (hex)."""
    return _derive(secret, "completion", batch_id, str(index), boot_id, nonce)


def checkpoint_key(secret: bytes, batch_id: str, experiment_name: str) -> str:
    """The key an experiment's checkpoints are signed with (hex); the same on every boot."""
    return _derive(secret, "checkpoint", batch_id, experiment_name)


def key_hash(key: str) -> str:
    """What a record keeps of a key: enough to check it, nothing to sign with."""
    return hashlib.sha256(key.encode()).hexdigest()


def sign(key: str, data: bytes) -> str:
    return _VERSION + hmac.new(bytes.fromhex(key), data, hashlib.sha256).hexdigest()


def verify(key: str, data: bytes, signature: str | None) -> bool:
    """True if ``signature`` is ``sign(key, data)`` (constant time)."""
    if not signature or not signature.startswith(_VERSION):
        return False
    return hmac.compare_digest(sign(key, data), signature)
