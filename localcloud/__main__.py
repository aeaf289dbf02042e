"""``python -m localcloud up|down|status|env|alerts``: manage the local cloud."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from localcloud.cloud import LocalCloud, StartupError


def main(argv: list[str] | None = None) -> int:  # noqa: PLR0911, PLR0912 - one branch and exit code per subcommand
    parser = argparse.ArgumentParser(
        prog="localcloud",
        description="The local cloud: Pub/Sub, Cloud Storage, Compute Engine (real local VMs with sshd), "
        "Cloud Monitoring, MLflow and the three functions, all on 127.0.0.1.",
    )
    parser.add_argument("--dir", type=Path, default=None, help="state directory (default .local, or $LOCALCLOUD_DIR)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start the local cloud (no-op if it is running) and write <dir>/env")
    sub.add_parser("down", help="stop every process the local cloud started")
    sub.add_parser("status", help="which services run")
    sub.add_parser("env", help="print the shell-sourceable environment")
    sub.add_parser("wipe", help="stop and delete all local state (buckets, MLflow runs, logs)")
    alerts = sub.add_parser("alerts", help="print the alerts delivered so far")
    alerts.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    cloud = LocalCloud(args.dir)
    if args.command == "up":
        try:
            cloud.up(say=lambda s: print(f"localcloud: {s}", file=sys.stderr))
        except StartupError as exc:
            print(f"localcloud: {exc}", file=sys.stderr)
            return 1
        print(f"localcloud: environment written to {cloud.env_file}; use it with:  . {cloud.env_file}", file=sys.stderr)
        return 0
    if args.command == "down":
        stopped = cloud.down()
        print(f"localcloud: stopped {', '.join(stopped) if stopped else 'nothing (not running)'}", file=sys.stderr)
        return 0
    if args.command == "wipe":
        cloud.wipe()
        print(f"localcloud: stopped and removed {cloud.dir}", file=sys.stderr)
        return 0
    if args.command == "status":
        running = cloud.running()
        if not running:
            print("local cloud: not running")
            return 3
        for name, alive in running.items():
            print(f"{name:12} {'running' if alive else 'DEAD'}")
        return 0 if all(running.values()) else 1
    if args.command == "env":
        if not cloud.env_file.exists():
            print("localcloud: not running (make local-up)", file=sys.stderr)
            return 3
        print(cloud.env_file.read_text(), end="")
        return 0
    if args.command == "alerts":
        path = cloud.dir / "monitoring" / "alerts.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        for line in lines:
            incident = json.loads(line)["incident"]
            if args.json:
                print(line)
            else:
                subject = incident["documentation"]["subject"] or incident["policy_name"]
                if incident.get("state") == "closed":
                    print(f"[{incident['severity']}] closed: {subject}")
                    continue
                print(f"[{incident['severity']}] {subject}\n    {incident['documentation']['content']}")
                for link in incident["documentation"].get("links", []):
                    print(f"    link: {link['display_name']}: {link['url']}")
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
