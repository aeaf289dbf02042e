"""What each service account used against what it is granted, from the local cloud's IAM audit trail.

Every emulator front records each permission check (``iam/audit.jsonl`` in the local cloud's
folder, localcloud/identity.py). This reads a trail and the policy infra/terraform/*.tf grants and
makes the table docs/iam.md holds: per account, each granted permission, whether the calls used
it, and those used without a grant (which must be none). A granted permission no call used is
listed as removable, for a human to judge: a batch that met no stockout never asked for a failover
group, so its grant is not proof of excess.

    python -m localcloud.iam_audit [LOCALCLOUD_DIR] [--markdown]

Calls a VM made with its experiment's token (dispatch's credential, downscoped) are its own row,
``trainer (experiment token)``: their permissions are the boundary's, not the trainer account's.
The client library's own background read of a bucket's metadata (google-cloud-storage's
``storage.buckets.get``, which it caches a fallback for on 403) is listed apart: refused on Google
Cloud as here, and harmless.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localcloud import identity
from localcloud.iam import Policy

EXPERIMENT_TOKEN = "trainer (experiment token)"  # noqa: S105 - a row's name, not a secret
# Refused and harmless: google-cloud-storage's background fetch of bucket metadata (see above).
LIBRARY_PROBES = {"storage.buckets.get"}
NOT_AUDITED = {identity.ADMIN, identity.PUBSUB_AGENT, ""}


@dataclass
class Account:
    used: set[str] = field(default_factory=set)
    refused: set[str] = field(default_factory=set)  # used and not granted: a missing role
    probes: set[str] = field(default_factory=set)  # the client library's own refused probes
    granted: set[str] = field(default_factory=set)

    @property
    def removable(self) -> set[str]:
        return self.granted - self.used


def read_trail(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def accounts(trail: Iterable[dict[str, Any]], policy: Policy) -> dict[str, Account]:
    """Each account's used, refused and granted permissions."""
    out: dict[str, Account] = defaultdict(Account)
    for entry in trail:
        member = entry.get("member", "")
        if member in NOT_AUDITED:
            continue
        name = EXPERIMENT_TOKEN if entry.get("downscoped") else member
        account = out[name]
        permission = entry["permission"]
        if entry["allowed"]:
            account.used.add(permission)
        elif permission in LIBRARY_PROBES:
            account.probes.add(permission)
        else:
            account.refused.add(permission)
    for member in policy.members():
        if member not in NOT_AUDITED:
            out[member].granted = set(policy.granted(member))
    return dict(sorted(out.items()))


def markdown(table: dict[str, Account]) -> str:
    """The table docs/iam.md shows."""
    lines = ["| Account | Permission | Used by the audited batch |", "|---|---|---|"]
    for name, account in table.items():
        for permission in sorted(account.granted | account.used):
            used = "yes" if permission in account.used else "no (removable?)"
            lines.append(f"| {name} | `{permission}` | {used} |")
        for permission in sorted(account.refused):
            lines.append(f"| {name} | `{permission}` | **used, not granted** |")
    return "\n".join(lines) + "\n"


def report(table: dict[str, Account]) -> str:
    """The plain-text report: per account, what it used of its grant, what it lacked, what it never used."""
    out = []
    for name, account in table.items():
        out.append(f"{name}: used {len(account.used)} of {len(account.granted)} granted permission(s)")
        for permission in sorted(account.used):
            out.append(f"  used      {permission}")
        for permission in sorted(account.refused):
            out.append(f"  MISSING   {permission} (used, not granted)")
        for permission in sorted(account.removable):
            out.append(f"  removable {permission} (granted, not used)")
        for permission in sorted(account.probes):
            out.append(f"  probe     {permission} (the client library's, refused and harmless)")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localcloud.iam_audit", description=__doc__.splitlines()[0])
    parser.add_argument("dir", nargs="?", default=os.environ.get("LOCALCLOUD_DIR", ".local"),
                        help="the local cloud's folder (default: $LOCALCLOUD_DIR or .local)")  # fmt: skip
    parser.add_argument("--markdown", action="store_true", help="print docs/iam.md's table instead")
    args = parser.parse_args(argv)
    state = Path(args.dir)
    trail = read_trail(identity.iam_dir(state) / "audit.jsonl")
    if not trail:
        print(f"no audit trail in {identity.iam_dir(state)}: run a batch on the local cloud first", file=sys.stderr)
        return 1
    table = accounts(trail, identity.read_policy(state))
    print(markdown(table) if args.markdown else report(table))
    return 1 if any(a.refused for a in table.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
