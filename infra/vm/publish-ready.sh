#!/bin/sh
# Publish this VM's instance-ready message (the InstanceReady contract, schema version 1).
#
# Run at the end of boot, once sshd listens and the trainer runtime is up: by the cloud startup
# script (infra/vm/startup.sh) on Compute Engine, and by every local VM of the local cloud, so the
# same script is exercised by the tests. POSIX sh, curl, base64 and ssh-keygen only (all on COS).
#
# Inputs (environment):
#   READY_PROJECT READY_TOPIC INSTANCE_NAME ZONE MIG BATCH_ID ADDRESS SSH_PORT HOST_KEY_PUB BOOT_ID
#   PUBSUB_API    Pub/Sub REST endpoint (default https://pubsub.googleapis.com; the emulator locally)
#   ACCESS_TOKEN  OAuth token; when unset and PUBSUB_API is Google's, it is read from the metadata server
set -eu

PUBSUB_API=${PUBSUB_API:-https://pubsub.googleapis.com}

fail() { echo "publish-ready: $*" >&2; exit 1; }

# Every value goes into JSON unquoted by any encoder: refuse anything outside its expected shape.
check() { # name value extended-regex
    printf '%s' "$2" | grep -Eqx "$3" || fail "$1 has an unexpected value: '$2'"
}
name_re='[a-z]([-a-z0-9]{0,61}[a-z0-9])?'
check READY_PROJECT "$READY_PROJECT" '[a-z][-a-z0-9]{4,28}[a-z0-9]'
check READY_TOPIC "$READY_TOPIC" '[A-Za-z][-A-Za-z0-9._~%+]{2,254}'
check INSTANCE_NAME "$INSTANCE_NAME" "$name_re"
check ZONE "$ZONE" '[a-z]+-[a-z]+[0-9]+-[a-z]'
check MIG "$MIG" "$name_re"
check BATCH_ID "$BATCH_ID" '[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?'
check ADDRESS "$ADDRESS" '[0-9.]{7,15}'
check SSH_PORT "$SSH_PORT" '[0-9]{1,5}'
check BOOT_ID "$BOOT_ID" '[A-Za-z0-9-]{1,64}'
[ -r "$HOST_KEY_PUB" ] || fail "host key $HOST_KEY_PUB is not readable"

fingerprint=$(ssh-keygen -l -E sha256 -f "$HOST_KEY_PUB" | awk '{print $2}')
check fingerprint "$fingerprint" 'SHA256:[A-Za-z0-9+/]{43}'

message=$(printf '{"schema_version":1,"instance":"%s","zone":"%s","mig":"%s","batch_id":"%s","address":"%s","ssh_port":%s,"host_key_fingerprint":"%s","boot_id":"%s"}' \
    "$INSTANCE_NAME" "$ZONE" "$MIG" "$BATCH_ID" "$ADDRESS" "$SSH_PORT" "$fingerprint" "$BOOT_ID")
data=$(printf '%s' "$message" | base64 | tr -d '\n')
body=$(printf '{"messages":[{"data":"%s","attributes":{"instance":"%s","batch_id":"%s","schema_version":"1"}}]}' \
    "$data" "$INSTANCE_NAME" "$BATCH_ID")

if [ -z "${ACCESS_TOKEN:-}" ] && [ "$PUBSUB_API" = "https://pubsub.googleapis.com" ]; then
    ACCESS_TOKEN=$(curl -fsS --max-time 10 -H 'Metadata-Flavor: Google' \
        'http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token' \
        | sed -n 's/.*"access_token"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p')
    [ -n "$ACCESS_TOKEN" ] || fail "no access token from the metadata server"
fi

# The token goes to curl on stdin, never on its command line (where any local user could read it).
if [ -n "${ACCESS_TOKEN:-}" ]; then
    printf 'header = "Authorization: Bearer %s"\n' "$ACCESS_TOKEN"
fi | curl -fsS --retry 6 --retry-connrefused --retry-max-time 60 --max-time 15 -X POST \
    -H 'Content-Type: application/json' --data "$body" --config - \
    "$PUBSUB_API/v1/projects/$READY_PROJECT/topics/$READY_TOPIC:publish" >/dev/null
echo "publish-ready: published instance-ready for $INSTANCE_NAME (boot $BOOT_ID)"
