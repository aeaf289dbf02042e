#!/usr/bin/env bash
# Make this checkout ready to run: a Python >= 3.12 virtualenv in .venv with the project installed,
# and the system programs the local cloud needs (OpenSSH's sshd, Java and the Pub/Sub emulator).
# Safe to run again: it only does what is missing. Used by `make demo`, `make test` and friends.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
EXTRAS=${EXTRAS:-local,trainer,report,viewer,dev}

say() { printf '\033[1mbootstrap:\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31mbootstrap: %s\033[0m\n' "$*" >&2; exit 1; }

is_312() { "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null; }

find_python() {
    local candidates=()
    [ -n "${PYTHON:-}" ] && candidates+=("$PYTHON")
    candidates+=(python3.13 python3.12 python3)
    if command -v pyenv >/dev/null 2>&1; then
        local root; root=$(pyenv root)
        for p in "$root"/versions/3.1[2-9]*/bin/python3 ; do [ -x "$p" ] && candidates+=("$p"); done
    fi
    for p in /usr/bin/python3.12 /usr/local/bin/python3.12; do candidates+=("$p"); done
    for c in "${candidates[@]}"; do
        local path
        path=$(command -v "$c" 2>/dev/null) || continue
        # pyenv shims answer for versions that are not selected: resolve through the interpreter itself.
        path=$("$path" -c 'import sys; print(sys.executable)' 2>/dev/null) || continue
        if is_312 "$path"; then echo "$path"; return 0; fi
    done
    return 1
}

ensure_venv() {
    if [ -x "$VENV/bin/python" ] && is_312 "$VENV/bin/python"; then return; fi
    local py
    py=$(find_python) || die "no Python >= 3.12 found. Install one (e.g. 'pyenv install 3.12', or apt-get install python3.12) or set PYTHON=/path/to/python3.12"
    say "creating $VENV with $py"
    rm -rf "$VENV"
    "$py" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
}

ensure_packages() {
    local stamp want
    want=$(cat pyproject.toml | sha256sum | cut -c1-16)-$EXTRAS
    stamp="$VENV/.installed"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return; fi
    say "installing the project with extras [$EXTRAS] into $VENV (the trainer extra brings torch: several GB, a few minutes)"
    "$VENV/bin/python" -m pip install --progress-bar off -e ".[$EXTRAS]"
    echo "$want" > "$stamp"
}

ensure_sshd() {
    if command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ]; then return; fi
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "installing openssh-server (the local cloud's VMs run a real sshd)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q openssh-server >/dev/null \
            || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q openssh-server >/dev/null; } \
            || die "apt-get could not install openssh-server"
    else
        die "sshd is missing. Install OpenSSH's server (Debian/Ubuntu: sudo apt-get install openssh-server); it is only run on 127.0.0.1 by the local cloud, never as a system service."
    fi
}

ensure_chromium() {
    # Only the report test needs it (a real headless browser opens the HTML report).
    command -v chromium >/dev/null 2>&1 && return
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "installing chromium (the report test opens the HTML report in a headless browser)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null \
            || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; } \
            || say "chromium could not be installed: the report's browser test will be skipped"
    else
        say "chromium is missing (Debian: sudo apt-get install chromium): the report's browser test will be skipped"
    fi
}

ensure_test_tools() {
    # checkov pins many libraries of its own: it gets a virtualenv of its own, beside .venv.
    [ -x .venv-tools/bin/checkov ] && return
    say "installing checkov into .venv-tools (the infra checks run it)"
    "$VENV/bin/python" -m venv .venv-tools
    .venv-tools/bin/python -m pip install --quiet --progress-bar off checkov \
        || say "checkov could not be installed: the infra test that runs it will be skipped"
}

ensure_pubsub_emulator() {
    command -v java >/dev/null 2>&1 || die "java is missing: the Pub/Sub emulator needs a Java 11+ runtime (Debian: apt-get install default-jre-headless)"
    "$VENV/bin/python" -c 'from localcloud.pubsub import find_emulator; find_emulator()' >/dev/null 2>&1 \
        || die "the Pub/Sub emulator was not found. Install google-cloud-cli with its emulator (gcloud components install pubsub-emulator, or apt-get install google-cloud-cli-pubsub-emulator), or set LOCALCLOUD_PUBSUB_EMULATOR=/path/to/cloud-pubsub-emulator"
}

ensure_venv
ensure_packages
if [ "${1:-}" != "--python-only" ]; then
    ensure_sshd
    ensure_pubsub_emulator
    if [ "${1:-}" = "--full" ]; then
        ensure_chromium
        ensure_test_tools
    fi
fi
exit 0
