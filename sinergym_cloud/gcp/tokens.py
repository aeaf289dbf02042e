"""Each VM's Cloud Storage credential: a token confined to its own experiment's objects.

Every VM runs as the trainer's service account, which holds no Cloud Storage role at all: a VM
reaches the bucket only through a token dispatch makes for its experiment, a **Credential Access
Boundary** downscoping of dispatch's own credential (google-auth's ``downscoped.Credentials``, a
token exchange with Google's Security Token Service). The boundary leaves, on the results bucket,
``roles/storage.objectUser`` on the objects whose names start with the experiment's prefixes (its
own ``BATCH/EXPERIMENT/``, and its TensorBoard folder's ``FOLDER/EXPERIMENT/``) and
``roles/storage.objectViewer`` on what it must only read (an initial model of another experiment).
Anything else, another experiment's outputs, the batch's records, the control plane's state, is
refused by Cloud Storage itself with 403, whatever the trainer's code does.

Dispatch hands the token over the verified SSH session (the VM agent writes it to a 0600 file); the
trainer's storage client reads it from that file (``file_credentials``) and reads it again when it
expires. A token lives as long as the credential it came from (about an hour); at half its life
the sweeper asks dispatch for a fresh one (``needs_refresh``).

On the local cloud the STS is the Cloud Storage front's ``/v1/token``, which mints tokens the
front then holds to their boundary (localcloud/identity.py).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FRESH_TOKEN_WAIT_SECONDS = 120.0  # how long a VM waits for a fresh token when its own is about to expire
LOCAL_STS_PATH = "/v1/token"


def boundary_rules(bucket: str, writable: Iterable[str], readable: Iterable[str] = ()) -> list[dict[str, Any]]:
    """The Credential Access Boundary's rules, in the STS API's JSON shape: read and write under each
    ``writable`` prefix, read-only under each ``readable`` one, of ``bucket``."""
    resource = f"//storage.googleapis.com/projects/_/buckets/{bucket}"

    def rule(role: str, prefixes: Iterable[str]) -> dict[str, Any] | None:
        names = [f"projects/_/buckets/{bucket}/objects/{p}" for p in sorted(set(prefixes)) if p]
        if not names:
            return None
        expression = " || ".join(f"resource.name.startsWith('{n}')" for n in names)
        return {
            "availableResource": resource,
            "availablePermissions": [f"inRole:{role}"],
            "availabilityCondition": {"expression": expression},
        }

    rules = [rule("roles/storage.objectUser", writable), rule("roles/storage.objectViewer", readable)]
    return [r for r in rules if r is not None]


def downscope(source: Any, rules: list[dict[str, Any]], sts_endpoint: str | None = None) -> tuple[str, dt.datetime]:
    """A token of ``source`` (google-auth credentials) restricted to ``rules``, and its expiry (UTC).
    ``sts_endpoint``: the local cloud's STS (None: Google's)."""
    import google.auth.transport.requests
    from google.auth import downscoped
    from google.oauth2 import sts

    boundary = downscoped.CredentialAccessBoundary(
        rules=[
            downscoped.AccessBoundaryRule(
                available_resource=r["availableResource"],
                available_permissions=r["availablePermissions"],
                availability_condition=downscoped.AvailabilityCondition(
                    expression=r["availabilityCondition"]["expression"]
                ),
            )
            for r in rules
        ]
    )
    credentials = downscoped.Credentials(source_credentials=source, credential_access_boundary=boundary)
    if sts_endpoint:
        # google-auth names Google's STS from the universe domain; the local cloud's is elsewhere.
        credentials._sts_client = sts.Client(sts_endpoint)
    credentials.refresh(google.auth.transport.requests.Request())
    expiry = credentials.expiry or (dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(hours=1))
    return str(credentials.token), expiry.replace(tzinfo=dt.UTC)


def write_token_file(path: Path, token: str, expiry: dt.datetime) -> None:
    """Store a token for the trainer (0600, replaced whole), as the VM agent does."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"token": token, "expires_at": expiry.timestamp()}, f)
    tmp.replace(path)


def read_token_file(path: Path) -> tuple[str, dt.datetime]:
    data = json.loads(path.read_text())
    return str(data["token"]), dt.datetime.fromtimestamp(float(data["expires_at"]), dt.UTC)


