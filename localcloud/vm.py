"""The init process of a local VM: what PID 1 and the startup script are on a Compute Engine VM.

The Compute emulator starts one of these per instance, in its own session, with the instance's
directory (its "disk") as argument. It:

- becomes a child subreaper, so every process started in the VM (sshd, SSH sessions, a detached
  trainer) stays its descendant and dies with the VM;
- generates the VM's own SSH host key on first boot, writes an sshd configuration bound to
  127.0.0.1 and runs a real OpenSSH ``sshd``;
- like the cloud startup script, publishes ``instance-ready`` through ``infra/vm/publish-ready.sh``
  (the very script the cloud VM runs), with the host-key fingerprint;
- on SIGTERM (instance deleted, or preempted) passes SIGTERM to every process of the VM, waits the
  shutdown grace period, kills what is left and exits.

It reports its progress to the emulator as lines on stdout: ``RUNNING``, ``GUEST-ATTRIBUTE
<namespace>/<key> <value>`` (what the guest agent writes to guest attributes), ``READY <port>`` or
``BOOT-FAILED <reason>``.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from localcloud import procs
from sinergym_cloud import names

PR_SET_CHILD_SUBREAPER = 36
REPO = Path(__file__).resolve().parent.parent
READY_SCRIPT = REPO / "infra" / "vm" / "publish-ready.sh"


def report(line: str) -> None:
    """Tell the emulator how the boot goes. The emulator may be gone: never die of that."""
    with contextlib.suppress(OSError):
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:  # pragma: no cover - Linux always allows it
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def sshd_binary() -> str:
    found = shutil.which("sshd") or ("/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else None)
    if not found:
        raise RuntimeError("sshd not found: install openssh-server")
    return found


def write_sshd_config(home: Path, spec: dict[str, Any]) -> Path:
    if os.geteuid() == 0:
        # sshd started as root insists on its privilege-separation directory (a tmpfs at /run).
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    key = home / "ssh_host_ed25519_key"
    if not key.exists():  # first boot of this disk
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", spec["name"], "-f", str(key)],
            check=True,
            stdin=subprocess.DEVNULL,
        )
    keys = [line.split(":", 1)[1] for line in spec.get("ssh_keys", []) if ":" in line]
    (home / "authorized_keys").write_text("".join(k.strip() + "\n" for k in keys))
    env = spec.get("session_env", {})
    setenv = " ".join(f"{k}={v}" for k, v in env.items())
    config = home / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {spec['ssh_port']}",
                "ListenAddress 127.0.0.1",
                f"HostKey {key}",
                f"PidFile {home / 'sshd.pid'}",
                f"AuthorizedKeysFile {home / 'authorized_keys'}",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PermitRootLogin prohibit-password",
                "StrictModes no",
                "UsePAM no",
                "X11Forwarding no",
                "AllowTcpForwarding no",
                "PrintMotd no",
                "PrintLastLog no",
                "LogLevel ERROR",
                "MaxStartups 100:30:200",
                f"SetEnv {setenv}" if setenv else "",
                "Subsystem sftp internal-sftp",
                "",
            ]
        )
    )
    return config


def wait_listening(port: int, timeout: float, process: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.01)
    return False


def startup_log(home: Path, line: str) -> None:
    """A line of the VM's startup log (``startup.log`` on its disk), as the cloud startup script tees
    its output there: the log shipper stores it as the boot's first log chunk."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with contextlib.suppress(OSError), (home / "startup.log").open("a") as f:
        f.write(f"{stamp} startup: {line}\n")


def publish_ready(home: Path, spec: dict[str, Any]) -> None:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "READY_PROJECT": spec["project"],
        "READY_TOPIC": spec["ready_topic"],
        "INSTANCE_NAME": spec["name"],
        "ZONE": spec["zone"],
        "MIG": spec["mig"],
        "BATCH_ID": spec["metadata"].get(names.META_BATCH_ID, ""),
        "ADDRESS": "127.0.0.1",
        "SSH_PORT": str(spec["ssh_port"]),
        "HOST_KEY_PUB": str(home / "ssh_host_ed25519_key.pub"),
        "BOOT_ID": spec["boot_id"],
        # REST, as the cloud VM's script publishes: the emulator itself (its gRPC front speaks gRPC only).
        "PUBSUB_API": f"http://{spec['env'].get('LOCALCLOUD_PUBSUB_REST_HOST') or spec['env']['PUBSUB_EMULATOR_HOST']}",
    }
    with (home / "startup.log").open("ab") as out:
        subprocess.run(
            ["sh", str(READY_SCRIPT)], env=env, check=True, stdin=subprocess.DEVNULL, stdout=out, stderr=out, timeout=60
        )


