#!/bin/bash
# Startup script of a trainer VM (Container-Optimized OS), run by the guest agent at every boot.
#
# 1. reads the instance's identity and settings from the metadata server;
# 2. pulls the trainer image and starts it as the long-lived container `trainer` (tini as PID 1,
#    so processes started later by `docker exec` are reaped), with the VM's home mounted;
# 3. publishes instance-ready (publish-ready.sh, appended below by Terraform) with the host-key
#    fingerprint, so that dispatch can SSH in, verify the host, and start the experiment with
#    `docker exec -i trainer sinergym-vm start-trainer`.
# konlet's create-with-container is deprecated: the container is started here instead.
# No secret is read or written here: the VM's service account authenticates every call (the trainer
# reads the W&B key, if an experiment logs to W&B, from Secret Manager into its own process only).
set -euo pipefail

# The startup log is kept on the VM's home disk too: the VM agent's log shipper stores it as the first
# chunk of each experiment's log (gs://RESULTS/BATCH/EXPERIMENT/logs/), which outlives the VM.
HOME_DIR=/var/lib/sinergym
mkdir -p "$HOME_DIR"
exec > >(tee -a "$HOME_DIR/startup.log") 2>&1
echo "startup: $(date -u +%Y-%m-%dT%H:%M:%SZ) booting"

md() { curl -fsS --retry 5 --max-time 10 -H 'Metadata-Flavor: Google' "http://metadata.google.internal/computeMetadata/v1/$1"; }
attr() { md "instance/attributes/$1"; }

PROJECT=$(md project/project-id)
INSTANCE_NAME=$(md instance/name)
ZONE=$(md instance/zone | awk -F/ '{print $NF}')
ADDRESS=$(md instance/network-interfaces/0/ip)
MIG=$(attr created-by | awk -F/ '{print $NF}')
BATCH_ID=$(attr sinergym-batch-id)
IMAGE=$(attr sinergym-trainer-image)
READY_TOPIC=$(attr sinergym-ready-topic)
MLFLOW_TRACKING_URI=$(attr sinergym-mlflow-uri)
WANDB_SECRET=$(attr sinergym-wandb-secret || true)   # a secret's name; the trainer reads the value itself
BOOT_ID="$(md instance/id)-$(cut -c1-8 /proc/sys/kernel/random/boot_id)"
export PROJECT INSTANCE_NAME ZONE ADDRESS MIG BATCH_ID IMAGE READY_TOPIC MLFLOW_TRACKING_URI BOOT_ID

chmod 0777 "$HOME_DIR"   # written by the container's non-root user
# The VM agent tells dispatch which boot it is on (compared with the instance-ready message's).
printf '%s\n' "$BOOT_ID" > "$HOME_DIR/boot-id"

registry=${IMAGE%%/*}
docker-credential-gcr configure-docker --registries="$registry" >/dev/null
for attempt in 1 2 3 4 5; do
    docker pull "$IMAGE" && break
    echo "startup: pull of $IMAGE failed (attempt $attempt)" >&2
    sleep $((attempt * 5))
done
docker rm -f trainer >/dev/null 2>&1 || true
docker run -d --name trainer --init --restart=no \
    --log-driver=gcplogs \
    -v "$HOME_DIR:$HOME_DIR" \
    -e GOOGLE_CLOUD_PROJECT="$PROJECT" \
    -e MLFLOW_TRACKING_URI="$MLFLOW_TRACKING_URI" \
    -e SINERGYM_VM_HOME="$HOME_DIR" \
    -e SINERGYM_WANDB_SECRET="$WANDB_SECRET" \
    "$IMAGE" sleep infinity >/dev/null
docker exec trainer sinergym-vm status >/dev/null   # the runtime answers

# The trainer runs as the VM's SSH user `sinergym` through docker: it needs the docker group.
getent group docker >/dev/null && usermod -aG docker sinergym 2>/dev/null || true

READY_PROJECT=$PROJECT
HOST_KEY_PUB=/etc/ssh/ssh_host_ed25519_key.pub
SSH_PORT=22
export READY_PROJECT HOST_KEY_PUB SSH_PORT