def file_credentials(path: str) -> Any:
    """Credentials that use the token in ``path`` and read the file again when it expires (dispatch
    writes a fresh one there before)."""
    from google.auth import exceptions
    from google.oauth2.credentials import Credentials

    def refresh(request: Any, scopes: Any) -> tuple[str, dt.datetime]:
        # google-auth wants a token with more than REFRESH_THRESHOLD left: wait a while for dispatch's
        # fresh one (it comes at half the token's life; this is for a refresh that is late).
        deadline = time.monotonic() + FRESH_TOKEN_WAIT_SECONDS
        while True:
            token, expiry = read_token_file(Path(path))
            if expiry - dt.datetime.now(dt.UTC) > dt.timedelta(minutes=4):
                return token, expiry.astimezone(dt.UTC).replace(tzinfo=None)  # google-auth keeps naive UTC
            if time.monotonic() > deadline:
                raise exceptions.RefreshError(f"the storage token in {path} expires at {expiry.isoformat()}")
            time.sleep(1.0)

    token, expiry = read_token_file(Path(path))
    return Credentials(token=token, expiry=expiry.astimezone(dt.UTC).replace(tzinfo=None), refresh_handler=refresh)


def needs_refresh(issued_at: float | None, expires_at: float | None, now: float) -> bool:
    """Whether a VM's token is past half its life (the sweeper then asks dispatch for a fresh one)."""
    if issued_at is None or expires_at is None:
        return False
    return now >= issued_at + (expires_at - issued_at) / 2


def experiment_rules(
    results_bucket: str, prefix: str, tensorboard: str | None = None, readable: Iterable[str] = ()
) -> list[dict[str, Any]]:
    """The boundary of one experiment's token: read and write under its own ``prefix`` of the results
    bucket and under its gs:// TensorBoard folder (``tensorboard``, wherever it is), read only each of
    ``readable`` (``gs://BUCKET/PREFIX``: an initial model's folder). At most Google's ten rules."""
    writable: dict[str, list[str]] = {results_bucket: [prefix]}
    reads: dict[str, list[str]] = {}
    for uri, into in [(tensorboard, writable), *((r, reads) for r in readable)]:
        if uri and uri.startswith("gs://"):
            bucket, _, path = uri.removeprefix("gs://").partition("/")
            into.setdefault(bucket, []).append(path)
    rules: list[dict[str, Any]] = []
    for bucket in dict.fromkeys([*writable, *reads]):
        rules += boundary_rules(bucket, writable.get(bucket, []), reads.get(bucket, []))
    if len(rules) > 10:
        raise ValueError(f"an experiment's token needs {len(rules)} boundary rules; Google allows 10")
    return rules


def rules_for_experiment(results_bucket: str, batch_id: str, name: str, experiment: Any) -> list[dict[str, Any]]:
    """The boundary of experiment ``name``'s token: its prefix, its gs:// TensorBoard folder, and
    its initial model's folder read-only (``experiment``: a contracts.Experiment)."""
    from sinergym_cloud import contracts, names

    tensorboard = experiment.tensorboard
    folder = (
        contracts.run_folder(tensorboard, batch_id, name) if tensorboard and tensorboard.startswith("gs://") else None
    )
    readable = []
    model = experiment.initial_model
    if model is not None and model.batch_id and model.experiment:
        readable.append(f"gs://{results_bucket}/{names.results_prefix(model.batch_id, model.experiment)}")
    elif model is not None and model.uri and model.uri.startswith("gs://"):
        readable.append(model.uri.rsplit("/", 1)[0] + "/")
    return experiment_rules(results_bucket, names.results_prefix(batch_id, name), folder, readable)


def source_credentials(storage_endpoint: str | None, local_token: str | None) -> Any:
    """What an experiment's token is downscoped from: dispatch's own credential (the local cloud's
    token for its account, or the function's default credentials on Google Cloud)."""
    if storage_endpoint:
        from google.oauth2.credentials import Credentials

        # google-auth refreshes the source before each exchange: the local credential does not change.
        value = local_token or "none"

        def same(request: Any, scopes: Any) -> tuple[str, dt.datetime]:
            return value, dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(hours=1)

        return Credentials(token=value, refresh_handler=same)
    import google.auth

    credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
    return credentials


def mint(storage_endpoint: str | None, local_token: str | None, rules: list[dict[str, Any]]) -> tuple[str, dt.datetime]:
    """A token confined to ``rules`` (``experiment_rules``), from Google's STS or the local cloud's."""
    sts_endpoint = f"{storage_endpoint.rstrip('/')}{LOCAL_STS_PATH}" if storage_endpoint else None
    return downscope(source_credentials(storage_endpoint, local_token), rules, sts_endpoint)