class Init:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.spec: dict[str, Any] = json.loads((home / "vm.json").read_text())

    def shutdown(self) -> None:
        """What a guest does on ACPI shutdown: SIGTERM to everything, a grace period, then SIGKILL."""
        grace = float(self.spec.get("shutdown_grace", 5.0))
        me = os.getpid()
        pids = procs.descendants(me)
        starts = {p: procs.start_time(p) for p in pids}
        for p in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(self._alive(p, starts) for p in pids):
            self.reap()
            time.sleep(0.05)
        for p in procs.descendants(me):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        self.reap()

    @staticmethod
    def _alive(pid: int, starts: dict[int, int | None]) -> bool:
        return procs.start_time(pid) == starts[pid] and not procs.is_zombie(pid)

    @staticmethod
    def reap() -> None:
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return

    def boot(self) -> None:
        spec = self.spec
        report("RUNNING")
        startup_log(self.home, f"instance {spec['name']} in {spec['zone']}, boot {spec['boot_id']}")
        delay = float(spec.get("boot_delay", 0))
        if delay > 0:
            time.sleep(delay)  # the simulated boot time, by request of the emulator's configuration
        if spec.get("fail_boot"):
            report("BOOT-FAILED simulated boot failure: the startup script never finished")
            return
        config = write_sshd_config(self.home, spec)
        sshd = subprocess.Popen(
            [sshd_binary(), "-D", "-e", "-f", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=open(self.home / "sshd.log", "ab"),  # noqa: SIM115 - owned by the child
            stderr=subprocess.STDOUT,
        )
        if not wait_listening(int(spec["ssh_port"]), 10.0, sshd):
            report(f"BOOT-FAILED sshd did not listen on port {spec['ssh_port']} (exit {sshd.poll()})")
            startup_log(self.home, f"sshd did not listen on port {spec['ssh_port']}")
            return
        startup_log(self.home, f"sshd listens on 127.0.0.1:{spec['ssh_port']}")
        # Like Google's guest agent: the host keys go to the guest attributes (namespace hostkeys),
        # where dispatch reads them through Compute, never from a message.
        for pub in sorted(self.home.glob("ssh_host_*_key.pub")):
            kind, blob = pub.read_text().split()[:2]
            report(f"GUEST-ATTRIBUTE hostkeys/{kind} {blob}")
        startup_log(self.home, "host keys published as guest attributes (hostkeys/)")
        try:
            publish_ready(self.home, spec)
        except (subprocess.SubprocessError, OSError) as exc:
            report(f"BOOT-FAILED publishing instance-ready failed: {exc}")
            startup_log(self.home, f"publishing instance-ready failed: {exc}")
            return
        report(f"READY {spec['ssh_port']}")

    def run(self) -> int:
        become_subreaper()
        signal.signal(signal.SIGTERM, _raise_shutdown)
        signal.signal(signal.SIGINT, _raise_shutdown)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        waited = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT}
        try:
            try:
                self.boot()
            except Shutdown:
                raise
            except Exception as exc:  # noqa: BLE001 - a broken boot must be reported, not crash init
                report(f"BOOT-FAILED {type(exc).__name__}: {exc}")
            # From here on signals are taken synchronously: a SIGTERM that arrives now stays pending.
            signal.pthread_sigmask(signal.SIG_BLOCK, waited)
        except Shutdown:
            self.shutdown()
            return 0
        while True:
            info = signal.sigtimedwait(waited, 5.0)
            self.reap()  # orphans adopted as subreaper
            if info is not None and info.si_signo != signal.SIGCHLD:
                break
        self.shutdown()
        return 0


class Shutdown(Exception):
    """SIGTERM arrived while the VM was still booting."""


def _raise_shutdown(signum: int, frame: object) -> None:
    raise Shutdown


def main() -> int:
    procs.lower_priority(procs.VM_NICE)
    return Init(Path(sys.argv[1])).run()


if __name__ == "__main__":
    sys.exit(main())
