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
# One grep for all the checks (a boot should not fork one per value). A line is NAME<TAB>value; a
# value with a newline makes an extra line, which matches no pattern and is refused too.
tab=$(printf '\t')
name_re='[a-z]([-a-z0-9]{0,61}[a-z0-9])?'
bad=$(printf '%s\n' \
    "READY_PROJECT${tab}${READY_PROJECT}" "READY_TOPIC${tab}${READY_TOPIC}" "INSTANCE_NAME${tab}${INSTANCE_NAME}" \
    "ZONE${tab}${ZONE}" "MIG${tab}${MIG}" "BATCH_ID${tab}${BATCH_ID}" "ADDRESS${tab}${ADDRESS}" \
    "SSH_PORT${tab}${SSH_PORT}" "BOOT_ID${tab}${BOOT_ID}" \
    | grep -Evx \
        -e "READY_PROJECT${tab}[a-z][-a-z0-9]{4,28}[a-z0-9]" \
        -e "READY_TOPIC${tab}[A-Za-z][-A-Za-z0-9._~%+]{2,254}" \
        -e "INSTANCE_NAME${tab}${name_re}" \
        -e "ZONE${tab}[a-z]+-[a-z]+[0-9]+-[a-z]" \
        -e "MIG${tab}${name_re}" \
        -e "BATCH_ID${tab}[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?" \
        -e "ADDRESS${tab}[0-9.]{7,15}" \
        -e "SSH_PORT${tab}[0-9]{1,5}" \
        -e "BOOT_ID${tab}[A-Za-z0-9-]{1,64}" || true)
[ -z "$bad" ] || fail "unexpected value(s), refusing to publish: $(printf '%s' "$bad" | tr '\t\n' '= ')"
[ -r "$HOST_KEY_PUB" ] || fail "host key $HOST_KEY_PUB is not readable"

fingerprint=$(ssh-keygen -l -E sha256 -f "$HOST_KEY_PUB" | awk '{print $2}')
printf '%s\n' "$fingerprint" | grep -Eqx 'SHA256:[A-Za-z0-9+/]{43}' || fail "unexpected host key fingerprint: '$fingerprint'"

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
